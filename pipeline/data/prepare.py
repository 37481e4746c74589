"""The data stage: source -> clean -> split -> tokenizer -> encode -> store (or reuse the stored result)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from tokenizers import Tokenizer

from pipeline.data.clean import clean_splits
from pipeline.data.encode import encode_table
from pipeline.data.sources import fingerprint_inputs, load_corpus
from pipeline.data.split import split_corpus
from pipeline.data.store import (
    StorePath,
    data_dir,
    is_complete,
    load_manifest,
    new_staging_dir,
    publish,
    remove_stale_staging,
    write_json,
)
from pipeline.data.tokenizer import PAD_TOKEN, UNK_TOKEN, piece_counter, tokenizer_digest, train_tokenizer
from schemas.config import JobConfig, TokenizerConfig
from schemas.features import SPLITS, Manifest, SplitInfo, encoded_features

log = logging.getLogger(__name__)

# Bump when the stored format or any stage's behaviour changes: old caches then stop matching.
PIPELINE_VERSION = "2"


@dataclass(frozen=True)
class PreparedData:
    path: StorePath  # a local Path, or a str URL when output_root is shared storage (s3://...)
    manifest: Manifest
    reused: bool


def cache_key(input_digest: str, cfg: JobConfig) -> str:
    """Content digest of the raw inputs + every data and tokenizer setting + the pipeline version."""
    data = cfg.data.model_dump(mode="json", exclude={"paths"})  # the content digest stands for the paths
    payload = {"pipeline": PIPELINE_VERSION, "inputs": input_digest, "data": data,
               "tokenizer": cfg.tokenizer.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _split_digest(table: pa.Table) -> str:
    h = hashlib.sha256()
    for col in ("input_ids", "label", "text"):
        for chunk in table.column(col).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(memoryview(buf))
    return h.hexdigest()


def _length_stats(n_tokens: np.ndarray, max_length: int) -> dict[str, float]:
    p = np.percentile(n_tokens, [50, 90, 95, 99]) if len(n_tokens) else [0, 0, 0, 0]
    return {"p50": float(p[0]), "p90": float(p[1]), "p95": float(p[2]), "p99": float(p[3]),
            "max": float(n_tokens.max(initial=0)), "truncated_fraction": float((n_tokens > max_length).mean())
            if len(n_tokens) else 0.0, "zero_token_rows": int((n_tokens == 0).sum())}


def choose_max_length(tokenizer: Tokenizer, train_texts: list[str], tk: TokenizerConfig) -> tuple[int, str]:
    """tokenizer.max_length, or for 'auto' the smallest length covering the configured percentile."""
    if tk.max_length != "auto":
        return int(tk.max_length), "config"
    counts = np.fromiter((len(e.ids) for e in tokenizer.encode_batch(train_texts, add_special_tokens=False)),
                         dtype=np.int64, count=len(train_texts))
    covered = int(math.ceil(np.percentile(counts, tk.max_length_percentile, method="higher")))
    chosen = min(max(covered, 1), tk.max_length_limit)
    return chosen, f"auto: p{tk.max_length_percentile:g} of train = {covered}, limit {tk.max_length_limit}"


def encode_split(
    frame, tokenizer: Tokenizer, tok_digest: str, max_length: int, pad_id: int, tk: TokenizerConfig, name: str
) -> pa.Table:
    """(text, label) frame -> the stored Arrow table, through `Dataset.map` with Arrow batches."""
    padding_side, truncation_side = tk.padding_side, tk.truncation_side
    ds = Dataset.from_pandas(frame, preserve_index=False)
    ds = ds.with_format("arrow").map(
        encode_table,
        batched=True,
        batch_size=4096,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "pad_id": pad_id,
                   "padding_side": padding_side, "truncation_side": truncation_side},
        features=encoded_features(max_length),
        new_fingerprint=f"encode-{name}-{tok_digest[:16]}-{max_length}-{padding_side}"
        f"-{truncation_side}-{len(frame)}",  # skip hashing the tokenizer object
        desc=f"encode {name}",
    )
    return ds.data.table.select(["text", "label", "input_ids", "length", "n_tokens"])


def prepare(cfg: JobConfig, force: bool = False) -> PreparedData:
    """Prepare the corpus under `<output_root>/data/<key>` or reuse a complete earlier result.

    Raises UserInputError / DataValidationError (bad config or corpus) before anything is stored.
    """
    inputs, input_digest = fingerprint_inputs(cfg.data)
    key = cache_key(input_digest, cfg)
    final = data_dir(cfg.output_root, key)
    if not force and is_complete(final):
        log.info("reusing prepared data %s", final)
        return PreparedData(final, load_manifest(final), reused=True)
    remove_stale_staging(final)

    t0 = time.perf_counter()
    tk = cfg.tokenizer
    raw = load_corpus(cfg.data)
    cleaned, label_names, report = clean_splits(
        raw.splits, cfg.data, raw.label_names, truncation_side=tk.truncation_side,
        count_pieces=piece_counter(tk), reader_dropped=raw.dropped,
    )
    splits = split_corpus(cleaned, cfg.data)
    report.rows_per_split = {name: len(frame) for name, frame in splits.items()}
    train_texts = splits["train"]["text"].tolist()
    tokenizer = train_tokenizer(train_texts, tk)
    pad_id, unk_id = tokenizer.token_to_id(PAD_TOKEN), tokenizer.token_to_id(UNK_TOKEN)
    max_length, chosen_by = choose_max_length(tokenizer, train_texts, tk)

    tok_digest = tokenizer_digest(tokenizer)
    staging = new_staging_dir(final)
    split_info: dict[str, SplitInfo] = {}
    stats: dict[str, dict[str, float]] = {}
    for name in SPLITS:
        table = encode_split(splits[name], tokenizer, tok_digest, max_length, pad_id, tk, name)
        stats[name] = _length_stats(table.column("n_tokens").to_numpy(), max_length)
        pq.write_table(table, staging / f"{name}.parquet")
        counts = np.bincount(np.asarray(splits[name]["label"]), minlength=len(label_names))
        split_info[name] = SplitInfo(
            rows=table.num_rows, label_counts={label_names[i]: int(c) for i, c in enumerate(counts)},
            digest=_split_digest(table), file=f"{name}.parquet",
        )
    tokenizer.save(str(staging / "tokenizer.json"))
    write_json(staging / "cleaning_report.json", report.to_dict())
    content = hashlib.sha256(
        json.dumps([tok_digest] + [split_info[s].digest for s in SPLITS]).encode()
    ).hexdigest()
    manifest = Manifest(
        cache_key=key,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source={"kind": cfg.data.source, "name": cfg.data.name, "config_name": cfg.data.config_name,
                "revision": cfg.data.revision, "paths": list(cfg.data.paths),
                "text_column": cfg.data.text_column, "label_column": cfg.data.label_column},
        inputs=inputs,
        input_digest=input_digest,
        label_names=list(label_names),
        vocab_size=tokenizer.get_vocab_size(),
        pad_id=pad_id,
        unk_id=unk_id,
        max_length=max_length,
        padding_side=tk.padding_side,
        truncation_side=tk.truncation_side,
        tokenizer_file="tokenizer.json",
        tokenizer_digest=tok_digest,
        splits=split_info,
        length_stats=stats["train"],
        cleaning=report.to_dict(),
        content_digest=content,
        versions={p: version(p) for p in ("datasets", "tokenizers", "pyarrow")},
        pipeline_version=PIPELINE_VERSION,
        tokenizer_settings=tk.model_dump(mode="json", include={"kind", "vocab_size", "min_frequency", "nfkc",
                                                               "lowercase", "max_length"}),
        max_length_chosen_by=chosen_by,
        length_stats_by_split=stats,
        max_chars=cfg.data.max_chars,
        uri=str(final),
    )
    write_json(staging / "manifest.json", manifest.model_dump(mode="json"))
    publish(staging, final)
    log.info("prepared %s in %.1fs: %s", final, time.perf_counter() - t0,
             {s: i.rows for s, i in split_info.items()})
    return PreparedData(final, manifest, reused=False)

"""The data stage: source -> clean -> split -> tokenizer -> encode -> store (or reuse the stored result)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from datasets import Dataset

from pipeline.data.clean import clean_splits
from pipeline.data.encode import encode_batch
from pipeline.data.sources import fingerprint_inputs, load_corpus
from pipeline.data.split import split_corpus
from pipeline.data.store import data_dir, is_complete, load_manifest, new_staging_dir, publish, write_json
from pipeline.data.tokenizer import PAD_TOKEN, UNK_TOKEN, tokenizer_digest, train_tokenizer
from schemas.config import JobConfig
from schemas.features import SPLITS, Manifest, SplitInfo, encoded_features

log = logging.getLogger(__name__)

# Bump when the stored format or any stage's behaviour changes: old caches then stop matching.
PIPELINE_VERSION = "1"


@dataclass(frozen=True)
class PreparedData:
    path: Path
    manifest: Manifest
    reused: bool


def cache_key(input_digest: str, cfg: JobConfig) -> str:
    data = cfg.data.model_dump(mode="json", exclude={"paths"})  # the content digest stands for the paths
    payload = {"pipeline": PIPELINE_VERSION, "inputs": input_digest, "data": data,
               "tokenizer": cfg.tokenizer.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _split_digest(ds: Dataset) -> str:
    h = hashlib.sha256()
    table = ds.with_format("arrow")[:]
    for col in ("input_ids", "label", "text"):
        for chunk in table.column(col).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(memoryview(buf))
    return h.hexdigest()


def _length_stats(n_tokens: np.ndarray, max_length: int) -> dict[str, float]:
    p = np.percentile(n_tokens, [50, 90, 95, 99]) if len(n_tokens) else [0, 0, 0, 0]
    return {"p50": float(p[0]), "p90": float(p[1]), "p95": float(p[2]), "p99": float(p[3]),
            "max": float(n_tokens.max(initial=0)), "truncated_fraction": float((n_tokens > max_length).mean()),
            "zero_token_rows": int((n_tokens == 0).sum())}


def prepare(cfg: JobConfig, force: bool = False) -> PreparedData:
    """Prepare the corpus under `<output_root>/data/<key>` or reuse a complete earlier result.

    Raises UserInputError / DataValidationError (bad config or corpus) before anything is stored.
    """
    inputs, input_digest = fingerprint_inputs(cfg.data)
    key = cache_key(input_digest, cfg)
    final = data_dir(cfg.output_root, key)
    if is_complete(final) and not force:
        log.info("reusing prepared data %s", final)
        return PreparedData(final, load_manifest(final), reused=True)

    t0 = time.perf_counter()
    raw = load_corpus(cfg.data)
    cleaned, label_names, report = clean_splits(raw.splits, cfg.data, raw.label_names)
    splits = split_corpus(cleaned, cfg.data)
    tokenizer = train_tokenizer(splits["train"]["text"].tolist(), cfg.tokenizer)
    pad_id, unk_id = tokenizer.token_to_id(PAD_TOKEN), tokenizer.token_to_id(UNK_TOKEN)
    tk = cfg.tokenizer
    features = encoded_features(tk.max_length)

    staging = new_staging_dir(final)
    split_info: dict[str, SplitInfo] = {}
    stats: dict[str, float] = {}
    for name in SPLITS:
        ds = Dataset.from_pandas(splits[name], preserve_index=False)
        ds = ds.map(
            encode_batch,
            batched=True,
            batch_size=4096,
            fn_kwargs={"tokenizer": tokenizer, "max_length": tk.max_length, "pad_id": pad_id,
                       "padding_side": tk.padding_side, "truncation_side": tk.truncation_side},
            features=features,
            new_fingerprint=f"{key}-{name}",  # skip hashing the tokenizer; the key already covers it
            desc=f"encode {name}",
        )
        if name == "train":
            stats = _length_stats(np.asarray(ds.with_format("arrow")[:]["n_tokens"]), tk.max_length)
        pq.write_table(ds.with_format("arrow")[:], staging / f"{name}.parquet")
        counts = np.bincount(np.asarray(splits[name]["label"]), minlength=len(label_names))
        split_info[name] = SplitInfo(
            rows=len(ds), label_counts={label_names[i]: int(c) for i, c in enumerate(counts)},
            digest=_split_digest(ds), file=f"{name}.parquet",
        )
    tokenizer.save(str(staging / "tokenizer.json"))
    write_json(staging / "cleaning_report.json", report.to_dict())
    tok_digest = tokenizer_digest(tokenizer)
    content = hashlib.sha256(
        json.dumps([tok_digest] + [split_info[s].digest for s in SPLITS]).encode()
    ).hexdigest()
    manifest = Manifest(
        cache_key=key,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source={"kind": cfg.data.source, "name": cfg.data.name, "revision": cfg.data.revision,
                "text_column": cfg.data.text_column, "label_column": cfg.data.label_column},
        inputs=inputs,
        input_digest=input_digest,
        label_names=list(label_names),
        vocab_size=tokenizer.get_vocab_size(),
        pad_id=pad_id,
        unk_id=unk_id,
        max_length=tk.max_length,
        padding_side=tk.padding_side,
        truncation_side=tk.truncation_side,
        tokenizer_file="tokenizer.json",
        tokenizer_digest=tok_digest,
        splits=split_info,
        length_stats=stats,
        cleaning=report.to_dict(),
        content_digest=content,
        versions={p: version(p) for p in ("datasets", "tokenizers", "pyarrow")},
    )
    write_json(staging / "manifest.json", manifest.model_dump(mode="json"))
    publish(staging, final)
    log.info("prepared %s in %.1fs: %s", final, time.perf_counter() - t0,
             {s: i.rows for s, i in split_info.items()})
    return PreparedData(final, manifest, reused=False)

"""Atomic storage of prepared data, keyed by content, and fast reads for workers.

Layout of one prepared dataset, `<output_root>/data/<key>/`:
  train.parquet validation.parquet test.parquet   encoded splits (schemas.features)
  tokenizer.json                                   the trained tokenizer
  cleaning_report.json                             drop counts per reason
  manifest.json                                    schemas.features.Manifest
  _COMPLETE                                        written last; without it the folder is ignored

Everything is written to a temporary sibling folder first and renamed into place, so a run
killed midway never leaves a folder that a later run would load.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from schemas.features import Manifest

MARKER = "_COMPLETE"


def data_dir(output_root: str | Path, key: str) -> Path:
    return Path(output_root) / "data" / key


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file() and (path / "manifest.json").is_file()


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(f"{path} holds no complete prepared dataset (no {MARKER}); run jobs.prepare")
    return Manifest.model_validate_json((path / "manifest.json").read_text(encoding="utf-8"))


def new_staging_dir(final: Path) -> Path:
    staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, final: Path) -> Path:
    """Mark complete, then rename into place. If another run published first, keep theirs."""
    (staging / MARKER).write_text("ok\n")
    try:
        os.rename(staging, final)
    except OSError:
        if is_complete(final):  # a concurrent run with the same key won; same content by construction
            shutil.rmtree(staging, ignore_errors=True)
        else:  # a stale incomplete folder from a killed run: replace it
            shutil.rmtree(final, ignore_errors=True)
            os.rename(staging, final)
    return final


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_split_arrays(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids int32 [n, L], labels int64 [n], lengths int32 [n]) straight from Arrow buffers.

    Reading the columns directly avoids `with_format("numpy")`, which was ~100x slower here and
    widened int32 to int64.
    """
    table = pq.read_table(Path(path) / f"{split}.parquet", columns=["input_ids", "label", "length"])
    n = table.num_rows
    ids_col = table.column("input_ids").combine_chunks()
    width = ids_col.type.list_size
    ids = ids_col.flatten().to_numpy(zero_copy_only=False).reshape(n, width) if n else np.zeros((0, width), np.int32)
    labels = table.column("label").to_numpy().astype(np.int64, copy=False)
    lengths = table.column("length").to_numpy().astype(np.int32, copy=False)
    # Arrow buffers are read-only; torch wants writable memory, so copy once here.
    return np.array(ids, dtype=np.int32), np.array(labels), np.array(lengths)


def read_texts(path: str | Path, split: str) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(Path(path) / f"{split}.parquet", columns=["text", "label"])
    return table.column("text").to_pylist(), table.column("label").to_numpy()

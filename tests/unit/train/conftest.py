"""Tiny generated corpora for the training tests: in memory, or written in the prepared-data layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.store import MARKER
from pipeline.train.loop import TrainData
from schemas.features import Manifest, SplitInfo

PAD, FIRST, SECOND = 0, 2, 3  # id 1 is left for <unk>; fillers are 4..vocab-1


def word_order_corpus(n: int, seed: int, max_len: int = 10, vocab_size: int = 16):
    """Rows hold the same two marker words in either order among random fillers ("我让你" vs "你让我"):
    label 1 when FIRST comes before SECOND. Every row of a label has the same bag of marker words, so
    only word order tells the labels apart. Left padded. Returns (ids [n, max_len] int32, labels)."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, max_len), PAD, dtype=np.int32)
    labels = rng.integers(0, 2, n).astype(np.int64)
    for i in range(n):
        length = int(rng.integers(3, max_len + 1))
        row = rng.integers(4, vocab_size, length)
        a, b = rng.choice(length, 2, replace=False)
        lo, hi = min(a, b), max(a, b)
        row[lo], row[hi] = (FIRST, SECOND) if labels[i] == 1 else (SECOND, FIRST)
        ids[i, max_len - length :] = row
    return ids, labels


@pytest.fixture(scope="module")
def corpus():
    """(train, validation) word-order splits: 600 and 200 rows."""
    return word_order_corpus(600, 0), word_order_corpus(200, 1)


def train_data(train, val, vocab_size: int = 16, padding_side: str = "left", num_classes: int = 2) -> TrainData:
    (tx, ty), (vx, vy) = train, val
    return TrainData(tx, ty, (tx != PAD).sum(1).astype(np.int32), vx, vy, vocab_size, PAD, num_classes, padding_side)


def write_prepared(
    root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], vocab_size: int = 16, padding_side: str = "left"
) -> Path:
    """The layout `pipeline.data.store` reads (Parquet splits, manifest, completion marker)."""
    root.mkdir(parents=True, exist_ok=True)
    width = next(iter(splits.values()))[0].shape[1]
    infos = {}
    for name, (ids, y) in splits.items():
        table = pa.table(
            {
                "text": pa.array([" ".join(map(str, r)) for r in ids]),
                "label": pa.array(y, pa.int64()),
                "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1), pa.int32()), width),
                "length": pa.array((ids != PAD).sum(1), pa.int32()),
                "n_tokens": pa.array((ids != PAD).sum(1), pa.int32()),
            }
        )
        pq.write_table(table, root / f"{name}.parquet")
        counts = np.bincount(y, minlength=2)
        infos[name] = SplitInfo(
            rows=len(y),
            label_counts={"neg": int(counts[0]), "pos": int(counts[1])},
            digest=name,
            file=f"{name}.parquet",
        )
    manifest = Manifest(
        cache_key="test",
        created_at="2026-01-01T00:00:00+00:00",
        source={"kind": "generated"},
        inputs=[],
        input_digest="test",
        label_names=["neg", "pos"],
        vocab_size=vocab_size,
        pad_id=PAD,
        unk_id=1,
        max_length=width,
        padding_side=padding_side,
        truncation_side="left",
        tokenizer_file="tokenizer.json",
        tokenizer_digest="test",
        splits=infos,
        length_stats={},
        cleaning={},
        content_digest="test",
        versions={},
    )
    (root / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json")))
    (root / MARKER).write_text("ok\n")
    return root

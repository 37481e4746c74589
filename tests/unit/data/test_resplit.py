"""Fresh train/validation splits of a prepared dataset (pipeline.data.resplit), on a real prepare."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.prepare import prepare
from pipeline.data.resplit import resplit, validation_rows
from pipeline.data.store import is_complete, load_manifest, read_split_arrays, read_texts


@pytest.fixture
def prepared(fx, tmp_path, job):
    corpus = Path(shutil.copy(fx / "formats/reviews.tsv", tmp_path / "reviews.tsv"))
    return prepare(job(source="files", paths=(str(corpus),)))


def _rows(path, split) -> Counter:
    texts, labels = read_texts(path, split)
    return Counter(zip(texts, labels.tolist(), strict=True))


def test_a_resplit_redraws_validation_from_train_and_validation_with_the_same_sizes_and_labels(prepared, tmp_path):
    out = resplit(prepared.path, tmp_path / "out", seed=0, index=0)
    old, new = prepared.manifest, out.manifest
    assert not out.reused and is_complete(out.path)
    for split in ("train", "validation"):
        assert new.splits[split].rows == old.splits[split].rows
    assert new.splits["validation"].label_counts == old.splits["validation"].label_counts
    # the same rows, pooled: nothing lost, nothing duplicated, nothing taken from test
    assert _rows(out.path, "train") + _rows(out.path, "validation") == _rows(prepared.path, "train") + _rows(
        prepared.path, "validation"
    )
    assert _rows(out.path, "validation") != _rows(prepared.path, "validation")
    assert _rows(out.path, "test") == _rows(prepared.path, "test") and new.splits["test"] == old.splits["test"]
    # what workers read: the same encoding, tokenizer and width
    ids, labels, lengths = read_split_arrays(out.path, "validation")
    assert ids.shape == (old.splits["validation"].rows, old.max_length) and len(labels) == len(lengths)
    assert new.tokenizer_digest == old.tokenizer_digest and new.content_digest != old.content_digest
    assert new.cache_key != old.cache_key and new.splits["train"].digest != old.splits["train"].digest


def test_resplits_differ_by_index_repeat_by_seed_and_are_reused(prepared, tmp_path):
    a = resplit(prepared.path, tmp_path / "out", seed=0, index=0)
    b = resplit(prepared.path, tmp_path / "out", seed=0, index=1)
    assert _rows(a.path, "validation") != _rows(b.path, "validation")
    again = resplit(prepared.path, tmp_path / "out", seed=0, index=0)
    assert again.reused and again.path == a.path
    elsewhere = resplit(prepared.path, tmp_path / "other", seed=0, index=0)  # recomputed: same content
    assert _rows(elsewhere.path, "validation") == _rows(a.path, "validation")
    assert load_manifest(elsewhere.path).splits["validation"].digest == a.manifest.splits["validation"].digest


def test_a_resplit_on_object_storage(prepared):
    out = resplit(prepared.path, "memory://bucket/resplit", seed=1, index=0)
    assert isinstance(out.path, str) and out.path.startswith("memory://bucket/resplit/data/")
    assert is_complete(out.path) and out.manifest.uri == out.path
    assert read_split_arrays(out.path, "train")[0].shape[0] == prepared.manifest.splits["train"].rows


def test_validation_rows_are_stratified_and_refuse_a_label_too_small():
    labels = np.array([0] * 10 + [1] * 4)
    rows = validation_rows(labels, {0: 3, 1: 2}, seed=0, index=0)
    assert sorted(Counter(labels[rows].tolist()).items()) == [(0, 3), (1, 2)]
    assert list(rows) == sorted(set(rows.tolist()))
    with pytest.raises(ValueError, match="label 1: 5 validation rows wanted, 4 pooled"):
        validation_rows(labels, {0: 3, 1: 5}, seed=0, index=0)

"""pipeline.train.idf: the bags' document frequencies from a stored training split."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.model import bags, build_model, set_idf
from pipeline.train.idf import count_rows, document_frequencies
from schemas.config import JobConfig
from tests.unit.train.conftest import PAD, word_order_corpus, write_prepared


def _cfg(**model) -> JobConfig:
    return JobConfig.model_validate({"model": {"ngram_buckets": 4093, "ngram_weighting": "idf", **model}})


def _two_shards(root):
    """Store the training split as two shards (the first 250 rows, the rest), as prepare can."""
    table = pq.read_table(root / "train.parquet")
    manifest = json.loads((root / "manifest.json").read_text())
    shards = []
    for i, part in enumerate((table.slice(0, 250), table.slice(250))):
        pq.write_table(part, root / f"train-{i}.parquet")
        shards.append({"file": f"train-{i}.parquet", "rows": part.num_rows, "digest": str(i)})
    manifest["splits"]["train"]["shards"] = shards
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_every_training_row_is_counted_and_the_idf_reaches_the_model(tmp_path):
    train, val = word_order_corpus(600, 0), word_order_corpus(50, 1)
    root = write_prepared(tmp_path / "data", {"train": train, "validation": val, "test": val})
    cfg = _cfg()
    from pipeline.data.store import load_manifest

    idf = document_frequencies(root, load_manifest(root), cfg, None)
    model = build_model(16, PAD, 2, cfg.model)
    counts = {"ngrams": torch.zeros(4093, dtype=torch.int64)}
    count_rows(model, train[0], counts)
    df = counts["ngrams"].double()
    expected = torch.where(df > 0, torch.log(601 / (1 + df)) + 1, torch.zeros_like(df))
    np.testing.assert_allclose(idf["ngrams"]["idf"], expected.numpy(), rtol=1e-6)
    assert (df == 0).any() and (df == 600).any()  # some buckets unused, some in every row (the markers)
    set_idf(model, idf)
    torch.testing.assert_close(bags(model)["ngrams"].idf, torch.as_tensor(idf["ngrams"]["idf"]))
    assert document_frequencies(root, load_manifest(root), _cfg(ngram_weighting="binary"), None) == {}
    with pytest.raises(ValueError, match="the model has"):
        set_idf(build_model(16, PAD, 2, _cfg(ngram_char_buckets=31).model), idf)


def test_a_sample_of_shards_gives_unseen_buckets_the_largest_idf_not_zero(tmp_path):
    train, val = word_order_corpus(600, 0), word_order_corpus(50, 1)
    root = write_prepared(tmp_path / "data", {"train": train, "validation": val, "test": val})
    _two_shards(root)
    from pipeline.data.store import load_manifest

    idf = document_frequencies(root, load_manifest(root), _cfg(ngram_idf_rows=100), None)["ngrams"]["idf"]
    # one whole shard counted (250 or 350 rows): a bucket it lacks may still be in the other shard
    largest = np.log((1 + np.array([250, 350])) / 2) + 1  # as if one row held it
    assert (idf > 0).all()
    assert np.isclose(idf.max(), largest, rtol=1e-6).any()
    full = document_frequencies(root, load_manifest(root), _cfg(), None)["ngrams"]["idf"]
    assert (full == 0).any() and not np.allclose(idf, full)

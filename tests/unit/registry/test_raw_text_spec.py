"""The model spec a served version rebuilds its network from, versions logged by earlier releases
included."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from pipeline.model import build_model
from pipeline.registry.raw_text_model import SPEC, TOKENIZER, WEIGHTS, RawTextClassifier
from schemas.config import ModelConfig


def test_a_version_logged_before_ngram_weighting_existed_loads_with_the_mean_it_was_trained_with(tmp_path):
    cfg = ModelConfig(ngram_buckets=64, ngram_weighting="mean")
    torch.save(build_model(8, 0, 2, cfg).state_dict(), tmp_path / "w.pt")
    Tokenizer(WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(tmp_path / "tok.json"))
    old = {k: v for k, v in cfg.model_dump(mode="json").items() if k != "ngram_weighting"}  # the old spec's keys
    for model, weighting in ((old, "mean"), (ModelConfig(ngram_buckets=64).model_dump(mode="json"), "binary")):
        spec = {"model": model, "vocab_size": 8, "pad_id": 0, "label_names": ["neg", "pos"]}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        served = RawTextClassifier()
        paths = {SPEC: tmp_path / "spec.json", TOKENIZER: str(tmp_path / "tok.json"), WEIGHTS: tmp_path / "w.pt"}
        served.load_context(SimpleNamespace(artifacts=paths))
        assert served.model.ngrams.weighting == weighting


def test_an_idf_version_serves_with_the_idf_it_was_trained_with(tmp_path):
    cfg = ModelConfig(ngram_buckets=64, ngram_weighting="idf")
    trained = build_model(8, 0, 2, cfg)
    with torch.no_grad():
        trained.ngrams.idf.copy_(torch.linspace(0.0, 4.0, 64))
        trained.ngrams.weight.copy_(torch.randn(64, 1))
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    Tokenizer(WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3}, unk_token="[UNK]")).save(str(tmp_path / "tok.json"))
    spec = {"model": cfg.model_dump(mode="json"), "vocab_size": 8, "pad_id": 0, "label_names": ["neg", "pos"]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    served = RawTextClassifier()
    paths = {SPEC: tmp_path / "spec.json", TOKENIZER: str(tmp_path / "tok.json"), WEIGHTS: tmp_path / "w.pt"}
    served.load_context(SimpleNamespace(artifacts=paths))
    torch.testing.assert_close(served.model.ngrams.idf, trained.ngrams.idf)
    ids = torch.tensor([[2, 3, 2]])
    torch.testing.assert_close(served.model.eval().ngrams(ids), trained.ngrams(ids))

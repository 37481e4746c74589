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

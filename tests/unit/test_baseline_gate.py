"""promotion.require_beats_baseline: a version must beat its TF-IDF + LR baseline on the same test rows
(McNemar, as against a champion), on a real registry with real raw-text models and real baselines."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.baseline import fit_on_prepared
from pipeline.data.store import read_texts
from pipeline.registry.promotion import Score, baseline_gate, current_alias_version, promote_version
from pipeline.tracking import tracking_store
from schemas.config import BaselineConfig, PromotionConfig
from tests.model_factory import learned_state, prepare_generated, register

GATE = PromotionConfig(min_metric=0.6, require_beats_baseline=True)


def _score(correct: list[bool]) -> Score:
    c = np.array(correct)
    return Score({"accuracy": float(c.mean())}, c)


def test_the_gate_needs_higher_and_significant():
    base = _score([True] * 60 + [False] * 40)
    ok, reason = baseline_gate(_score([True] * 95 + [False] * 5), base, GATE)
    assert ok and "0.9500 beats its baseline 0.6000" in reason
    ok, reason = baseline_gate(_score([True] * 62 + [False] * 38), base, GATE)  # 2 more rows: noise
    assert not ok and "0.6200 is above but not significantly better than its baseline 0.6000" in reason
    ok, reason = baseline_gate(_score([True] * 50 + [False] * 50), base, GATE)
    assert not ok and "0.5000 does not beat its baseline 0.6000" in reason and "McNemar p=" in reason
    with pytest.raises(ValueError, match="same split"):
        baseline_gate(_score([True] * 10), base, GATE)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):  # trains and registers a real model: its tests are integration-marked
    root = tmp_path_factory.mktemp("gate")
    cfg, prep = prepare_generated(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    state = learned_state(cfg, prep)
    version = register(uri, "gated", cfg, prep, state)
    texts, labels = read_texts(prep.path, "test")
    # A judged version keeps its decision when judged again: a test that needs a fresh one registers it.
    another = lambda: register(uri, "gated", cfg, prep, state)  # noqa: E731
    return uri, version, prep, texts, labels, another


def _baseline(prep, cfg: BaselineConfig) -> Score:
    result = fit_on_prepared(prep.path, cfg)
    return Score(result.test_metrics, result.test_correct)


@pytest.mark.integration
@pytest.mark.slow
def test_a_version_that_does_not_beat_its_baseline_is_refused(registered):
    uri, version, prep, texts, labels, _ = registered
    strong = _baseline(prep, BaselineConfig())  # the corpus is one sentiment word per row: ~perfect
    with tracking_store(uri) as client:  # as a job does: models:/ URIs resolve through it
        decision = promote_version(
            client, "gated", version, texts, labels, list(prep.manifest.label_names), GATE, baseline=strong
        )
    assert not decision.promoted
    cand, base = decision.candidate["accuracy"], strong.metrics["accuracy"]
    assert f"{cand:.4f}" in decision.reason and f"its baseline {base:.4f}" in decision.reason
    assert current_alias_version(client, "gated", "champion") is None
    assert current_alias_version(client, "gated", "challenger") is None  # not even challenger
    tags = client.get_model_version("gated", version).tags
    assert tags["promotion.decision"] == "rejected"
    assert float(tags["promotion.baseline_accuracy"]) == pytest.approx(base)


@pytest.mark.integration
@pytest.mark.slow
def test_a_version_that_beats_its_baseline_is_promoted(registered):
    uri, _, prep, texts, labels, another = registered
    version = another()  # not yet judged (test order must not matter)
    # a real baseline on features that miss the signal: 8-character n-grams of rows of ~3-12 characters
    # (nearly all unique; the sentiment word is rarely inside a shared one) -> about chance
    weak = _baseline(prep, BaselineConfig(word_ngram_max=1, char_ngram_range=(8, 8)))
    assert weak.metrics["accuracy"] < 0.7
    with tracking_store(uri) as client:
        decision = promote_version(
            client, "gated", version, texts, labels, list(prep.manifest.label_names), GATE, baseline=weak
        )
    assert decision.promoted, decision.reason
    assert "first version" in decision.reason and "beats its baseline" in decision.reason
    assert current_alias_version(client, "gated", "champion") == version


@pytest.mark.integration
@pytest.mark.slow
def test_the_option_without_a_baseline_is_an_error(registered):
    uri, version, prep, texts, labels, _ = registered
    with tracking_store(uri) as client, pytest.raises(ValueError, match="baseline"):
        promote_version(client, "gated", version, texts, labels, list(prep.manifest.label_names), GATE)

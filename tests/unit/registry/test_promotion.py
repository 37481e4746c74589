"""Promotion: the gate as a pure function, and against a real registry (local sqlite store and a
real `mlflow server`, marked integration): the gate's decisions, the compare-and-set race, history
and rollback. Models are real raw-text pyfuncs."""

from __future__ import annotations

import dataclasses
import math
import threading

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.data.store import read_texts
from pipeline.errors import LockTimeout, UserInputError
from pipeline.registry.lock import lock_name, registry_lock
from pipeline.registry.log_model import log_raw_text_model
from pipeline.registry.promotion import decide, history, mcnemar_p, promote_version, rollback
from pipeline.registry.versions import find_version_by_run, register_version
from pipeline.tracking import ensure_experiment, tracking_store
from schemas.config import PromotionConfig
from tests.model_factory import learned_state, prepare_generated, register, train_state

GATE = PromotionConfig(min_metric=0.6, min_improvement=0.01, significance=0.05, lock_wait_s=60)


# ---- the gate, as a pure function ------------------------------------------------------------


def test_first_version_needs_min_metric():
    assert decide({"accuracy": 0.7}, None, GATE)[0]
    ok, reason = decide({"accuracy": 0.5}, None, GATE)
    assert not ok and "min_metric" in reason


def test_nan_never_promotes():
    ok, reason = decide({"accuracy": math.nan}, None, GATE)
    assert not ok and "not a number" in reason
    assert not decide({"accuracy": math.nan}, {"accuracy": 0.1}, GATE)[0]


def test_worse_and_equal_are_rejected():
    assert not decide({"accuracy": 0.70}, {"accuracy": 0.80}, GATE)[0]
    ok, reason = decide({"accuracy": 0.80}, {"accuracy": 0.80}, GATE)
    assert not ok and "does not beat" in reason


def test_better_but_not_significant_is_rejected():
    ok, reason = decide({"accuracy": 0.85}, {"accuracy": 0.80}, GATE, p_value=0.2)
    assert not ok and "not significantly" in reason
    assert decide({"accuracy": 0.85}, {"accuracy": 0.80}, GATE, p_value=0.01)[0]


def test_mcnemar_counts_only_disagreements():
    champ = np.array([True] * 50 + [False] * 50)
    assert mcnemar_p(champ.copy(), champ) == 1.0  # identical predictions carry no evidence
    better = champ.copy()
    better[50:80] = True  # 30 wins, 0 losses
    assert mcnemar_p(better, champ) < 1e-6
    mixed = champ.copy()
    mixed[50:53] = True
    mixed[:2] = False  # 3 wins, 2 losses
    assert mcnemar_p(mixed, champ) > 0.3


# ---- a real registry (the tests that train models or start a server are integration) ---------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_generated(tmp_path_factory.mktemp("promo"))


@pytest.fixture(scope="module")
def states(prepared):
    cfg, prep = prepared
    good = learned_state(cfg, prep)
    untrained = train_state(cfg, prep, epochs=0, seed=1)
    broken = {k: torch.full_like(v, float("nan")) for k, v in good.items()}
    return {"good": good, "untrained": untrained, "broken": broken}


def _register(uri: str, name: str, prepared, state) -> str:
    return register(uri, name, *prepared, state)


@pytest.fixture(params=["sqlite", "server"])
def tracking_uri(request, tmp_path):
    if request.param == "server":
        return request.getfixturevalue("mlflow_server")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _promote(client, name, version, prepared, cfg=GATE):
    _, prep = prepared
    texts, labels = read_texts(prep.path, "test")
    return promote_version(client, name, version, texts, labels, list(prep.manifest.label_names), cfg)


@pytest.fixture
def store(tracking_uri):
    """The registry as a job sees it: MLflow pointed at it once, one client passed around."""
    with tracking_store(tracking_uri) as client:
        yield client


@pytest.mark.integration
@pytest.mark.slow
def test_gate_decisions_on_a_real_registry(tracking_uri, store, prepared, states, request):
    name = f"gate-{request.node.callspec.id}"
    client = store
    v_good = _register(tracking_uri, name, prepared, states["good"])
    first = _promote(client, name, v_good, prepared)
    assert first.promoted and "first version" in first.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == v_good

    v_bad = _register(tracking_uri, name, prepared, states["untrained"])
    worse = _promote(client, name, v_bad, prepared)
    assert not worse.promoted and worse.candidate["accuracy"] < worse.champion["accuracy"]

    v_same = _register(tracking_uri, name, prepared, states["good"])  # same weights: equal metrics
    runner_up = GATE.model_copy(update={"challenger_alias": "runner-up"})
    equal = _promote(client, name, v_same, prepared, runner_up)
    assert not equal.promoted and "does not beat" in equal.reason
    # Passed min_metric but not the gate: it takes the configured challenger alias, never the champion's.
    assert str(client.get_model_version_by_alias(name, "runner-up").version) == v_same
    assert client.get_model_version(name, v_same).aliases == ["runner-up"]  # not the default "challenger"

    v_nan = _register(tracking_uri, name, prepared, states["broken"])
    nan = _promote(client, name, v_nan, prepared)
    assert not nan.promoted and "not a number" in nan.reason

    assert str(client.get_model_version_by_alias(name, "champion").version) == v_good
    tags = client.get_model_version(name, v_bad).tags
    assert tags["promotion.decision"] == "rejected" and tags["promotion.champion_version"] == v_good
    rows = {r["version"]: r for r in history(client, name)}
    assert rows[v_good]["decision"] == "promoted" and rows[v_nan]["decision"] == "rejected"
    assert not client.search_registered_models(f"name='{lock_name(name)}'")  # lock released


@pytest.mark.integration
@pytest.mark.slow
def test_rollback_restores_the_previous_champion(tracking_uri, store, prepared, states, request):
    name = f"rollback-{request.node.callspec.id}"
    client = store
    v1 = _register(tracking_uri, name, prepared, states["untrained"])
    assert _promote(client, name, v1, prepared, GATE.model_copy(update={"min_metric": 0.0})).promoted
    v2 = _register(tracking_uri, name, prepared, states["good"])
    assert _promote(client, name, v2, prepared).promoted
    assert rollback(client, name, GATE) == (v2, v1)
    assert str(client.get_model_version_by_alias(name, "champion").version) == v1
    with pytest.raises(ValueError, match="nothing to roll back"):
        rollback(client, name, GATE)


@pytest.mark.integration
@pytest.mark.slow
def test_the_outcome_is_on_the_run_the_replaced_version_and_the_registered_model(sqlite_tracking_uri, prepared, states):
    name = "outcome"
    with tracking_store(sqlite_tracking_uri) as client:
        v1 = _register(sqlite_tracking_uri, name, prepared, states["untrained"])
        client.set_tag(client.get_model_version(name, v1).run_id, "mlflow.note.content", "### Result\nsome")
        assert _promote(client, name, v1, prepared, GATE.model_copy(update={"min_metric": 0.0})).promoted
        v2 = _register(sqlite_tracking_uri, name, prepared, states["good"])
        decision = _promote(client, name, v2, prepared)
        assert decision.promoted and decision.p_value is not None and decision.p_value < GATE.significance

        run = client.get_run(client.get_model_version(name, v2).run_id)
        t = run.data.tags
        assert t["promotion.decision"] == "promoted" and t["promotion.champion_version"] == v1
        assert float(t["promotion.p_value"]) == pytest.approx(decision.p_value, rel=1e-3)
        assert t["promotion.min_improvement"] == str(GATE.min_improvement)
        section = t["mlflow.note.content"].split("### Promotion")[1]
        assert "promoted to @champion" in section and f"v{v1}, test accuracy" in section
        assert "McNemar p-value" in section and "min improvement | 0.01" in section

        first_run = client.get_run(client.get_model_version(name, v1).run_id).data.tags["mlflow.note.content"]
        assert first_run.startswith("### Result") and first_run.count("### Promotion") == 1  # replaced, kept once

        old = client.get_model_version(name, v1)
        assert old.tags["champion.superseded_by"] == v2 and old.tags["champion.superseded_at"]
        assert old.description.startswith(f"**Replaced as champion by v{v2} at {old.tags['champion.superseded_at']}")
        policy = client.get_registered_model(name).description
        assert "`@champion`** is what serving loads" in policy and "McNemar" in policy and "@challenger" in policy


@pytest.mark.integration
@pytest.mark.slow
def test_concurrent_promotions_leave_the_alias_on_the_better_model(mlflow_server, prepared, states):
    """Two jobs race: without compare-and-set the slower writer would win whatever its quality."""
    name = "race"
    v_bad = _register(mlflow_server, name, prepared, states["untrained"])
    v_good = _register(mlflow_server, name, prepared, states["good"])
    lenient = GATE.model_copy(update={"min_metric": 0.0})
    results, errors = {}, []

    def go(client, v):
        try:
            results[v] = _promote(client, name, v, prepared, lenient)
        except Exception as e:  # surfaced below
            errors.append(e)

    with tracking_store(mlflow_server) as client:  # one process, one store: set once, not per thread
        threads = [threading.Thread(target=go, args=(client, v)) for v in (v_good, v_bad)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert not errors, errors
    champion = str(MlflowClient(mlflow_server).get_model_version_by_alias(name, "champion").version)
    assert champion == v_good


def test_lock_excludes_a_second_holder_and_expires(sqlite_tracking_uri):
    client = MlflowClient(sqlite_tracking_uri)
    with registry_lock(client, "m", ttl_s=60, wait_s=0):
        with pytest.raises(UserInputError, match="m.promotion-lock") as timeout:
            with registry_lock(client, "m", ttl_s=60, wait_s=0.5, poll_s=0.1):
                pass
        assert isinstance(timeout.value, LockTimeout)  # a user error: one line, exit 2
    with registry_lock(client, "m", ttl_s=-1, wait_s=0):  # a holder that died long ago...
        with registry_lock(client, "m", ttl_s=60, wait_s=2, poll_s=0.1) as owner:  # ...is broken
            assert client.get_registered_model(lock_name("m")).tags["owner"] == owner


@pytest.mark.integration
@pytest.mark.slow
def test_rerun_after_registering_finds_the_version_by_run_id(sqlite_tracking_uri, prepared, states):
    cfg, prep = prepared
    with tracking_store(sqlite_tracking_uri) as client:
        with mlflow.start_run(experiment_id=ensure_experiment(client, "dup", cfg.output_root)) as run:
            info = log_raw_text_model(states["good"], prep.manifest, prep.path / "tokenizer.json", cfg.model, ["好看"])
        first = register_version(client, "dup", info.model_uri, run.info.run_id, {}, "")
        again = register_version(client, "dup", info.model_uri, run.info.run_id, {}, "")
    assert first.version == again.version
    assert len(client.search_model_versions("name='dup'")) == 1
    assert find_version_by_run(client, "dup", run.info.run_id).version == first.version


@pytest.mark.integration
@pytest.mark.slow
def test_promoting_the_champion_or_a_rejected_version_again_changes_no_tags(sqlite_tracking_uri, prepared, states):
    name = "history-model"
    with tracking_store(sqlite_tracking_uri) as client:
        v_good = _register(sqlite_tracking_uri, name, prepared, states["good"])
        assert _promote(client, name, v_good, prepared).promoted
        before = dict(client.get_model_version(name, v_good).tags)
        again = _promote(client, name, v_good, prepared)  # jobs.promote on the current champion
        assert not again.promoted and "already champion" in again.reason
        assert dict(client.get_model_version(name, v_good).tags) == before  # still "promoted"
        v_bad = _register(sqlite_tracking_uri, name, prepared, states["untrained"])
        client.set_model_version_tag(name, v_good, "data_digest", "a" * 64)
        client.set_model_version_tag(name, v_bad, "data_digest", "b" * 64)
        rejected = _promote(client, name, v_bad, prepared)
        assert not rejected.promoted and f"trained on other data than champion v{v_good}" in rejected.reason
        before = dict(client.get_model_version(name, v_bad).tags)
        run_before = client.get_run(client.get_model_version(name, v_bad).run_id).data.tags
        again = _promote(client, name, v_bad, prepared)  # a rerun of the finished job, or jobs.promote on it
        assert again.unchanged and not again.promoted and again.reason.startswith("already rejected (")
        assert dict(client.get_model_version(name, v_bad).tags) == before  # the first decision stands
        assert client.get_run(client.get_model_version(name, v_bad).run_id).data.tags == run_before
        rows = history(client, name)
        # Durable: one record per decision (the no-ops included), newest first, none overwritten.
        assert [(r["version"], r["decision"]) for r in rows] == [
            (v_bad, "unchanged"),
            (v_bad, "rejected"),
            (v_good, "unchanged"),
            (v_good, "promoted"),
        ]
        aliases = {r["version"]: r["aliases"] for r in rows}
        assert aliases[v_good] == "champion" and aliases[v_bad] == ""  # below min_metric: not even challenger


@pytest.mark.integration
@pytest.mark.slow
def test_a_candidate_with_other_label_names_is_refused(sqlite_tracking_uri, prepared, states, tmp_path):
    cfg, prep = prepared
    name = "labels-model"
    with tracking_store(sqlite_tracking_uri) as client:
        v_champion = _register(sqlite_tracking_uri, name, prepared, states["good"])
        assert _promote(client, name, v_champion, prepared).promoted
        renamed = prep.manifest.model_copy(update={"label_names": ("bad", "good")})
        other = dataclasses.replace(prep, manifest=renamed)
        v_other = register(sqlite_tracking_uri, name, cfg, other, states["good"])
        texts, labels = read_texts(prep.path, "test")
        decision = promote_version(client, name, v_other, texts, labels, ["bad", "good"], GATE)
    assert not decision.promoted and "label names" in decision.reason and "neg" in decision.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == v_champion

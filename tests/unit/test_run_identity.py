"""Issue 13 item 14: a rerun after a driver crash continues instead of starting over.

(a) Under Ray Jobs an unnamed run is named after its submission id, read where Ray's job supervisor puts it
for the driver; the schedule lease proposes that name and a user's name wins. (b) Runs a dead driver left
RUNNING are closed FAILED by the next run of the experiment, never a live one. (c) A named run resumed with a
changed configuration goes on for keys that may change (more epochs) and otherwise stops, before prepare and
Ray, with one line listing the changed keys. Real sqlite stores; no training."""

from __future__ import annotations

import json
import time

import pytest
from mlflow.tracking import MlflowClient

from jobs import run as run_job
from jobs import train as train_job
from jobs.config_loader import load_config
from pipeline import tracking
from pipeline.errors import UserInputError
from pipeline.registry.schedule_lease import (
    RAY_JOB_CONFIG_ENV,
    SUBMISSION_ID_KEY,
    lease_name,
    ray_submission_id,
    with_run_identity,
)
from pipeline.tracking import (
    HEARTBEAT_TAG,
    REQUESTED_CONFIG_TAG,
    check_resume,
    mlflow_run,
    requested_config,
    tracking_store,
)


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One store for the module (creating a sqlite store runs every migration); each test its experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('identity') / 'mlflow.db'}"


@pytest.fixture
def job(uri, tmp_path, request):
    def make(*overrides):
        return load_config(
            None,
            [
                f"output_root={tmp_path}",
                f"tracking.tracking_uri={uri}",
                f"tracking.experiment_name={request.node.name}",
                "tracking.system_metrics=false",
                *overrides,
            ],
        )

    return make


def _submitted(monkeypatch, submission_id: str) -> None:
    """The driver's environment as Ray's job supervisor sets it (job_supervisor._get_driver_env_vars)."""
    config = {"runtime_env": {}, "metadata": {SUBMISSION_ID_KEY: submission_id, "job_name": submission_id}}
    monkeypatch.setenv(RAY_JOB_CONFIG_ENV, json.dumps(config))


# ---- (a) identity ------------------------------------------------------------------------------------------


def test_the_names_read_are_the_ones_the_installed_ray_sets():
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
    from ray.dashboard.modules.job.common import JOB_ID_METADATA_KEY

    assert (RAY_JOB_CONFIG_ENV, SUBMISSION_ID_KEY) == (RAY_JOB_CONFIG_JSON_ENV_VAR, JOB_ID_METADATA_KEY)


def test_an_unnamed_run_under_ray_jobs_is_named_after_its_submission_id(job, monkeypatch):
    monkeypatch.delenv(RAY_JOB_CONFIG_ENV, raising=False)
    cfg = job()
    assert ray_submission_id() is None and with_run_identity(cfg) is cfg  # outside Ray Jobs: as before
    _submitted(monkeypatch, "rnn-textcls-train-x7k2p")
    assert with_run_identity(cfg).tracking.run_name == "rnn-textcls-train-x7k2p"
    named = job("tracking.run_name=mine")
    assert with_run_identity(named).tracking.run_name == "mine"  # the user's name wins
    _submitted(monkeypatch, "bad'id")
    with pytest.raises(UserInputError, match='submission id "bad\'id" cannot name the MLflow run'):
        with_run_identity(cfg)


def test_a_scheduled_run_proposes_its_submission_id_and_a_retry_gets_the_unfinished_name_back(job, uri, monkeypatch):
    """KubeRay gives a retry a new submission id (without spec.jobId): the lease's name must win then."""
    seen = []
    monkeypatch.setattr(run_job, "run_once", lambda cfg: seen.append(cfg.tracking.run_name))
    cfg = job()
    _submitted(monkeypatch, "nightly-a1")
    run_job.scheduled(cfg, "nightly")  # finishes: the lease is deleted
    monkeypatch.setattr(run_job, "run_once", lambda cfg: seen.append(cfg.tracking.run_name) or 1 / 0)
    _submitted(monkeypatch, "nightly-b2")
    with pytest.raises(ZeroDivisionError):
        run_job.scheduled(cfg, "nightly")  # fails: its lease stays, expired, with its run name
    _submitted(monkeypatch, "nightly-b2-retry")
    monkeypatch.setattr(run_job, "run_once", lambda cfg: seen.append(cfg.tracking.run_name))
    run_job.scheduled(cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 9})}), "nightly")
    assert seen == ["nightly-a1", "nightly-b2", "nightly-b2"]  # more epochs: still the same run
    client = MlflowClient(uri)
    assert client.search_registered_models(f"name='{lease_name('nightly')}'") == []


def test_the_schedule_fingerprint_ignores_exactly_the_keys_a_resume_may_change(job):
    fp = run_job.schedule_fingerprint
    assert fp(job()) == fp(job("train.epochs=9", "scaling.num_workers=3", "tracking.run_name=x"))
    assert fp(job()) != fp(job("model.hidden_dim=8"))


# ---- (b) runs left RUNNING ---------------------------------------------------------------------------------


def test_the_next_run_closes_runs_whose_driver_died_and_no_live_one(job, uri):
    cfg = job()
    with tracking_store(uri) as client:
        exp = client.create_experiment(cfg.tracking.experiment_name)
        dead = client.create_run(exp, run_name="killed", tags={HEARTBEAT_TAG: f"{time.time() - 5:.0f}"})
        live = client.create_run(exp, run_name="live", tags={HEARTBEAT_TAG: f"{time.time() + 600:.0f}"})
        unknown = client.create_run(exp, run_name="older-version")  # no heartbeat: its owner is not provably gone
        with mlflow_run(client, cfg, "next", {}) as run:
            assert float(client.get_run(run.info.run_id).data.tags[HEARTBEAT_TAG]) > time.time()
        closed = client.get_run(dead.info.run_id)
        assert closed.info.status == "FAILED" and closed.data.tags["closed_by"] == run.info.run_id
        assert "heartbeat" in closed.data.tags["closed_reason"]
        assert client.get_run(live.info.run_id).info.status == "RUNNING"
        assert client.get_run(unknown.info.run_id).info.status == "RUNNING"


# ---- (c) a resumed run's configuration ---------------------------------------------------------------------


def _earlier_run(cfg) -> str:
    with tracking_store(cfg.tracking.tracking_uri) as client:
        tags = {REQUESTED_CONFIG_TAG: json.dumps(requested_config(cfg))}
        with pytest.raises(RuntimeError), mlflow_run(client, cfg, cfg.tracking.run_name, tags) as run:
            raise RuntimeError("driver lost")
    return run.info.run_id


def test_a_resumed_run_may_change_epochs_but_not_the_model(job, uri):
    first = job("tracking.run_name=nightly", "train.epochs=2", "model.hidden_dim=16")
    run_id = _earlier_run(first)
    with tracking_store(uri) as client:
        assert check_resume(client, first) is None  # same configuration
        more = job("tracking.run_name=nightly", "train.epochs=4", "model.hidden_dim=16")
        assert check_resume(client, more) == "train.epochs: 2 -> 4"
        other = job("tracking.run_name=nightly", "train.lr=0.5", "model.hidden_dim=8")
        with pytest.raises(UserInputError) as refused:
            check_resume(client, other)
    line = str(refused.value)
    assert "\n" not in line and run_id in line
    assert "model.hidden_dim: 16 -> 8" in line and "train.lr: 0.003 -> 0.5" in line and "train.epochs:" not in line


def test_a_requested_config_too_long_for_a_tag_is_stored_with_digests_and_still_compared(job, uri, monkeypatch):
    monkeypatch.setattr(tracking, "TAG_LIMIT", 400)  # the real limit (8000) takes dozens of long values
    column = "c" * 150

    def named(epochs: int, text_column: str):
        return job(
            "tracking.run_name=nightly",
            f"train.epochs={epochs}",
            f"data.text_column={text_column}",
            f"data.label_column=l{column}",
        )

    first = named(2, column)
    stored = requested_config(first)
    assert len(json.dumps(stored)) <= 400 and stored["data.text_column"].startswith("sha256:")
    assert stored["train.epochs"] == "2"  # short values stay readable
    run_id = _earlier_run(first)
    with tracking_store(uri) as client:
        assert check_resume(client, first) is None
        monkeypatch.setattr(tracking, "TAG_LIMIT", 8000)  # the same config, now written out: still the same
        assert check_resume(client, first) is None
        assert check_resume(client, named(4, column)) == "train.epochs: 2 -> 4"
        with pytest.raises(UserInputError) as refused:
            check_resume(client, named(2, f"x{column}"))
    assert run_id in str(refused.value) and "data.text_column: sha256:" in str(refused.value)
    assert "data.label_column" not in str(refused.value)


@pytest.mark.parametrize("entry", ["train", "run"])
def test_a_refused_resume_stops_before_prepare_and_ray(tmp_path, monkeypatch, job, entry):
    monkeypatch.delenv("RNN_SCHEDULE_NAME", raising=False)
    _earlier_run(job("tracking.run_name=nightly"))
    changed = job("tracking.run_name=nightly", "model.hidden_dim=8")
    with pytest.raises(UserInputError, match="model.hidden_dim: 64 -> 8"):
        (train_job.run if entry == "train" else run_job.run)(changed)
    assert not (tmp_path / "data").exists()  # nothing prepared (and Ray starts only after prepare)

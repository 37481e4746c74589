"""MLflow side-effect helpers: the job's tracking store, the run's lifecycle and rank-zero logging."""

from __future__ import annotations

import contextlib
import os

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from jobs.config_loader import load_config
from pipeline.errors import UserInputError
from pipeline.tracking import (
    RankZeroLogger,
    ensure_experiment,
    epoch_metric_names,
    held_out_metric_names,
    log_params,
    mlflow_run,
    resolve_tracking_uri,
    tracking_store,
)


def test_store_is_set_for_the_job_and_restored_after(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    with tracking_store(uri) as client:
        assert mlflow.get_tracking_uri() == client.tracking_uri == uri
        assert os.environ["MLFLOW_TRACKING_URI"] == uri  # MLflow exports it for subprocesses
    assert "MLFLOW_TRACKING_URI" not in os.environ  # a later job resolves its own store, not this one
    cfg = load_config(None, [f"output_root={tmp_path / 'other'}"])
    assert resolve_tracking_uri(cfg).endswith("other/mlflow.db")


def _job(tmp_path, *overrides):
    return load_config(
        None, [f"output_root={tmp_path}", "tracking.experiment_name=t", "tracking.system_metrics=false", *overrides]
    )


@pytest.mark.parametrize("error,status", [(None, "FINISHED"), (ValueError, "FAILED"), (KeyboardInterrupt, "KILLED")])
def test_the_run_ends_with_the_status_of_its_block(tmp_path, error, status):
    cfg = _job(tmp_path)
    with tracking_store(f"sqlite:///{tmp_path / 'm.db'}") as client:
        with pytest.raises(error) if error else contextlib.nullcontext():
            with mlflow_run(client, cfg, "r", {"k": "v"}) as run:
                if error:
                    raise error("stop")
        got = client.get_run(run.info.run_id)
    assert got.info.status == status and got.data.tags["k"] == "v"
    assert mlflow.active_run() is None


def test_a_named_run_resumes_the_newest_run_of_that_name(tmp_path):
    cfg = _job(tmp_path, "tracking.run_name=nightly")
    with tracking_store(f"sqlite:///{tmp_path / 'm.db'}") as client:
        with pytest.raises(RuntimeError), mlflow_run(client, cfg, "nightly", {}) as first:
            raise RuntimeError("crash")
        with mlflow_run(client, cfg, "nightly", {"attempt": "2"}) as second:
            pass
        assert second.info.run_id == first.info.run_id
        (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["attempt"] == "2"


def test_default_store_is_sqlite_under_output_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(None, [f"output_root={tmp_path}"])
    assert resolve_tracking_uri(cfg) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(cfg) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri(load_config(None, ["tracking.tracking_uri=sqlite:///x.db"])) == "sqlite:///x.db"


def test_an_object_store_output_root_needs_a_tracking_server(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    remote = load_config(None, ["output_root=s3://bucket/runs"])
    with pytest.raises(UserInputError, match=r"^output_root='s3://bucket/runs' is object storage.*set tracking\."):
        resolve_tracking_uri(remote)
    assert list(tmp_path.iterdir()) == []  # before: a local folder "s3:" holding the sqlite store
    server = load_config(None, ["output_root=s3://bucket/runs", "tracking.tracking_uri=http://mlflow:5000"])
    assert resolve_tracking_uri(server) == "http://mlflow:5000"
    local_url = load_config(None, [f"output_root=file://{tmp_path}/runs"])
    assert resolve_tracking_uri(local_url) == f"sqlite:///{tmp_path.resolve() / 'runs' / 'mlflow.db'}"
    # with a sqlite store given, the experiment's artifacts go to the bucket, not a local folder "s3:"
    with tracking_store(f"sqlite:///{tmp_path / 'm.db'}") as client:
        exp = ensure_experiment(client, "remote", "s3://bucket/runs")
        assert client.get_experiment(exp).artifact_location == "s3://bucket/runs/mlartifacts"
        exp = ensure_experiment(client, "local", f"file://{tmp_path}/runs")
        assert client.get_experiment(exp).artifact_location == (tmp_path.resolve() / "runs" / "mlartifacts").as_uri()
    assert not (tmp_path / "s3:").exists()


def test_only_rank_zero_writes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    RankZeroLogger(uri, run_id, rank=1).log_metrics({"val_loss": 9.0}, step=0)
    RankZeroLogger(uri, run_id, rank=0).log_metrics({"val_loss": 1.0}, step=0)
    assert [m.value for m in client.get_metric_history(run_id, "val/loss")] == [1.0]


def test_epoch_metrics_are_grouped_and_constants_are_not_series():
    report = {
        "epoch": 2,
        "train_loss": 0.5,
        "val_loss": 0.6,
        "val_accuracy": 0.7,
        "samples_per_s": 9e3,
        "epoch_s": 1.0,
        "lr": 0.003,
        "best_epoch": 1,
    }
    named = epoch_metric_names(report, constant_lr=True)
    assert named == {
        "train/loss": 0.5,
        "val/loss": 0.6,
        "val/accuracy": 0.7,
        "train/samples_per_s": 9e3,
        "train/epoch_s": 1.0,
    }
    assert epoch_metric_names(report, constant_lr=False)["train/lr"] == 0.003
    assert held_out_metric_names({"accuracy": 0.9}) == {"test_accuracy": 0.9}


def test_unset_params_are_not_logged(tmp_path):
    with tracking_store(f"sqlite:///{tmp_path / 'm.db'}"), mlflow.start_run() as run:
        log_params({"train.threads_per_worker": None, "train.epochs": 3})
    params = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").get_run(run.info.run_id).data.params
    assert params == {"train.epochs": "3"}

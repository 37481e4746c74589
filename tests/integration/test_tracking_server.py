"""The whole job against a real `mlflow server` on loopback (REST path), not only a local store:
run contents, lineage inputs, the registered version, and FAILED on a crash."""

from __future__ import annotations

import functools

import pytest
from mlflow.tracking import MlflowClient
from ray.train import TrainingFailedError

from jobs import run as run_job
from jobs import train as train_job
from jobs.config_loader import load_config
from pipeline.train import trainer
from tests.faults import kill_rank_once
from tests.integration.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _overrides(tmp_path, server, experiment, model):
    corpus = write_corpus(tmp_path / "reviews.csv", rows=400)
    return [
        f"output_root={tmp_path}",
        f"tracking.tracking_uri={server}",
        f"tracking.experiment_name={experiment}",
        f"tracking.registered_model_name={model}",
        "data.source=files",
        "data.text_column=review",
        "data.label_column=sentiment",
        "data.labels=[neg, pos]",
        f"data.paths=[{corpus}]",
        "tokenizer.max_length=32",
        "train.epochs=2",
        "promotion.min_metric=0.0",
    ]


def test_run_contents_over_rest(ray_cluster, mlflow_server, tmp_path):
    summary = run_job.run(load_config(None, _overrides(tmp_path, mlflow_server, "rest", "rest-model")))
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("rest").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_id == summary.outcome.run_id
    assert int(run.data.params["n_params.total"]) == summary.outcome.n_params
    assert {"test_accuracy", "test_f1", "test_roc_auc", "val/loss"} <= set(run.data.metrics)
    assert run.data.tags["config_digest"] and "mlflow.note.content" in run.data.tags
    contexts = sorted(i.tags[0].value for i in run.inputs.dataset_inputs)
    assert contexts == ["eval", "test", "train"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} >= {
        "plots/learning_curves.png",
        "plots/confusion_matrix.png",
        "plots/roc.png",
        "plots/token_lengths.png",
    }
    mv = client.get_model_version_by_alias("rest-model", "champion")
    assert mv.run_id == run.info.run_id and mv.tags["data_digest"] == run.data.tags["data_digest"]


def test_worker_crash_over_rest_ends_failed(ray_cluster, mlflow_server, tmp_path, monkeypatch):
    """A worker dies (a wrapped loop the test passes to fit) with no retries left: FAILED, nothing registered."""
    cfg = load_config(
        None, [*_overrides(tmp_path, mlflow_server, "rest-crash", "rest-crash-model"), "train.max_failures=0"]
    )
    crash = kill_rank_once(rank=0, after_epoch=0, marker=tmp_path / "crashed")
    # jobs.train imports fit when it runs (lazily, for a fast --help): patch it where it lives
    fit = trainer.fit
    monkeypatch.setattr(trainer, "fit", functools.partial(fit, train_loop=crash))
    with pytest.raises(TrainingFailedError):
        train_job.run(cfg)
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("rest-crash").experiment_id])
    assert run.info.status == "FAILED"
    assert client.search_model_versions("name='rest-crash-model'") == []

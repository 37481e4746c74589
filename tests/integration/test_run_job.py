"""`jobs.run` end to end: real local Ray (2 workers), real MLflow sqlite store, real pyfunc on raw text."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from jobs import run as run_job
from pipeline.config_loader import load_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

from tests.integration.corpus import write_corpus

SMALL = ["data.source=files", "data.text_column=review", "data.label_column=sentiment", "data.labels=[neg, pos]",
         "tokenizer.max_length=32", "train.epochs=4", "train.lr=0.01", "promotion.min_metric=0.8",
         "tracking.experiment_name=it", "tracking.registered_model_name=it-model"]


@pytest.fixture(scope="module")
def first_run(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    corpus = write_corpus(root / "reviews.csv")
    SMALL.append(f"data.paths=[{corpus}]")
    cfg = load_config(None, [f"output_root={root}", *SMALL])
    summary = run_job.run(cfg)
    return cfg, summary


def test_one_finished_run_with_params_metrics_and_artifacts(first_run):
    cfg, summary = first_run
    client = MlflowClient(summary.tracking_uri)
    exp = client.get_experiment_by_name("it")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # exactly one run per training job, whatever the worker count
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_id == summary.outcome.run_id
    p = run.data.params
    per_param = {k: int(v) for k, v in p.items() if k.startswith("n_params.") and k not in
                 ("n_params.total", "n_params.trainable")}
    assert "n_params.rnn.weight_ih_l0" in per_param and per_param["n_params.rnn.weight_ih_l0"] == 64 * 16
    assert sum(per_param.values()) == int(p["n_params.total"]) == summary.outcome.n_params
    assert p["train.epochs"] == "4" and p["model.cell"] == "rnn"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # one point per epoch, no duplicates
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model_parameters.txt", "model_parameters.json", "data", "plots"} <= arts
    data_arts = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert "data/manifest.json" in data_arts
    assert run.data.tags["data_digest"] and run.data.tags["tokenizer_digest"]


def test_registered_version_scores_raw_text_and_holds_the_alias(first_run):
    cfg, summary = first_run
    client = MlflowClient(summary.tracking_uri)
    mv = client.get_model_version_by_alias("it-model", "champion")
    assert str(mv.version) == summary.outcome.version and mv.run_id == summary.outcome.run_id
    assert summary.decision.promoted
    assert client.get_model_version("it-model", mv.version).tags["promotion.decision"] == "promoted"
    mlflow.set_tracking_uri(summary.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/it-model@champion")
    out = model.predict(pd.DataFrame({"text": ["这本书很好看", "我们很失望"]}))
    assert list(out["label"]) == ["pos", "neg"]
    assert list(out["label"].map(type).unique()) == [str] and set(out["label"]) <= {"neg", "pos"}
    assert ((out["p_neg"] + out["p_pos"]).sub(1.0).abs() < 1e-5).all()
    assert out["probability"].between(0.5, 1.0).all()


def test_worse_model_is_not_promoted(first_run, ray_cluster):
    cfg, summary = first_run
    worse = load_config(None, [f"output_root={cfg.output_root}", *SMALL, "train.epochs=1", "train.lr=1e-7",
                                  "promotion.min_metric=0.0"])
    second = run_job.run(worse)
    print("champion", summary.decision.candidate, "worse", second.decision.candidate)
    assert second.outcome.version != summary.outcome.version
    assert not second.decision.promoted
    assert second.decision.candidate["accuracy"] < summary.decision.candidate["accuracy"]
    client = MlflowClient(summary.tracking_uri)
    assert str(client.get_model_version_by_alias("it-model", "champion").version) == summary.outcome.version
    tags = client.get_model_version("it-model", second.outcome.version).tags
    assert tags["promotion.decision"] == "rejected" and "does not beat" in tags["promotion.reason"]
    assert math.isfinite(float(tags["promotion.candidate_accuracy"]))

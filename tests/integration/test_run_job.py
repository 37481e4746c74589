"""`jobs.run` end to end: real local Ray (2 workers), real MLflow sqlite store, real pyfunc on raw text."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient
from ray.train import TrainingFailedError

from jobs import run as run_job
from jobs.config_loader import load_config
from pipeline.tracking import tracking_store
from tests.faults import kill_rank_once
from tests.integration.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = [
    "data.source=files",
    "data.text_column=review",
    "data.label_column=sentiment",
    "data.labels=[neg, pos]",
    "tokenizer.max_length=32",
    "train.epochs=6",
    "train.lr=0.01",
    "promotion.min_metric=0.7",
    "tracking.experiment_name=it",
    "tracking.registered_model_name=it-model",
]


@pytest.fixture(scope="module")
def first_run(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    corpus = write_corpus(root / "reviews.csv")
    cfg = load_config(None, [f"output_root={root}", *SMALL, f"data.paths=[{corpus}]"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # short job: sample every second
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
    per_param = {
        k: int(v)
        for k, v in p.items()
        if k.startswith("n_params.") and k not in ("n_params.total", "n_params.trainable")
    }
    assert "n_params.rnn.weight_ih_l0" in per_param and per_param["n_params.rnn.weight_ih_l0"] == 64 * 16
    assert sum(per_param.values()) == int(p["n_params.total"]) == summary.outcome.n_params
    assert p["train.epochs"] == "6" and p["model.cell"] == "rnn"
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert sorted(m.step for m in history) == list(range(6))  # one point per epoch, no duplicates
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model_parameters.txt", "model_parameters.json", "data", "plots"} <= arts
    data_arts = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert "data/manifest.json" in data_arts
    assert run.data.tags["data_digest"] and run.data.tags["tokenizer_digest"]
    note = run.data.tags["mlflow.note.content"]
    assert "test accuracy" in note and "`rnn.weight_ih_l0`" in note
    assert any(k.startswith("system/") for k in run.data.metrics)  # log_system_metrics is on
    inputs = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert len(inputs) == 3 and all(inputs.values())


def test_the_run_fits_the_baseline_and_says_how_the_model_compares(first_run):
    cfg, summary = first_run
    run = MlflowClient(summary.tracking_uri).get_run(summary.outcome.run_id)
    m = run.data.metrics
    assert 0.5 < m["baseline.test_accuracy"] <= 1.0  # one sentiment word per row: easy for n-grams
    assert m["baseline.c"] in cfg.baseline.c_values and 0.0 <= m["baseline.p_model_better"] <= 1.0
    assert m["test_accuracy_minus_baseline"] == pytest.approx(m["test_accuracy"] - m["baseline.test_accuracy"])
    versus = summary.outcome.versus_baseline
    assert versus.baseline.test_metrics["accuracy"] == m["baseline.test_accuracy"]
    assert f"baseline {m['baseline.test_accuracy']:.4f}" in run.data.tags["mlflow.note.content"]
    assert f"baseline      : model {m['test_accuracy']:.4f}" in summary.text()
    assert "baseline" in summary.decision.reason  # the gate's reason names the baseline too
    # 960 training rows on 2 workers: batch 128 would make 4 steps per epoch; the run made >= 50
    assert run.data.params["train.batch_size"] == "9" and "train.batch_size 128 -> 9" in summary.text()


def test_registered_version_scores_raw_text_and_holds_the_alias(first_run):
    cfg, summary = first_run
    client = MlflowClient(summary.tracking_uri)
    mv = client.get_model_version_by_alias("it-model", "champion")
    assert str(mv.version) == summary.outcome.version and mv.run_id == summary.outcome.run_id
    assert summary.decision.promoted
    assert client.get_model_version("it-model", mv.version).tags["promotion.decision"] == "promoted"
    with tracking_store(summary.tracking_uri):
        model = mlflow.pyfunc.load_model("models:/it-model@champion")
    out = model.predict(pd.DataFrame({"text": ["这本书很好看", "我们很失望"]}))
    assert list(out["label"].map(type).unique()) == [str] and set(out["label"]) <= {"neg", "pos"}
    assert ((out["p_neg"] + out["p_pos"]).sub(1.0).abs() < 1e-5).all()
    assert out["probability"].between(0.5, 1.0).all()


def test_worse_model_is_not_promoted(first_run, ray_cluster):
    cfg, summary = first_run
    worse = load_config(
        None,
        [
            f"output_root={cfg.output_root}",
            *SMALL,
            f"data.paths=[{cfg.data.paths[0]}]",
            "train.epochs=1",
            "train.lr=1e-7",
            "promotion.min_metric=0.0",
        ],
    )
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


def test_a_failure_inside_the_run_ends_it_failed_and_registers_nothing(ray_cluster, tmp_path):
    from jobs import train as train_job
    from pipeline.data.prepare import prepare
    from pipeline.data.store import split_files

    corpus = write_corpus(tmp_path / "reviews.csv", rows=300)
    overrides = [
        f"output_root={tmp_path}",
        *SMALL,
        f"data.paths=[{corpus}]",
        "tracking.registered_model_name=crash-model",
    ]
    cfg = load_config(None, overrides)
    prepared = prepare(cfg)
    split_files(prepared.path, "train")[0].write_bytes(b"not parquet")  # the run fails reading its data
    with pytest.raises(pa.ArrowInvalid):
        train_job.run(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("it").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert client.search_model_versions("name='crash-model'") == []


def test_a_named_job_rerun_after_a_crash_resumes_the_same_run(ray_cluster, tmp_path, monkeypatch):
    """Worker dies at epoch 1 with no retries left -> run FAILED; the rerun of the same name, with more
    epochs and retries, continues the same MLflow run from the Ray checkpoint, logging each epoch once."""
    import functools

    from jobs import train as train_job
    from pipeline.train import trainer

    corpus = write_corpus(tmp_path / "reviews.csv", rows=300)
    overrides = [
        f"output_root={tmp_path}",
        *SMALL,
        f"data.paths=[{corpus}]",
        "train.epochs=3",
        "tracking.run_name=nightly",
        "tracking.registered_model_name=resume-model",
        "train.max_failures=0",
    ]
    cfg = load_config(None, overrides)
    crash = kill_rank_once(rank=1, after_epoch=0, marker=tmp_path / "crashed")
    # jobs.train imports fit when it runs (lazily, for a fast --help): patch it where it lives
    fit = trainer.fit
    monkeypatch.setattr(trainer, "fit", functools.partial(fit, train_loop=crash))
    with pytest.raises(TrainingFailedError):
        train_job.run(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("it").experiment_id
    (failed,) = client.search_runs([exp])
    assert failed.info.status == "FAILED"

    monkeypatch.setattr(trainer, "fit", fit)
    more = load_config(None, [*overrides, "train.epochs=4", "train.max_failures=1"])  # keys a resume may change
    outcome = train_job.run(more)
    (run,) = client.search_runs([exp])  # still one run: the same one, now finished
    assert run.info.run_id == failed.info.run_id == outcome.run_id and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
    assert sorted(steps) == [0, 1, 2, 3]  # epoch 0 from the first attempt, 1-3 after resuming; none twice
    assert run.data.tags["config.changed_on_resume"] == "train.epochs: 3 -> 4; train.max_failures: 0 -> 1"
    assert run.data.params["train.epochs"] == "3"  # MLflow never changes a param: the tag says what changed


def test_the_logged_model_shows_the_final_metrics_its_test_dataset_and_its_registered_version(first_run):
    import json

    cfg, summary = first_run
    client = MlflowClient(summary.tracking_uri)
    model_id = summary.outcome.model_uri.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    metrics = {m.key: m for m in logged.metrics}
    last_epoch = summary.outcome.history[-1]["epoch"]
    assert metrics["test_accuracy"].step == metrics["val/accuracy"].step == last_epoch  # not epoch 0's
    assert metrics["test_accuracy"].value == summary.outcome.test_metrics["accuracy"]
    # linked to the test dataset the run logged as an input (the model page's "Datasets" column)
    inputs = {d.dataset.name: d.dataset.digest for d in client.get_run(summary.outcome.run_id).inputs.dataset_inputs}
    test = metrics["test_accuracy"]
    assert test.dataset_name.endswith("-test") and inputs[test.dataset_name] == test.dataset_digest
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "it-model", "version": summary.outcome.version}
    ]  # as mlflow.register_model links it

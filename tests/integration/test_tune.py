"""`jobs.tune` end to end on a tiny corpus: real Ray Tune + Ray Train trials, real MLflow runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from jobs import tune as tune_job
from jobs.config_loader import load_config
from tests.conftest import REPO, s3_keys
from tests.integration.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_trials_become_child_runs_and_the_best_config_loads(ray_cluster, tmp_path):
    corpus = write_corpus(tmp_path / "reviews.csv", rows=300)
    cfg = load_config(
        tune_job.DEFAULT_TUNE_CONFIG,
        [
            f"output_root={tmp_path}",
            "data.source=files",
            f"data.paths=[{corpus}]",
            "data.text_column=review",
            "data.label_column=sentiment",
            "data.labels=[neg, pos]",
            "train.epochs=2",
            "tracking.experiment_name=tune-it",
            "tune.num_samples=2",
            "tune.time_budget_s=null",
            "tune.space.cell=[gru]",
            "tune.space.bidirectional=[false]",
            "tune.space.pooling=[max]",
            "tune.space.embedding_dim=[8]",
            "tune.space.hidden_dim=[8]",
            "tune.space.dropout=[0.0]",
            "tune.space.embedding_dropout=[0.0]",
            "tune.space.word_dropout=[0.3]",
            "tune.space.ngram_buckets=[4096]",
            "tune.space.ngram_char_buckets=[2048]",  # the driver hands the workers the vocabulary
            "tune.space.ngram_weighting=[idf]",  # ... and the bags' idf, which the registered model keeps
            "tune.space.lr=[0.01]",
            "tune.space.batch_size=[32, 64]",
            # the final --register run trains these (and word dropout and the n-gram path) on 2 DDP workers:
            # two backward passes per step, averaged
            "tune.space.ema_decay=[0.99]",
            "tune.space.adversarial_epsilon=[1.0]",
            "train.batch_size=64",  # the first trial's (tune.start_from_config)
            "tune.space.tokenizer_kind=[wordlevel]",
            "tune.space.max_length=[32]",
            "tune.seed=3",
            # re-selection: both trials trained again on one fresh train/validation split
            "tune.select_top=2",
            "tune.select_splits=1",
            "tune.select_time_budget_s=null",
        ],
    )
    out = tmp_path / "best-found.yaml"
    summary = tune_job.run(cfg, out, register=True)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tune-it").experiment_id
    parent = client.get_run(summary.search.parent_run_id)
    assert parent.info.status == "FINISHED"
    runs = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert all(r.info.status == "FINISHED" for r in runs)
    children = [r for r in runs if r.data.tags["tune.phase"] == "search"]
    reselected = [r for r in runs if r.data.tags["tune.phase"] == "selection"]
    assert len(children) == 2 and len(reselected) == 2
    for child in children:  # rank 0 of each trial logged its epochs into its own child run
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/accuracy")]
        assert sorted(steps) == [0, 1]
        assert child.data.params["tokenizer.max_length"] == "32" and child.data.params["scaling.num_workers"] == "1"
    assert {c.data.params["sample.batch_size"] for c in children} <= {"32", "64"}
    assert "64" in {c.data.params["sample.batch_size"] for c in children}  # the job config's own value was tried
    # 240 training rows on one worker: the batch shrinks until an epoch makes train.min_steps_per_epoch steps
    assert {c.data.params["train.batch_size"] for c in children} == {"8"}
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.json", "plots", "best_config"} <= arts
    assert "baseline.validation_accuracy" in parent.data.metrics
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(summary.search.best_trial.best)
    assert len(summary.search.selection) == 2
    # Tune's per-trial dataframes carry val_loss: every trial that reported has its tie-break
    assert all(t.tie_break > 0 for t in summary.search.trials if t.epochs)

    # the two distinct trials were trained again on a re-split (same data, another validation split)
    selection = summary.search.selection
    assert {c.trial.run_id for c in selection} == {c.info.run_id for c in children}
    assert {r.data.tags["tune.candidate"] for r in reselected} == {c.trial.trial_id for c in selection}
    original = {c.data.tags["data_path"] for c in children}
    assert {r.data.tags["data_path"] for r in reselected}.isdisjoint(original)
    assert all("-resplit-3-0" in r.data.tags["data_path"] for r in reselected)
    starts = [c for c in selection if c.start]  # tune.select_start: the start trial is marked
    assert len(starts) == 1 and starts[0].trial.sample["batch_size"] == 64
    chosen = summary.search.chosen
    assert chosen is selection[0] and chosen.scored == 1 and summary.search.best_trial == chosen.trial
    assert parent.data.metrics["selected_mean_val_accuracy"] == pytest.approx(chosen.mean)
    assert "selection.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "### Re-selection" in parent.data.tags["mlflow.note.content"]

    best = load_config(out)  # what `python -m jobs.run --config best-found.yaml` would load
    assert out.read_text().startswith("# Found by python -m jobs.tune")
    assert "fresh train/validation splits" in out.read_text().splitlines()[0]
    assert best.train.batch_size == summary.search.best_trial.sample["batch_size"]
    assert best.model.hidden_dim == 8 and best.tokenizer.max_length == 32
    assert best.scaling.num_workers == 2  # the final run keeps the job's workers, not the trials'
    assert best.data.paths == (str(corpus),)

    # --register: the best config trained on the job's 2 workers, registered and gated, as jobs.run does
    registered = summary.registered
    assert registered.outcome.run_id not in {c.info.run_id for c in children}
    assert client.get_run(registered.outcome.run_id).data.params["scaling.num_workers"] == "2"
    assert client.get_run(registered.outcome.run_id).data.params["model.hidden_dim"] == "8"
    assert client.get_run(registered.outcome.run_id).data.params["train.adversarial_epsilon"] == "1.0"
    assert client.get_run(registered.outcome.run_id).data.params["model.ngram_char_buckets"] == "2048"
    assert client.get_run(registered.outcome.run_id).data.params["model.ngram_weighting"] == "idf"
    version = client.get_model_version(cfg.tracking.registered_model_name, registered.outcome.version)
    assert version.tags["promotion.decision"] in ("promoted", "rejected")


_TUNE_ON_S3 = """
import sys
from jobs import tune as tune_job
from jobs.config_loader import load_config
cfg = load_config(tune_job.DEFAULT_TUNE_CONFIG, sys.argv[2:])
tune_job.run(cfg, sys.argv[1])  # starts its own local Ray cluster, whose workers get this environment
"""


def test_a_search_on_object_storage_writes_nothing_locally(s3_bucket, tmp_path):
    # output_root and --output on s3://: Tune's experiment, the trials' checkpoints, the prepared data,
    # the parent run's artifacts and the tuned YAML all land in the bucket. Before, Tune's storage, the
    # artifacts and the YAML went to a local folder named "s3:" (Path("s3://b/r") is "s3:/b/r").
    # In a process of its own: its Ray workers must start with the S3 server's variables.
    corpus = write_corpus(tmp_path / "reviews.csv", rows=200)
    small = ["embedding_dim=[8]", "hidden_dim=[8]", "max_length=[32]", "tokenizer_kind=[wordlevel]", "batch_size=[32]"]
    overrides = [
        f"output_root={s3_bucket}/runs",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "data.source=files",
        f"data.paths=[{corpus}]",
        "data.text_column=review",
        "data.label_column=sentiment",
        "train.epochs=1",
        "tune.num_samples=1",
        "tune.time_budget_s=null",
        "tune.select_top=0",
        *(f"tune.space.{item}" for item in small),
    ]
    url = f"{s3_bucket}/configs/best-found.yaml"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", _TUNE_ON_S3, url, *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert load_config(url).model.hidden_dim == 8
    keys = s3_keys(s3_bucket)
    experiment = re.compile(r"runs/ray_results/tune-\d{8}-\d{6}/tuner\.pkl$")  # Tune's own state, not a trial's
    assert any(experiment.match(k) for k in keys), keys
    assert any(k.startswith("runs/mlartifacts/") and k.endswith("best_config/best-found.yaml") for k in keys)
    assert any(k.startswith("runs/data/") for k in keys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock", "reviews.csv"]

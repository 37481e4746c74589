"""A scheduled run (env RNN_SCHEDULE_NAME, as infra/k8s sets it) holds its schedule's lease: a second
run at the same time exits 0 with one line, a retry after a failed run resumes that run by name."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from jobs import run as run_job
from jobs.config_loader import load_config
from pipeline.registry.schedule_lease import SCHEDULE_ENV, lease_name, schedule_lease
from pipeline.tracking import tracking_store
from tests.integration.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _overrides(tmp_path):
    corpus = write_corpus(tmp_path / "reviews.csv", rows=400)
    return [
        f"output_root={tmp_path / 'out'}",
        "data.source=files",
        f"data.paths=[{corpus}]",
        "data.text_column=review",
        "data.label_column=sentiment",
        "tokenizer.max_length=32",
        "train.epochs=2",
        "tracking.system_metrics=false",
        "promotion.min_metric=0.0",
        "ray.num_cpus=2",
    ]


def test_a_second_scheduled_run_exits_0_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(SCHEDULE_ENV, "nightly")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    with tracking_store(uri) as client, schedule_lease(client, "nightly", new_run_name="holder", fingerprint="x"):
        code = run_job.main([*_overrides(tmp_path), "tracking.schedule_wait_s=0"])
    err = capsys.readouterr().err.rstrip().splitlines()
    assert code == 0
    assert err[-1].startswith("skipped: schedule 'nightly' is already running") and "holder" in err[-1]
    assert not (tmp_path / "out" / "ray_results").exists()  # nothing trained


def test_a_retry_after_a_failed_run_resumes_it(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv(SCHEDULE_ENV, "nightly")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = _overrides(tmp_path)
    fingerprint = run_job.schedule_fingerprint(load_config(None, overrides))
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    with tracking_store(uri) as client, pytest.raises(RuntimeError):  # the earlier run failed
        with schedule_lease(client, "nightly", new_run_name="nightly-earlier", fingerprint=fingerprint):
            raise RuntimeError("driver lost")
    summary = run_job.run(load_config(None, overrides))
    client = MlflowClient(uri)
    assert client.get_run(summary.outcome.run_id).info.run_name == "nightly-earlier"
    assert (tmp_path / "out" / "ray_results" / "nightly-earlier").is_dir()
    assert client.search_registered_models(f"name='{lease_name('nightly')}'") == []  # released on success

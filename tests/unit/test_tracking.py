"""MLflow side-effect helpers: the tracking-URI scope and rank-zero logging."""

from __future__ import annotations

import os
import threading

from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils

from pipeline.config_loader import load_config
from pipeline.tracking import RankZeroLogger, resolve_tracking_uri, tracking_uri_scope


def test_scope_restores_uri_and_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = tracking_utils._tracking_uri
    with tracking_uri_scope(f"sqlite:///{tmp_path / 'a.db'}"):
        assert os.environ["MLFLOW_TRACKING_URI"].endswith("a.db")
    assert "MLFLOW_TRACKING_URI" not in os.environ and tracking_utils._tracking_uri == before


def test_concurrent_scopes_do_not_leak(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen, barrier = [], threading.Barrier(4)

    def work(i):
        barrier.wait()
        for _ in range(20):
            with tracking_uri_scope(f"sqlite:///{tmp_path / f'{i}.db'}"):
                seen.append(os.environ["MLFLOW_TRACKING_URI"].endswith(f"{i}.db"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen) and len(seen) == 80
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_default_store_is_sqlite_under_output_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(None, [f"output_root={tmp_path}"])
    assert resolve_tracking_uri(cfg) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(cfg) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri(load_config(None, ["tracking.tracking_uri=sqlite:///x.db"])) == "sqlite:///x.db"


def test_only_rank_zero_writes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    RankZeroLogger(uri, run_id, rank=1).log_metrics({"val_loss": 9.0}, step=0)
    RankZeroLogger(uri, run_id, rank=0).log_metrics({"val_loss": 1.0}, step=0)
    assert [m.value for m in client.get_metric_history(run_id, "val_loss")] == [1.0]

"""MLflow side effects, all through this module.

The driver owns the run's lifecycle (so a crash anywhere, a worker's included, ends the run
FAILED or KILLED instead of leaving it RUNNING); inside Ray workers only rank 0 writes, through
`RankZeroLogger`, into that same run: exactly one run per training job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from schemas.config import JobConfig

_SECRET_KEY = re.compile(r"(password|passwd|secret|token(?!iz)|api[_-]?key|credential)", re.I)
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@", re.I)


def mask_secrets(key: str, value: Any) -> Any:
    """Hide passwords in URIs (`postgresql://u:pw@h` -> `postgresql://u:***@h`) and secret-named keys."""
    if value is None:
        return value
    if _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, str):
        return _URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    return value


def resolve_tracking_uri(cfg: JobConfig) -> str:
    """Config, then MLFLOW_TRACKING_URI, then a sqlite store under output_root (absolute, for workers)."""
    if cfg.tracking.tracking_uri:
        return cfg.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(cfg.output_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


@contextmanager
def tracking_store(uri: str) -> Iterator[MlflowClient]:
    """A job's boundary: point MLflow at `uri` and yield the one client the job passes around.

    MLflow's fluent API (runs, model logging, `models:/` loading) reads a process-global URI, so
    it is set here once per job. `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, which
    `resolve_tracking_uri` reads: the previous value is put back on exit, or a second job in the
    same process (tests, notebooks) would resolve to this job's store. Public API only.
    """
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield _open_store(uri)
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets both the global and the variable


def _open_store(uri: str) -> MlflowClient:
    """A client on `uri`; a local sqlite store's schema is created (or migrated) under a file lock.

    MLflow creates the tables when a process first opens a store (the client's constructor does);
    two jobs started at once on a fresh file both run the migrations and one dies with `duplicate
    column name`. Opening both halves of the store (tracking, registry) one process at a time leaves
    every later open a no-op check.
    """
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return MlflowClient(uri)  # a server or a shared database: its owner migrates it (mlflow db upgrade)
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock"):
        client = MlflowClient(uri)
        client.search_registered_models(max_results=1)
    return client


def ensure_experiment(client: MlflowClient, name: str, output_root: str) -> str:
    """Experiment id, creating it (with artifacts under output_root for a local store)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if client.tracking_uri.startswith("sqlite:"):
        location = (Path(output_root).resolve() / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently by another job
        return client.get_experiment_by_name(name).experiment_id


def find_run_by_name(client: MlflowClient, experiment_id: str, run_name: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


@contextmanager
def mlflow_run(client: MlflowClient, cfg: JobConfig, run_name: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """The job's one MLflow run, active for the block; ends FINISHED, FAILED, or KILLED (Ctrl-C/SIGTERM).

    A job given `tracking.run_name` resumes the newest run of that name (same run id, so a rerun
    after a crash continues it instead of starting a second one); otherwise a new run starts.
    """
    experiment_id = ensure_experiment(client, cfg.tracking.experiment_name, cfg.output_root)
    resume_id = find_run_by_name(client, experiment_id, run_name) if cfg.tracking.run_name else None
    if resume_id:
        run = mlflow.start_run(run_id=resume_id, log_system_metrics=cfg.tracking.system_metrics)
        mlflow.set_tags(tags)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags,
                               log_system_metrics=cfg.tracking.system_metrics)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def flatten(cfg: BaseModel, prefix: str = "") -> dict[str, Any]:
    """`{'train.epochs': 5, ...}`: the resolved config as MLflow params."""
    out: dict[str, Any] = {}
    for name, value in cfg:
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out.update(flatten(value, key + "."))
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def log_params(params: dict[str, Any]) -> None:
    """Log params into the active run, masked and in batches (MLflow caps 100 per call)."""
    items = [(k, mask_secrets(k, v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        mlflow.log_params({k: str(v)[:6000] for k, v in items[i : i + 100]})


class RankZeroLogger:
    """The one MLflow writer inside the training function: a no-op on every rank but 0.

    It logs each step at most once: a worker group can die after rank 0 logged an epoch but
    before Ray registered that epoch's checkpoint; the restarted group then redoes the epoch
    (same seed: same numbers) and must not log it twice. Steps the run already holds are read
    once, when the logger is made.
    """

    def __init__(self, tracking_uri: str | None, run_id: str | None, rank: int, step_metric: str = "val_loss"):
        self.enabled = rank == 0 and bool(tracking_uri and run_id)
        self._client = MlflowClient(tracking_uri) if self.enabled else None
        self._run_id = run_id
        self._logged: set[int] = (
            {m.step for m in self._client.get_metric_history(run_id, step_metric)} if self.enabled else set()
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled or step in self._logged:
            return
        ts = mlflow.utils.time.get_current_time_millis()
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        self._client.log_batch(self._run_id, metrics=batch)
        self._logged.add(step)

"""MLflow side effects, all through this module.

The driver owns the run's lifecycle (so a crash anywhere, a worker's included, ends the run
FAILED or KILLED instead of leaving it RUNNING); inside Ray workers only rank 0 writes, through
`RankZeroLogger`, into that same run: exactly one run per training job.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

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


# MLflow's fluent tracking URI is process-global: scopes in different threads (concurrent
# promotions, say) must not interleave, or one would restore the other's URI. Re-entrant, since
# a training scope contains the registration's.
_SCOPE_LOCK = threading.RLock()


@contextmanager
def tracking_uri_scope(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for a block, then restore what was there.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI to the process environment, so
    without this a second job in the same process (tests, notebooks, a scheduler) would
    silently write into the first job's store.
    """
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _SCOPE_LOCK:
        saved_env = os.environ.get("MLFLOW_TRACKING_URI")
        saved = tracking_utils._tracking_uri
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            tracking_utils._tracking_uri = saved
            if saved_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = saved_env


def ensure_experiment(cfg: JobConfig, tracking_uri: str) -> str:
    """Experiment id, creating it (with artifacts under output_root for a local store)."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment_name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:"):
        location = (Path(cfg.output_root).resolve() / "mlartifacts").as_uri()
    try:
        return client.create_experiment(cfg.tracking.experiment_name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently by another job
        return client.get_experiment_by_name(cfg.tracking.experiment_name).experiment_id


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

"""MLflow side effects, all through this module.

The driver owns the run's lifecycle (so a crash anywhere, a worker's included, ends the run
FAILED or KILLED instead of leaving it RUNNING); inside Ray workers only rank 0 writes, through
`RankZeroLogger`, into that same run: exactly one run per training job.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from pipeline.console import say
from pipeline.data.store import is_remote, local_path
from pipeline.errors import UserInputError
from pipeline.masking import mask_secrets
from schemas.config import JobConfig


def resolve_tracking_uri(cfg: JobConfig) -> str:
    """Config, then MLFLOW_TRACKING_URI, then a sqlite store under a local output_root (absolute, for
    workers). Raises UserInputError for an object-store output_root without either: no file there."""
    if cfg.tracking.tracking_uri:
        return cfg.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if is_remote(cfg.output_root):
        # Path("s3://b/runs") is the local folder "s3:/b/runs": the store would land there, unseen.
        raise UserInputError(
            f"output_root={cfg.output_root!r} is object storage, and the default MLflow store is a sqlite file "
            "under output_root: set tracking.tracking_uri (or MLFLOW_TRACKING_URI) to an MLflow server "
            "(http://...) or to sqlite:////absolute/path/mlflow.db"
        )
    root = local_path(cfg.output_root).resolve()
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
    """Experiment id, creating it (with artifacts under output_root, local or object storage, for a
    sqlite store; a server's experiments use its own artifact root)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if client.tracking_uri.startswith("sqlite:") and is_remote(output_root):
        location = f"{output_root.rstrip('/')}/mlartifacts"  # s3://...: MLflow writes there (not "s3:/..." locally)
    elif client.tracking_uri.startswith("sqlite:"):
        location = (local_path(output_root).resolve() / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND_TAG]))
    except mlflow.exceptions.MlflowException:  # created concurrently by another job
        return client.get_experiment_by_name(name).experiment_id


# MLflow 3's UI opens on its GenAI views; this query parameter selects the classic ML view (runs,
# parameters, metric charts), and the experiment tag makes it that experiment's default.
CLASSIC_VIEW = "workflowType=machine_learning"
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


def run_page_url(server: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI at `server` (http://host:port), in the classic ML view."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{CLASSIC_VIEW}"


def registered_model_url(server: str, name: str) -> str:
    return f"{server.rstrip('/')}/#/models/{name}?{CLASSIC_VIEW}"


def find_run_by_name(client: MlflowClient, experiment_id: str, run_name: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.runName` = '{run_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
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
        run = mlflow.start_run(
            experiment_id=experiment_id, run_name=run_name, tags=tags, log_system_metrics=cfg.tracking.system_metrics
        )
    try:
        with run_heartbeat(client, run.info.run_id):
            try:
                close_abandoned_runs(client, experiment_id, run.info.run_id)
            except mlflow.exceptions.MlflowException as e:  # housekeeping (e.g. another user's run): never fatal
                say(f"runs left RUNNING were not closed: {str(e).splitlines()[0]}")
            yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException as e:
        _record_failure(e, run)
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


# A live job pushes its run's `heartbeat.expires_at` (epoch seconds) forward every TTL/4; a run still
# RUNNING after it passed was left by a driver that died (SIGKILL, OOM, a lost node): nothing else would
# ever end it. The TTL is long enough that a stalled store or a GC pause does not make a live run look dead.
HEARTBEAT_TAG = "heartbeat.expires_at"
HEARTBEAT_TTL_S = 120.0


@contextmanager
def run_heartbeat(client: MlflowClient, run_id: str, ttl_s: float = HEARTBEAT_TTL_S) -> Iterator[None]:
    """Keep `run_id`'s heartbeat tag `ttl_s` ahead of now while the block runs (a daemon thread)."""

    def beat() -> None:
        client.set_tag(run_id, HEARTBEAT_TAG, f"{time.time() + ttl_s:.0f}")

    def loop() -> None:
        while not stop.wait(ttl_s / 4):
            try:
                beat()
            except Exception:  # the next beat retries; the TTL covers a few missed ones
                pass

    beat()
    stop = threading.Event()
    thread = threading.Thread(target=loop, name="mlflow-run-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def close_abandoned_runs(client: MlflowClient, experiment_id: str, closer_run_id: str) -> list[str]:
    """End FAILED the runs of the experiment that a dead driver left RUNNING: their heartbeat expired.

    Each is tagged `closed_by=<closer_run_id>` and `closed_reason`, with one console line. A run without a
    heartbeat tag (written by an older version, or by another tool) is left alone: nothing proves its owner
    gone. A named run left this way is also resumed by its next job (same name); either way it ends.
    Returns the closed run ids."""
    now = time.time()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    closed = []
    for r in running:
        try:
            expired_at = float(r.data.tags[HEARTBEAT_TAG])
        except (KeyError, ValueError):
            continue
        if r.info.run_id == closer_run_id or expired_at >= now:
            continue
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expired_at))
        client.set_tag(r.info.run_id, "closed_by", closer_run_id)
        client.set_tag(r.info.run_id, "closed_reason", f"left RUNNING by a driver whose heartbeat stopped ({stamp})")
        client.set_terminated(r.info.run_id, "FAILED")
        say(f"closed run {r.info.run_name} ({r.info.run_id}) FAILED: left RUNNING, heartbeat expired at {stamp}")
        closed.append(r.info.run_id)
    return closed


# ---- resuming a named run: which configuration changes it accepts ----------------------------------

REQUESTED_CONFIG_TAG = "config.requested"
CHANGED_ON_RESUME_TAG = "config.changed_on_resume"
# Keys a resumed run may change: they do not alter what the checkpoints hold or how the data was cut.
# More epochs continue from the last checkpoint; retries, where the run is tracked and registered, the
# workers (checkpoints load on CPU first, then move to the device), the cluster and the gate are
# settings of this attempt.
RESUMABLE_KEYS = ("train.epochs", "train.max_failures", "tracking.", "scaling.", "ray.", "promotion.", "tune.")


TAG_LIMIT = 8000  # characters of an MLflow tag value: a longer one fails the run's creation


def _digest(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _as_digest(encoded: str) -> str:
    """One form for comparing a stored value: its digest (JSON text never starts with "sha256:")."""
    return encoded if encoded.startswith("sha256:") else _digest(encoded)


def _encoded(key: str, value: Any, limit: int = 200) -> str:
    """A config value as stored in the tag: JSON, secrets masked, long ones (data.paths) as a digest."""
    text = json.dumps(mask_secrets(key, value), default=str, sort_keys=True)
    return text if len(text) <= limit else _digest(text)


def requested_config(cfg: JobConfig) -> dict[str, str]:
    """The configuration a job was asked to run (before adapt_to_corpus), as the keys that differ from
    JobConfig's defaults: what `config.requested` stores. It must fit a tag (TAG_LIMIT): when the values
    as JSON do not, every value longer than its digest is stored as the digest (config_changes compares
    either form)."""
    defaults = flatten(JobConfig())
    changed = {k: v for k, v in flatten(cfg).items() if k != "tracking.run_name" and v != defaults.get(k)}
    encoded = {k: _encoded(k, v) for k, v in changed.items()}
    if len(json.dumps(encoded)) > TAG_LIMIT:
        encoded = {k: _encoded(k, v, limit=len(_digest(""))) for k, v in changed.items()}
    return encoded


def config_changes(stored: dict[str, str], cfg: JobConfig) -> dict[str, tuple[str, str]]:
    """{key: (old, new)} between a run's stored requested config and `cfg`; a missing key is the default.
    A stored digest matches the same value written out."""
    defaults = {k: _encoded(k, v) for k, v in flatten(JobConfig()).items()}
    new = requested_config(cfg)
    changes = {}
    for key in sorted(stored.keys() | new.keys()):
        old_value, new_value = stored.get(key, defaults.get(key, "unset")), new.get(key, defaults.get(key, "unset"))
        if _as_digest(old_value) != _as_digest(new_value):
            changes[key] = (old_value, new_value)
    return changes


def check_resume(client: MlflowClient, cfg: JobConfig) -> str | None:
    """Before any work: may a job named `tracking.run_name` resume that run with this configuration?

    Returns None (nothing to resume, or the same configuration) or a line listing the changes of keys that
    may change (RESUMABLE_KEYS). Raises UserInputError, one line listing every other changed key (old ->
    new): the checkpoints and metrics of that run belong to its first configuration. A run logged before
    the configuration was stored on it is not checked."""
    name = cfg.tracking.run_name
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name) if name else None
    run_id = find_run_by_name(client, experiment.experiment_id, name) if experiment else None
    stored = client.get_run(run_id).data.tags.get(REQUESTED_CONFIG_TAG) if run_id else None
    if stored is None:
        return None
    changes = config_changes(json.loads(stored), cfg)
    listed = {k: f"{k}: {old} -> {new}" for k, (old, new) in changes.items()}
    refused = [line for k, line in listed.items() if not k.startswith(RESUMABLE_KEYS)]
    if refused:
        raise UserInputError(
            f"tracking.run_name {name!r} resumes run {run_id}, which was started with another configuration "
            f"({'; '.join(refused)}); only train.epochs, train.max_failures, tracking.*, scaling.*, ray.*, "
            f"promotion.* may change on resume: set those keys back or use another tracking.run_name"
        )
    return "; ".join(listed.values()) or None


def _record_failure(error: BaseException, run: mlflow.ActiveRun) -> None:
    """Keep the traceback on the run (the quiet console prints one line) and tell the caller which
    run failed, so its last line can name the run and the command that resumes it."""
    try:
        mlflow.log_text(traceback.format_exc(), "error.txt")
    except Exception:  # the store itself may be what failed; the run still ends FAILED
        pass
    try:
        error.mlflow_run = (run.info.run_id, run.info.run_name)  # read by jobs.cli.failure_line
    except AttributeError:  # exceptions with __slots__
        pass


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


# MLflow groups metric charts by the prefix before "/" and orders the groups alphabetically, then the
# unprefixed metrics, then system/ (CPU, memory). So the learning curves go under train/ and val/
# (first), the held-out scores keep flat names (test_accuracy: one row of bars after the curves; a
# test/ group would sort before train/). The training loop and the config keep the flat names too
# (train.early_stopping_metric=val_loss).
MLFLOW_EPOCH_METRICS = {
    "train_loss": "train/loss",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "samples_per_s": "train/samples_per_s",
    "epoch_s": "train/epoch_s",
    "lr": "train/lr",
}


def epoch_metric_names(metrics: dict[str, float], constant_lr: bool) -> dict[str, float]:
    """One epoch's report as MLflow time series: grouped names; values that do not change over
    epochs (a constant lr is already the `train.lr` param; the best epoch is a tag at the end) left out."""
    skip = {"epoch", "best_epoch"} | ({"lr"} if constant_lr else set())
    return {MLFLOW_EPOCH_METRICS.get(k, k): v for k, v in metrics.items() if k not in skip}


def held_out_metric_names(metrics: dict[str, float]) -> dict[str, float]:
    return {f"test_{k}": v for k, v in metrics.items()}


def log_held_out_metrics(
    client: MlflowClient, run_id: str, model_id: str, metrics: dict[str, float], step: int, dataset: tuple[str, str]
) -> None:
    """The test scores (`test_<name>`), at `step`, into the run and onto its logged model `model_id` in one
    batch, each naming the test dataset `(name, digest)`: MLflow links a logged model to the datasets its
    metrics name (the model's page lists them). Logged after the model, because the copy MLflow makes of
    the run's metrics when a model is logged drops the dataset (run metrics do not keep it)."""
    ts = mlflow.utils.time.get_current_time_millis()
    name, digest = dataset
    batch = [
        Metric(k, float(v), ts, step, model_id=model_id, dataset_name=name, dataset_digest=digest, run_id=run_id)
        for k, v in held_out_metric_names(metrics).items()
    ]
    client.log_batch(run_id, metrics=batch)


def log_params(params: dict[str, Any]) -> None:
    """Log params into the active run, masked and in batches (MLflow caps 100 per call). Unset
    (None) values are left out: a `None` in the UI's parameter table says nothing. A param the run
    already holds with another value (a resumed run whose train.epochs changed: MLflow never changes a
    param) keeps its first value; the change is the run's `config.changed_on_resume` tag."""
    run = mlflow.active_run()
    held = mlflow.get_run(run.info.run_id).data.params if run else {}
    items = [(k, str(mask_secrets(k, v))[:6000]) for k, v in params.items() if v is not None]
    items = [(k, v) for k, v in items if held.get(k, v) == v]
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


class RankZeroLogger:
    """The one MLflow writer inside the training function: a no-op on every rank but 0.

    It logs each step at most once: a worker group can die after rank 0 logged an epoch but
    before Ray registered that epoch's checkpoint; the restarted group then redoes the epoch
    (same seed: same numbers) and must not log it twice. Steps the run already holds are read
    once, when the logger is made.
    """

    def __init__(
        self,
        tracking_uri: str | None,
        run_id: str | None,
        rank: int,
        step_metric: str = "val/loss",
        constant_lr: bool = False,
    ):
        self.constant_lr = constant_lr
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
        named = epoch_metric_names(metrics, self.constant_lr)
        batch = [Metric(k, float(v), ts, step) for k, v in named.items()]
        self._client.log_batch(self._run_id, metrics=batch)
        self._logged.add(step)

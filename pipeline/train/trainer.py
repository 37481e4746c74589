"""Driver side of training: one TorchTrainer fit over the prepared data, resumable by name."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from tokenizers import Tokenizer

from pipeline import console
from pipeline.data.store import StorePath, filesystem, is_remote, load_manifest, local_file
from pipeline.data.tokenizer import vocabulary
from pipeline.errors import raise_job_interrupted
from pipeline.model import check_padding_side
from pipeline.train.idf import document_frequencies
from pipeline.train.loop import train_loop_per_worker
from pipeline.train.progress import epoch_progress
from pipeline.train.state import Metrics, StateDict, TrainState, load_checkpoint, load_newest_usable
from pipeline.train.stream import check_spare_cpus, choose_loading, data_config, stream_datasets
from schemas.config import JobConfig
from schemas.features import Manifest


@dataclass(frozen=True)
class TrainResult:
    metrics: Metrics  # the last epoch's report
    history: list[Metrics]  # every epoch's report, once each, resumed epochs included
    state: TrainState  # the last checkpoint, as the loop wrote it
    model: StateDict  # the weights to ship: the best epoch's under early stopping, else the last epoch's
    best_epoch: int | None  # the epoch whose weights are in `model`


def checkpoint_storage(cfg: JobConfig) -> tuple[str, pafs.FileSystem | None]:
    """Ray Train's storage for `<output_root>/ray_results`: (storage_path, storage_filesystem).

    A local output_root gives an absolute folder (no filesystem: Ray picks the local one); an object
    store URL (s3://bucket/prefix) gives the path inside the bucket and pyarrow's S3 filesystem, so
    every worker uploads its checkpoints there and no folder is shared between nodes.
    """
    if is_remote(cfg.output_root):
        fs, inner = filesystem(f"{cfg.output_root.rstrip('/')}/ray_results")
        return inner, fs
    storage = Path(cfg.output_root).resolve() / "ray_results"
    storage.mkdir(parents=True, exist_ok=True)
    return str(storage), None


def bag_inputs(data_path: StorePath, manifest: Manifest, cfg: JobConfig) -> dict[str, Any]:
    """What the workers' n-gram bags need from the store, read here once (streaming workers never open
    it): `vocabulary` (the tokens by id, model.ngram_char_buckets; else None) and `idf` (the bags' idf,
    model.ngram_weighting=idf; else {}; a resumed run takes its checkpoint's). train_worker's keywords."""
    tokens = stored_vocabulary(data_path, manifest) if cfg.model.ngram_char_buckets else None
    return {"vocabulary": tokens, "idf": document_frequencies(data_path, manifest, cfg, tokens)}


def _data_location(data_path: StorePath) -> str:
    """What workers read: a URL as it is, a local folder as an absolute path."""
    return str(data_path) if is_remote(data_path) else str(Path(data_path).resolve())


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only there can handlers be set


class _JobTrainer(TorchTrainer):
    """TorchTrainer whose fit() keeps the job's signal contract.

    Ray's fit() installs its own SIGINT handler (abort the controller, then return normally, after
    which the job would go on to publish the model) and leaves SIGTERM to ray.init's sys.exit(15).
    Here both signals abort the controller as Ray does (workers stop, checkpoints stay) and then
    raise JobInterrupted, so the MLflow run ends KILLED. Ray is pinned (pyproject.toml): this hook
    is the one place fit() sets a handler.
    """

    def _register_sigint_handler(self, controller) -> None:
        if not _in_main_thread():  # e.g. a Tune trial: Ray's own behaviour
            return super()._register_sigint_handler(controller)

        def handler(signum, frame):
            signal.signal(signum, raise_job_interrupted)  # a second signal stops waiting for the abort
            try:
                ray.get(controller.abort.remote())
            except ray.exceptions.RayActorError:
                pass  # the controller is already gone
            raise_job_interrupted(signum, frame)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)


def check_compatible(cfg: JobConfig, data_path: StorePath) -> None:
    """Config checks that need the prepared data. Raises UserInputError naming the fix."""
    check_padding_side(cfg.model, load_manifest(data_path).padding_side)


def stored_vocabulary(data_path: StorePath, manifest: Manifest) -> list[str]:
    """The prepared data's tokens by id (pipeline.data.tokenizer.vocabulary)."""
    return vocabulary(Tokenizer.from_file(str(local_file(data_path, manifest.tokenizer_file))))


def check_resumable(run_dir: Path) -> None:
    """Refuse, before any worker starts, a run whose kept checkpoints are all unreadable (a worker
    would fail on each restart); one unreadable newest checkpoint is only skipped (load_newest_usable)."""
    kept = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())  # not Ray's snapshot .json
    if kept:
        load_newest_usable(str(kept[-1]))


def choose_weights(state: TrainState, early_stopping: bool) -> tuple[StateDict, int | None]:
    """(weights to ship, their epoch): the best epoch's under early stopping, else the last epoch's
    (with train.ema_decay, the averaged weights: those were validated, and are what early stopping kept)."""
    if early_stopping and state.early_stopping.best_model is not None:
        return state.early_stopping.best_model, state.early_stopping.best_epoch
    averaged = state.averaged_model
    return (state.model if averaged is None else averaged), state.epoch


def fit(
    cfg: JobConfig,
    data_path: StorePath,
    run_name: str,
    tracking_uri: str | None,
    run_id: str | None,
    *,
    train_loop: Callable[[dict[str, Any]], None] = train_loop_per_worker,
    callbacks: list | None = None,
    on_epoch: Callable[[Metrics], None] | None = None,
) -> TrainResult:
    """Train on the prepared data at `data_path`. Rank 0 logs epoch metrics into MLflow run `run_id`.

    Every epoch is checkpointed into `<output_root>/ray_results/<run_name>`; after a worker dies the
    group restarts from the last checkpoint (up to train.max_failures times), and a rerun with the same
    `run_name` and storage resumes there instead of starting over (a finished run returns at once).
    `train_loop` is what each worker runs with the loop config (tests wrap the default to stop a worker).
    `callbacks` are Ray Train callbacks (jobs.tune passes Tune's TuneReportCallback, which forwards
    each epoch's report to the trial).
    `on_epoch` runs in this process with rank 0's metrics of each epoch, once (the console's epoch line).
    Raises UserInputError for a config the prepared data cannot serve, and
    ray.train.TrainingFailedError when the workers fail beyond `train.max_failures`.
    """
    check_compatible(cfg, data_path)
    manifest = load_manifest(data_path)
    loading = choose_loading(cfg.train, manifest)
    storage, storage_fs = checkpoint_storage(cfg)
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = 1
    loop_config = {
        "job": cfg.model_dump(mode="json"),
        "data_path": _data_location(data_path),
        "tracking_uri": tracking_uri,
        "run_id": run_id,
        "data_loading": loading,
        "manifest": manifest.model_dump(mode="json"),
        **bag_inputs(data_path, manifest, cfg),
    }
    streaming = loading == "stream"
    if streaming:
        check_spare_cpus(cfg.scaling)
    if storage_fs is None:  # local storage; on an object store the workers' fallback still applies
        check_resumable(Path(storage) / run_name)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if _in_main_thread() else {}
    with epoch_progress(on_epoch) if on_epoch else nullcontext() as progress:
        callbacks = [*(callbacks or []), *([progress] if progress else [])]
        trainer = _JobTrainer(
            train_loop,
            train_loop_config=loop_config,
            # Streaming: Ray Data reads the shards and Ray Train splits them; in memory, workers read them.
            datasets=stream_datasets(data_path, cfg.train) if streaming else None,
            dataset_config=data_config() if streaming else None,
            scaling_config=_scaling(cfg, resources),
            run_config=_run_config(cfg, run_name, storage, storage_fs, callbacks),
        )
        try:
            result = trainer.fit()
        finally:
            for sig, previous in saved.items():
                if previous is not None:
                    signal.signal(sig, previous)
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name!r} finished without a checkpoint; see the worker logs")
    with result.checkpoint.as_directory() as d:
        state = load_checkpoint(d)
    model, best_epoch = choose_weights(state, early_stopping=cfg.train.early_stopping_patience is not None)
    history = list(state.history)
    metrics = dict(result.metrics or {}) or (history[-1] if history else {})
    return TrainResult(metrics=metrics, history=history, state=state, model=model, best_epoch=best_epoch)


def _scaling(cfg: JobConfig, resources: dict[str, float]) -> ScalingConfig:
    return ScalingConfig(
        num_workers=cfg.scaling.num_workers,
        use_gpu=cfg.scaling.use_gpu,
        resources_per_worker=resources,
        placement_strategy=cfg.scaling.placement_strategy,
    )


def _run_config(
    cfg: JobConfig, run_name: str, storage: str, storage_fs: pafs.FileSystem | None, callbacks: list
) -> RunConfig:
    return RunConfig(
        name=run_name,
        storage_path=storage,
        storage_filesystem=storage_fs,
        failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep),
        callbacks=callbacks or None,
        # Ray Train's INFO lines (worker group start, each report's checkpoint path) only with --verbose.
        logging_config=LoggingConfig(log_level="INFO" if console.verbose() else "WARNING"),
    )

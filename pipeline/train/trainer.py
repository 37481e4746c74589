"""Driver side of training: one TorchTrainer fit over the prepared data, resumable by name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline.data.store import load_manifest
from pipeline.model import check_padding_side
from pipeline.train.loop import FAULT_INJECTION_KEY, load_checkpoint_state, train_loop_per_worker
from schemas.config import JobConfig, RayConfig


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, Any]  # the last epoch's report
    history: list[dict[str, Any]]  # every epoch's report, once each, resumed epochs included
    state: dict[str, Any]  # the chosen checkpoint: "model" is the best epoch's weights under early
    # stopping, else the last epoch's; "last_model", optimizer/scheduler state dicts, epoch, best_*
    best_epoch: int | None = None  # the epoch whose weights are in state["model"]
    stopped_early: bool = False
    storage_path: str = ""  # Ray Train's folder for this run name: a rerun with the same name resumes from it


def ensure_ray(cfg: RayConfig) -> bool:
    """Join the configured cluster, else RAY_ADDRESS, else start a local one in-process.

    Returns True when this call started Ray (the caller then shuts it down). One cluster serves
    every stage of a job: a worker group costs seconds to start, a cluster more.
    """
    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # address="local": a bare ray.init() would join the last `ray start` cluster on this machine.
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=True)
    return True


def check_compatible(cfg: JobConfig, data_path: Path) -> None:
    """Config checks that need the prepared data. Raises UserInputError naming the fix."""
    check_padding_side(cfg.model, load_manifest(data_path).padding_side)


def choose_state(state: dict[str, Any], early_stopping: bool) -> dict[str, Any]:
    """The checkpoint to ship: best epoch's weights under early stopping, else the last epoch's."""
    if early_stopping and state.get("best_model") is not None:
        return {**state, "model": state["best_model"], "last_model": state["model"]}
    return {**state, "last_model": state["model"]}


def fit(cfg: JobConfig, data_path: Path, run_name: str, tracking_uri: str | None, run_id: str | None,
        *, fault_injection: dict[str, Any] | None = None) -> TrainResult:
    """Train on the prepared data at `data_path`. Rank 0 logs epoch metrics into MLflow run `run_id`.

    Every epoch is checkpointed into `<output_root>/ray_results/<run_name>`; after a worker dies the
    group restarts from the last checkpoint (up to train.max_failures times), and a rerun with the same
    `run_name` and storage resumes there instead of starting over (a finished run returns at once).
    `fault_injection` is for tests only (see loop.FAULT_INJECTION_KEY).
    Raises UserInputError for a config the prepared data cannot serve, and
    ray.train.TrainingFailedError when the workers fail beyond `train.max_failures`.
    """
    check_compatible(cfg, Path(data_path))
    storage = Path(cfg.output_root).resolve() / "ray_results"
    storage.mkdir(parents=True, exist_ok=True)
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = 1
    loop_config = {
        "job": cfg.model_dump(mode="json"),
        "data_path": str(Path(data_path).resolve()),
        "tracking_uri": tracking_uri,
        "run_id": run_id,
    }
    if fault_injection:
        loop_config[FAULT_INJECTION_KEY] = fault_injection
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu, resources_per_worker=resources,
            placement_strategy=cfg.scaling.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name!r} finished without a checkpoint; see the worker logs")
    with result.checkpoint.as_directory() as d:
        raw = load_checkpoint_state(d)
    early = cfg.train.early_stopping_patience is not None
    state = choose_state(raw, early)
    history = list(raw.get("history", []))
    metrics = dict(result.metrics or {}) or (history[-1] if history else {})
    best_epoch = raw.get("best_epoch") if early else raw.get("epoch")
    return TrainResult(metrics=metrics, history=history, state=state, best_epoch=best_epoch,
                       stopped_early=bool(raw.get("stopped")), storage_path=str(storage / run_name))

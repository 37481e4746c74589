"""Driver side of training: one TorchTrainer fit over the prepared data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline.train.loop import load_checkpoint_state, train_loop_per_worker
from schemas.config import JobConfig, RayConfig


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, Any]  # the last epoch's report
    history: list[dict[str, Any]]  # every epoch's report
    state: dict[str, Any]  # the final checkpoint: model/optimizer state dicts, epoch


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
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=True)
    return True


def fit(cfg: JobConfig, data_path: Path, run_name: str, tracking_uri: str | None, run_id: str | None) -> TrainResult:
    """Train on the prepared data at `data_path`. Rank 0 logs epoch metrics into MLflow run `run_id`.

    A rerun with the same `run_name` and storage resumes from its last checkpoint.
    Raises ray.train.TrainingFailedError when the workers fail beyond `train.max_failures`.
    """
    storage = Path(cfg.output_root).resolve() / "ray_results"
    storage.mkdir(parents=True, exist_ok=True)
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "job": cfg.model_dump(mode="json"),
            "data_path": str(Path(data_path).resolve()),
            "tracking_uri": tracking_uri,
            "run_id": run_id,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name!r} finished without a checkpoint; see the worker logs")
    with result.checkpoint.as_directory() as d:
        state = load_checkpoint_state(d)
    return TrainResult(metrics=dict(result.metrics or {}), history=list(state.get("history", [])), state=state)

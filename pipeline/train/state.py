"""What a training checkpoint holds, typed: written by the loop (rank 0, every epoch), read back by
the loop on resume and by the driver after `fit`.

On disk a checkpoint is a plain dict of tensors and primitives (`TrainState.to_dict`), saved with
`torch.save` and loaded with `weights_only=True`, so loading one runs no pickled code.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserInputError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
# Bumped when the layout changes; a checkpoint of another format is refused with a clear error,
# not half-read (format 1 was the untyped dict of 12 keys).
CHECKPOINT_FORMAT = 2

Metrics = dict[str, float]  # one epoch's report: metric name -> value ("epoch" and "best_epoch" are ints)
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class EarlyStoppingState:
    """Where early stopping stands after an epoch. The best epoch is tracked even without patience
    (it is reported as `best_epoch`); `best_model` is kept only when early stopping is on."""

    best_metric: float | None = None  # the watched metric at `best_epoch`
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the last improvement
    best_model: StateDict | None = None  # CPU copy of the weights at `best_epoch`
    stopped: bool = False  # patience ran out: a resumed run trains no further


@dataclass(frozen=True)
class TrainState:
    """One epoch's checkpoint."""

    model: StateDict  # the last epoch's weights (CPU)
    optimizer: dict[str, Any]  # torch optimizer state dict
    scheduler: dict[str, Any]  # torch LR scheduler state dict
    epoch: int  # the last finished epoch
    history: list[Metrics]  # every epoch's report so far, resumed epochs included
    early_stopping: EarlyStoppingState
    rng: StateDict  # every rank's generator state, stacked [world_size, n] ("cpu", and "cuda" on GPU)
    world_size: int  # the rng rows are restored only under the same world size
    # train.ema_decay: the AveragedModel's state dict ("module.*" weights and "n_averaged"); None without it
    ema: StateDict | None = None

    @property
    def averaged_model(self) -> StateDict | None:
        """The moving average of the weights, keyed as the bare model's (None without train.ema_decay)."""
        if self.ema is None:
            return None
        return {k.removeprefix("module."): v for k, v in self.ema.items() if k.startswith("module.")}

    def to_dict(self) -> dict[str, Any]:
        """Tensors and primitives only, as `torch.load(weights_only=True)` reads them."""
        # Shallow on purpose: dataclasses.asdict would deep-copy every tensor once more.
        return {"format": CHECKPOINT_FORMAT, **_shallow(self), "early_stopping": _shallow(self.early_stopping)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "checkpoint") -> TrainState:
        """Raises UserInputError for a checkpoint of another format (written by another version)."""
        fmt = raw.get("format", 1)
        if fmt != CHECKPOINT_FORMAT:
            raise UserInputError(
                f"{where} has checkpoint format {fmt}, this code reads {CHECKPOINT_FORMAT}; "
                "start a new run (another tracking.run_name) or delete that run's ray_results folder"
            )
        values = {k: v for k, v in raw.items() if k != "format"}
        return cls(**{**values, "early_stopping": EarlyStoppingState(**values["early_stopping"])})


def _shallow(obj) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def save_checkpoint_dir(state: TrainState) -> str:
    """A temporary folder holding `state` as CHECKPOINT_FILE."""
    tmp = tempfile.mkdtemp(prefix="rnn-ckpt-")
    torch.save(state.to_dict(), os.path.join(tmp, CHECKPOINT_FILE))
    return tmp


def load_checkpoint(checkpoint_dir: str) -> TrainState:
    """Loaded with weights_only=True, so no pickled code runs. Raises UserInputError (see from_dict)."""
    path = os.path.join(checkpoint_dir, CHECKPOINT_FILE)
    return TrainState.from_dict(torch.load(path, map_location="cpu", weights_only=True), where=path)


def load_newest_usable(newest_dir: str) -> TrainState:
    """The state in `newest_dir`, else in the newest earlier checkpoint of the same run that loads.

    Ray Train keeps a run's last checkpoints side by side (`checkpoint_<time>` folders) and resumes
    from the newest; a torn write would otherwise fail every rerun. A checkpoint of another format is
    refused (UserInputError from load_checkpoint), not skipped. Raises UserInputError naming the
    folder and the fix when no kept checkpoint loads.
    """
    newest = Path(newest_dir)
    earlier = sorted(
        (p for p in newest.parent.glob("checkpoint_*") if p.is_dir() and p.name < newest.name), reverse=True
    )  # not checkpoint_manager_snapshot.json
    bad: list[str] = []
    for folder in [newest, *earlier]:
        try:
            state = load_checkpoint(str(folder))
        except UserInputError:
            raise  # another checkpoint format: skipping to an older one would not help
        except Exception as e:  # noqa: BLE001 - torch's unpickler raises anything on a torn file
            bad.append(f"{folder / CHECKPOINT_FILE} ({type(e).__name__})")
            continue
        if bad:
            logger.warning("checkpoint %s is unreadable; resuming from %s instead", "; ".join(bad), folder.name)
        return state
    raise UserInputError(
        f"no usable checkpoint in {newest.parent}: {'; '.join(bad)}; delete that folder to start the run "
        "over, or set another tracking.run_name"
    )

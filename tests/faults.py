"""Faults injected by tests, never by production code: a wrapped worker loop for `fit(train_loop=...)`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train

from pipeline.train.loop import ray_report, train_loop_per_worker
from pipeline.train.state import Metrics, TrainState


def kill_rank_once(rank: int, after_epoch: int, marker: Path) -> Callable[[dict[str, Any]], None]:
    """The project's worker loop, except that rank `rank` exits hard (`os._exit`, as a lost node
    would) right after reporting epoch `after_epoch`, before the next epoch starts. Once: `marker`
    records that it happened, so the restarted worker group runs through.

    A closure, so Ray pickles it by value and workers need not import `tests`."""
    marker = Path(marker)

    def loop(loop_config: dict[str, Any]) -> None:
        def report(metrics: Metrics, state: TrainState | None) -> None:
            ray_report(metrics, state)
            me = ray.train.get_context().get_world_rank()
            if me == rank and metrics["epoch"] == after_epoch and not marker.exists():
                marker.write_text(f"rank {me} killed after epoch {after_epoch}\n")
                os._exit(1)

        train_loop_per_worker(loop_config, report=report)

    return loop

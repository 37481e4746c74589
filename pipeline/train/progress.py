"""One console line per epoch, printed by the driver, once (not once per rank).

Ray Train calls a `UserCallback` on its controller (an actor) after every rank has reported an
epoch; the callback forwards rank 0's metrics through a Ray queue to a thread in the driver,
which prints `epoch 3/8  train_loss 0.561  val_acc 0.702  9.1k samples/s  eta 12s`. The driver
prints rather than the controller because actors' output reaches the console only with
`log_to_driver`, which quiet mode turns off (pipeline.cluster).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ray.train import UserCallback
from ray.util.queue import Empty, Queue

from pipeline.train.state import Metrics


def format_epoch(m: Metrics, total: int, eta_s: float | None) -> str:
    """`epoch 3/8  train_loss 0.561  val_acc 0.702  9.1k samples/s  eta 12s` (epochs counted from 1)."""
    rate = m.get("samples_per_s", 0.0)
    rate_s = f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"
    parts = [
        f"epoch {int(m['epoch']) + 1}/{total}",
        f"train_loss {m['train_loss']:.3f}",
        f"val_loss {m['val_loss']:.3f}",
        f"val_acc {m['val_accuracy']:.3f}",
        f"{rate_s} samples/s",
    ]
    if eta_s is not None:
        parts.append(f"eta {eta_s:.0f}s")
    return "  ".join(parts)


class EpochLines:
    """Turns each epoch's report into its line, estimating the time left from the epochs seen."""

    def __init__(self, total_epochs: int, emit: Callable[[str], None]):
        self.total, self.emit = total_epochs, emit
        self._durations: list[float] = []

    def __call__(self, m: Metrics) -> None:
        self._durations.append(float(m.get("epoch_s", 0.0)))
        left = self.total - (int(m["epoch"]) + 1)
        mean = sum(self._durations) / len(self._durations)
        self.emit(format_epoch(m, self.total, mean * left if left > 0 else None))


class _ForwardRankZero(UserCallback):
    """Runs on the Ray Train controller: puts rank 0's report of each epoch on the queue."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics:
            self.queue.put_nowait(dict(metrics[0]))


@contextmanager
def epoch_progress(on_epoch: Callable[[Metrics], None]) -> Iterator[UserCallback]:
    """Yield the callback to pass in `RunConfig(callbacks=...)`; `on_epoch` runs in the driver for
    each epoch's rank-0 metrics while the block runs, and for any still queued when it ends."""
    # num_cpus=0: a CPU-sized actor would wait for a CPU the training workers hold.
    queue = Queue(actor_options={"num_cpus": 0})
    stop = threading.Event()

    def drain(block: bool) -> None:
        while True:
            try:
                on_epoch(queue.get(block=block, timeout=0.5 if block else None))
            except Empty:
                return

    def pump() -> None:
        while not stop.is_set():
            drain(block=True)

    thread = threading.Thread(target=pump, name="epoch-progress", daemon=True)
    thread.start()
    try:
        yield _ForwardRankZero(queue)
    finally:
        stop.set()
        thread.join(timeout=5)
        drain(block=False)
        queue.shutdown()

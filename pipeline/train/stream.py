"""Streaming input (train.data_loading=stream): Ray Data reads the prepared Parquet shards and every
worker trains on its own share as it arrives, so a worker never holds the corpus.

Driver side, `stream_datasets` builds the `TorchTrainer(datasets=...)` inputs and `data_config` says
how Ray Train hands them out: the training split goes through Ray Data's equal streaming split
(every rank gets the same number of rows, hence the same number of steps: DDP needs that), the
validation split is given whole to every rank, read in a fixed order, and each rank scores every
world_size-th batch of it, so every row is scored once and the sums are all-reduced as in memory.

Worker side, `StreamData` is what the loop iterates: windows of `batch_size * bucket_chunk_batches`
rows whose rows are permuted with a per-epoch reseeded generator (on top of the per-epoch file
order, and of Ray Data's local shuffle buffer when train.stream_shuffle_buffer_rows asks for one);
with bucketing a window is sorted by length, cut into batches, the batches shuffled and each
trimmed to its longest row (as `plan_batches` does in memory). Converting, permuting, sorting and
pinning a window run in Ray Data's prefetch threads. A worker holds a few Ray Data blocks
(train.stream_block_mb), the prefetched windows, any shuffle buffer, and its share of the
validation split when that share is under train.stream_val_cache_mb (read in the background during
the first epoch; every validation scores it from memory instead of reading the split again):
bounded by the config, not by the corpus. The next epoch's read starts as soon as an epoch's last
batch is taken, while the epoch's validation, report and checkpoint run.

The row order is seeded but not reproducible bit for bit: which blocks reach which rank depends on
which read finishes first. The in-memory path is the one to use for exact reruns.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from pipeline.data.store import StorePath, arrow_paths, split_files, table_arrays
from pipeline.errors import UserInputError
from pipeline.train.loop import Batch, WorkerContext
from schemas.config import ScalingConfig, TrainConfig
from schemas.features import Manifest, ids_mib

COLUMNS = ["input_ids", "label", "length"]
MIB = 1 << 20


def in_memory_mb(manifest: Manifest) -> float:
    """What one worker would hold with data_loading=memory: the training ids as int32 (MiB)."""
    return ids_mib(manifest.splits["train"].rows, manifest.max_length)


def choose_loading(cfg: TrainConfig, manifest: Manifest) -> str:
    """'memory' or 'stream': the configured path, or under 'auto' the one the corpus size calls for."""
    if cfg.data_loading != "auto":
        return cfg.data_loading
    return "stream" if in_memory_mb(manifest) > cfg.stream_threshold_mb else "memory"


def check_spare_cpus(scaling: ScalingConfig) -> None:
    """Ray Data reads on CPUs the training workers do not hold; with none left it waits forever.
    Raises UserInputError naming the fix (call after Ray is up)."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    held = scaling.num_workers * scaling.cpus_per_worker
    if total - held < 1:
        raise UserInputError(
            f"train.data_loading=stream needs a CPU beyond the workers' for Ray Data's reads: the cluster has "
            f"{total:g} CPUs and scaling holds {held:g} (num_workers x cpus_per_worker); lower "
            "scaling.num_workers or scaling.cpus_per_worker, add a CPU (ray.num_cpus), or set "
            "train.data_loading=memory"
        )


def read_split(data_path: StorePath, split: str, cfg: TrainConfig, *, shuffle_files: bool):
    """A lazy Ray Data dataset over one prepared split (local folder or s3://, gs://... URL)."""
    import ray.data
    from ray.data.datasource import FileShuffleConfig

    paths, fs = arrow_paths(split_files(data_path, split))
    # Reseeded every execution (every epoch) from the seed: a new file order each epoch.
    shuffle = FileShuffleConfig(seed=cfg.seed) if shuffle_files and len(paths) > 1 else None
    context = ray.data.DataContext.get_current()
    saved = context.use_datasource_v2, context.enable_progress_bars
    # The V1 Parquet reader reads the footers once, here; V2 (Ray 2.60's default) starts 32
    # footer-reading actors at every execution, i.e. every epoch on every rank: measured 11-13 s per
    # epoch for a 100 MB split on 2 CPUs, against 1.3 s with V1. No bar for V1's footer sampling.
    context.use_datasource_v2, context.enable_progress_bars = False, False
    try:
        ds = ray.data.read_parquet(paths, filesystem=fs, columns=COLUMNS, shuffle=shuffle)
    finally:
        context.use_datasource_v2, context.enable_progress_bars = saved
    # Blocks are split at this size while they are read: the unit a worker fetches and holds.
    ds.context.target_max_block_size = int(cfg.stream_block_mb * MIB)
    ds.context.enable_progress_bars = False  # one bar per epoch and rank would flood the job's log
    return ds


def stream_datasets(data_path: StorePath, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "train": read_split(data_path, "train", cfg, shuffle_files=True),
        "validation": read_split(data_path, "validation", cfg, shuffle_files=False),
    }


def data_config():
    """Ray Train's split: training rows equally over the ranks; validation whole, in a fixed order
    (every rank must see the same batches to score each one exactly once)."""
    from ray.data import ExecutionOptions
    from ray.train import DataConfig

    return DataConfig(
        datasets_to_split=["train"], execution_options={"validation": ExecutionOptions(preserve_order=True)}
    )


def collate_window(table, bucketing: bool, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
    """One window as int64 tensors (ids, label, length): rows permuted by `rng` (if given), then with
    bucketing sorted longest first. Runs in Ray Data's prefetch threads, off the training thread, as
    does the pinning after it."""
    ids, labels, lengths = table_arrays(table)
    order = rng.permutation(len(labels)) if rng is not None else np.arange(len(labels))
    if bucketing:  # stable: rows of equal length keep their permuted order
        order = order[np.argsort(-lengths[order], kind="stable")]
    # One gather and one widening copy per window (Arrow's buffers are read-only); batches are slices.
    return {
        "ids": torch.from_numpy(ids[order].astype(np.int64)),
        "label": torch.from_numpy(labels[order].astype(np.int64)),
        "length": torch.from_numpy(lengths[order].astype(np.int64)),
    }


def window_batches(
    window: dict[str, torch.Tensor], cfg: TrainConfig, rng: np.random.Generator, left_padded: bool
) -> Iterator[Batch]:
    """A collated window's batches. With bucketing (the window sorted longest first) the batches are
    shuffled and each trimmed to its longest row, as `plan_batches` does in memory; without, they
    keep the window's order and the full padded width."""
    x, y, lengths = window["ids"], window["label"], window["length"]
    n, b = len(y), cfg.batch_size
    starts = list(range(0, n, b))
    if cfg.bucketing:
        starts = [starts[i] for i in rng.permutation(len(starts))]
    for start in starts:
        cut = x[start : start + b]
        width = max(int(lengths[start]), 1) if cfg.bucketing else cut.shape[1]
        if width < cut.shape[1]:
            cut = cut[:, cut.shape[1] - width :] if left_padded else cut[:, :width]
        yield cut, y[start : start + b]


class WindowCollate(ArrowBatchCollateFn):
    """`collate_window` as Ray Data's collate function (it receives each window as an Arrow table),
    permuting each window's rows with a generator seeded for one epoch and rank."""

    def __init__(self, bucketing: bool, seed: int):
        super().__init__()
        self.bucketing = bucketing
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()  # prefetch threads may collate two windows at once

    def __call__(self, batch):
        with self.lock:
            rng = np.random.default_rng(self.rng.integers(2**63))
        return collate_window(batch, self.bucketing, rng)


class _Started:
    """An iterator whose first item is fetched at once, in a background thread when asked: iterating
    it yields that item (waiting for it, re-raising its error) and then the rest, in this thread."""

    def __init__(self, items: Iterator[Any], background: bool = False):
        self._items, self._first, self._error = items, None, None
        self._thread = threading.Thread(target=self._fetch, daemon=True, name="stream-read-ahead")
        if background:
            self._thread.start()
        else:
            self._fetch()

    def _fetch(self) -> None:
        try:
            self._first = [next(self._items)]
        except StopIteration:
            self._first = []
        except BaseException as e:  # re-raised in the consuming thread
            self._error = e

    def __iter__(self) -> Iterator[Any]:
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first or ()
        yield from self._items

    def close(self, timeout_s: float = 30.0) -> None:
        if self._thread.ident is not None:
            # A rank that failed mid-epoch never reaches the next epoch's barrier: then the reader
            # waits there and is left to end with the worker (a daemon thread).
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                return
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class StreamData:
    """One worker's streamed view of the prepared data (the loop's counterpart of TrainData)."""

    train: Any  # ray.data.DataIterator: this rank's equal share of the training split
    validation: Any  # ray.data.DataIterator over the whole validation split, in file order
    train_rows: int  # rows of the whole training split (the manifest's count)
    rank: int
    world_size: int
    vocab_size: int
    pad_id: int
    num_classes: int
    padding_side: str
    val_cache_mb: float = 0.0  # keep this rank's validation batches in memory when under this size
    val_share_mb: float = 0.0  # this rank's validation share as int64 ids (the manifest's estimate)
    # This rank's validation batches, read once in the background during the first epoch, then reused.
    _val_cache: list[Batch] = field(default_factory=list, compare=False, repr=False)
    # The next epoch's windows, started while this epoch's validation, report and checkpoint run.
    _ahead: dict[int, _Started] = field(default_factory=dict, compare=False, repr=False)
    _filling: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the cache's reader

    @classmethod
    def from_ray(cls, manifest: Manifest, ctx: WorkerContext, cfg: TrainConfig) -> StreamData:
        """This worker's shards, as Ray Train assigned them (call inside a Ray Train worker)."""
        import ray.train

        return cls(
            ray.train.get_dataset_shard("train"),
            ray.train.get_dataset_shard("validation"),
            manifest.splits["train"].rows,
            ctx.rank,
            ctx.world_size,
            manifest.vocab_size,
            manifest.pad_id,
            len(manifest.label_names),
            manifest.padding_side,
            cfg.stream_val_cache_mb,
            ids_mib(manifest.splits["validation"].rows, manifest.max_length, item_bytes=8) / ctx.world_size,
        )

    def place(self, ctx: WorkerContext, cfg: TrainConfig) -> StreamData:
        return self  # nothing to place: each window is copied (and pinned) as it arrives

    def steps_per_epoch(self, world_size: int, batch_size: int) -> int:
        per_rank = self.train_rows // world_size  # the equal split drops the remainder
        return -(-per_rank // batch_size)

    def train_batches(self, epoch: int, ctx: WorkerContext, cfg: TrainConfig) -> Iterator[Batch]:
        """This rank's batches of epoch `epoch`. Windows are multiples of batch_size rows and every
        rank has the same number of rows, so every rank takes the same number of steps.

        Once the epoch's last batch is taken, the next epoch's reading starts in the background: every
        epoch is a new Ray Data execution (the equal split starts one per epoch), whose start and first
        window (bucket_chunk_batches batches) would otherwise stall the next epoch's first step."""
        self._start_val_cache(cfg.eval_batch_size)
        started = self._ahead.pop(epoch, None) or _Started(self._windows(epoch, ctx, cfg))
        rng = np.random.default_rng([cfg.seed, epoch, ctx.rank])
        for window in started:
            yield from window_batches(window, cfg, rng, self.padding_side == "left")
        if epoch + 1 < cfg.epochs:
            self._ahead[epoch + 1] = _Started(self._windows(epoch + 1, ctx, cfg), background=True)

    def close(self) -> None:
        """Stop reading ahead (the loop ended early: early stopping, or an error)."""
        for started in self._ahead.values():
            started.close()
        self._ahead.clear()

    def _windows(self, epoch: int, ctx: WorkerContext, cfg: TrainConfig) -> Iterator[dict[str, torch.Tensor]]:
        seed = int(np.random.default_rng([cfg.seed, epoch, ctx.rank]).integers(2**31))
        shuffle = cfg.stream_shuffle_buffer_rows or None
        pin = ctx.device.type == "cuda"
        windows = self.train.iter_torch_batches(
            batch_size=cfg.batch_size * cfg.bucket_chunk_batches,
            collate_fn=WindowCollate(cfg.bucketing, seed),
            device="cpu",
            pin_memory=pin,  # the loop copies each batch to the GPU, asynchronously
            prefetch_batches=cfg.stream_prefetch_batches,
            local_shuffle_buffer_size=shuffle,
            local_shuffle_seed=seed if shuffle else None,
        )
        return iter(windows)

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """Every world_size-th validation batch, starting at this rank's: from memory once the background
        read (started with the first epoch) cached this rank's share, else read through Ray Data."""
        filling = self._filling.pop("validation", None)
        if filling is not None:
            filling.join()
        if self._val_cache:
            yield from self._val_cache
            return
        yield from self._read_val(batch_size)

    def _read_val(self, batch_size: int) -> Iterator[Batch]:
        tables = self.validation.iter_batches(batch_size=batch_size, batch_format="pyarrow", prefetch_batches=2)
        for i, table in enumerate(tables):
            if i % self.world_size == self.rank:
                ids, labels, _ = table_arrays(table)
                yield torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))

    def _start_val_cache(self, batch_size: int) -> None:
        """Read this rank's validation share into memory in the background while the first epoch trains
        (its first read would otherwise stall the first validation), when it fits stream_val_cache_mb."""
        if self._val_cache or self._filling.get("done") or self.val_share_mb > self.val_cache_mb:
            return
        self._filling["done"] = True

        def fill() -> None:
            kept, size = [], 0
            for batch in self._read_val(batch_size):
                size += batch[0].nbytes + batch[1].nbytes
                if size > self.val_cache_mb * MIB:
                    return  # longer rows than estimated: validation reads the split every epoch
                kept.append(batch)
            self._val_cache.extend(kept)

        thread = threading.Thread(target=fill, daemon=True, name="stream-validation-cache")
        self._filling["validation"] = thread
        thread.start()

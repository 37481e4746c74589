"""The function every Ray Train worker runs, and the Ray-free training core it wraps.

Each worker reads the prepared Parquet splits as contiguous NumPy arrays, takes its shard of each
epoch (a seeded permutation padded so that every rank gets the same number of rows and of
batches, even an empty or tiny split), trains under DDP, and calls `ray.train.report` exactly once
per epoch on every rank, checkpoint included (rank 0 writes it). Early stopping is decided on
all-reduced validation sums, so every rank stops at the same epoch. Only rank 0 talks to MLflow,
through RankZeroLogger, after the epoch's report: a restarted worker group resumes after the last
persisted checkpoint, and the logger skips any epoch the run already holds, so none is logged twice.

`train_worker` holds the whole loop without Ray (a `report` callback and an optional resume
state), so tests and benchmarks run it in plain PyTorch; `train_loop_per_worker` wires it to Ray.
The loop reads as its steps: `setup` (tensors, model, optimizer, schedule, resume), `run_epoch`
(train, validate, early stopping) and `checkpoint_state` (the typed TrainState that rank 0 saves).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline.data.store import load_manifest, read_split_arrays
from pipeline.errors import UserInputError
from pipeline.evaluation.scoring import length_order, loss_fn
from pipeline.model import build_model, check_padding_side, set_idf, set_vocabulary
from pipeline.tracking import RankZeroLogger
from pipeline.train.adversarial import EmbeddingPerturbation
from pipeline.train.state import (
    EarlyStoppingState,
    Metrics,
    StateDict,
    TrainState,
    load_newest_usable,
    save_checkpoint_dir,
)
from schemas.config import JobConfig, TrainConfig
from schemas.features import Manifest

if TYPE_CHECKING:
    from pipeline.train.stream import StreamData

Batch = tuple[torch.Tensor, torch.Tensor]  # (input ids [b, width], labels [b])
Report = Callable[[Metrics, TrainState | None], None]  # (epoch metrics, rank 0's checkpoint or None)


@dataclass(frozen=True)
class WorkerContext:
    rank: int
    world_size: int
    device: torch.device


@dataclass(frozen=True)
class TrainData:
    """One worker's view of the prepared data: the full training split (sharded per epoch) and
    this rank's slice of the validation split."""

    train_ids: np.ndarray  # [n, L] int
    train_y: np.ndarray  # [n] int64
    train_lengths: np.ndarray  # [n] real tokens per row
    val_ids: np.ndarray
    val_y: np.ndarray
    vocab_size: int
    pad_id: int
    num_classes: int
    padding_side: str

    def place(self, ctx: WorkerContext, cfg: TrainConfig) -> PlacedData:
        return place_data(self, ctx, cfg)


def load_train_data(data_path: str | Path, rank: int, world_size: int) -> TrainData:
    """Read the prepared splits. Validation is split without padding (no row counted twice)."""
    manifest = load_manifest(data_path)
    train_ids, train_y, train_len = read_split_arrays(data_path, "train")
    val_ids, val_y, _ = read_split_arrays(data_path, "validation")
    return TrainData(
        train_ids,
        train_y,
        train_len,
        val_ids[rank::world_size],
        val_y[rank::world_size],
        manifest.vocab_size,
        manifest.pad_id,
        len(manifest.label_names),
        manifest.padding_side,
    )


def shard_indices(n: int, rank: int, world_size: int, seed: int, epoch: int) -> np.ndarray:
    """This rank's rows for one epoch: a seeded permutation padded to a multiple of world_size
    (as DistributedSampler does), so every rank gets the same number of rows and of steps, even
    when there are fewer rows than ranks."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = -(-n // world_size)
    padded = np.resize(perm, per_rank * world_size)  # repeats from the start to fill
    return padded[rank::world_size]


def plan_batches(
    lengths: np.ndarray, batch_size: int, bucketing: bool, chunk_batches: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """(order, [(start, end, width)]): rows `order[start:end]` form a batch whose longest row has
    `width` tokens (at least 1). Without bucketing the order is unchanged and batches are full width.

    With bucketing, rows are sorted by length inside random chunks of `chunk_batches` batches and
    the batches are shuffled, so each batch can be trimmed to its longest row. The number of
    batches is ceil(n / batch_size) either way, so equal shards give every rank the same steps.
    """
    n = len(lengths)
    starts = list(range(0, n, batch_size))
    if not bucketing:
        full = int(lengths.max(initial=1)) if n else 1
        return np.arange(n), [(s, min(s + batch_size, n), full) for s in starts]
    chunk = batch_size * chunk_batches
    order = (
        np.concatenate([c + np.argsort(-lengths[c : c + chunk], kind="stable") for c in range(0, n, chunk)])
        if n
        else np.zeros(0, dtype=np.int64)
    )
    sorted_len = lengths[order]
    batches = [(s, min(s + batch_size, n), max(int(sorted_len[s]), 1)) for s in starts]  # longest first
    perm = rng.permutation(len(batches))
    return order, [batches[i] for i in perm]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_cpu(cfg: JobConfig) -> None:
    threads = cfg.train.threads_per_worker or max(int(cfg.scaling.cpus_per_worker), 1)
    torch.set_num_threads(threads)
    # Vanishing RNN gradients become denormal floats, which run many times slower on x86.
    torch.set_flush_denormal(cfg.train.flush_denormal)


NGRAM_PATH = ("ngrams.", "ngram_chars.")  # the linear paths' parameters (pipeline.model)


def build_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """Adam at train.lr; the n-gram paths' weights (if any) in a second group at lr * ngram_lr_factor.
    The schedules scale every group's lr by the same factor, so the ratio holds through training."""
    path = [p for name, p in model.named_parameters() if name.startswith(NGRAM_PATH)]
    rest = [p for name, p in model.named_parameters() if not name.startswith(NGRAM_PATH)]
    groups: list[dict[str, Any]] = [{"params": rest}]
    if path:
        groups.append({"params": path, "lr": tc.lr * tc.ngram_lr_factor})
    return torch.optim.Adam(groups, lr=tc.lr, weight_decay=tc.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """The configured LR schedule. Cosine steps per batch; plateau steps per epoch on the metric."""
    if cfg.lr_schedule == "plateau":
        mode = "min" if cfg.early_stopping_metric == "val_loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=mode,
            factor=cfg.lr_decay_factor,
            patience=0,
            threshold=cfg.early_stopping_min_delta,
            threshold_mode="abs",
        )
    total = max(steps_per_epoch * cfg.epochs, 1)
    warmup = int(cfg.lr_warmup_fraction * total)

    def factor(step: int) -> float:
        if cfg.lr_schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return cfg.lr_min_factor + (1 - cfg.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def _gather_rng(device: torch.device, world_size: int) -> StateDict:
    """Every rank's RNG state, stacked [world, n] (collective: all ranks call it)."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return {k: v.unsqueeze(0) for k, v in states.items()}
    out = {}
    for k, v in states.items():
        v = v.to(device)
        parts = [torch.empty_like(v) for _ in range(world_size)]
        dist.all_gather(parts, v)
        out[k] = torch.stack(parts).cpu()
    return out


def _restore_rng(rng: StateDict | None, ctx: WorkerContext) -> None:
    if not rng or rng["cpu"].shape[0] != ctx.world_size:
        return  # a different world size: keep the freshly seeded generators
    # clone(): a row of the stacked states is a view with an offset, which set_rng_state misreads
    torch.set_rng_state(rng["cpu"][ctx.rank].clone())
    if ctx.device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"][ctx.rank].clone(), ctx.device)


def _amp_factory(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return lambda: torch.autocast(device.type, enabled=False)


@torch.no_grad()
def evaluate_shard(model, batches: Iterable[Batch], ctx: WorkerContext, amp) -> dict[str, float]:
    """Loss and accuracy over all ranks' shards (each rank scores its batches of validation rows,
    every row on exactly one rank; the sums are all-reduced)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    correct = torch.zeros((), dtype=torch.float64, device=ctx.device)
    rows = 0
    for x, y in batches:
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        with amp():
            logits = model(x)
        loss_sum += loss_fn(logits, y).double() * len(y)
        pred = (logits > 0).long() if logits.dim() == 1 else logits.argmax(-1)
        correct += (pred == y).sum()
        rows += len(y)
    model.train(was_training)
    loss_sum, correct, count = _all_reduce_sum([float(loss_sum), float(correct), float(rows)], ctx.device)
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1)}


def _cpu_state(module: nn.Module) -> StateDict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class EarlyStopping:
    """Stops when the watched validation metric has not improved by more than `min_delta` for
    `patience` epochs (never, with patience None: the best epoch is still tracked and reported).
    Its state goes into every checkpoint, so a resumed run keeps counting where it left off."""

    def __init__(self, cfg: TrainConfig, state: EarlyStoppingState | None = None):
        self.metric = cfg.early_stopping_metric  # val_loss: lower is better; val_accuracy: higher
        self.min_delta = cfg.early_stopping_min_delta
        self.patience = cfg.early_stopping_patience
        self.state = state or EarlyStoppingState()

    def improved(self, value: float) -> bool:
        best = self.state.best_metric
        if best is None or not math.isfinite(best):
            return math.isfinite(value)
        if self.metric == "val_loss":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def step(self, value: float, epoch: int, model: nn.Module) -> EarlyStoppingState:
        """Record epoch `epoch`'s metric; keeps a CPU copy of `model` when it is the new best."""
        s = self.state
        if self.improved(value):
            best_model = _cpu_state(model) if self.patience is not None else s.best_model
            s = replace(s, best_metric=value, best_epoch=epoch, bad_epochs=0, best_model=best_model)
        else:
            s = replace(s, bad_epochs=s.bad_epochs + 1)
        self.state = replace(s, stopped=self.patience is not None and s.bad_epochs >= self.patience)
        return self.state


@dataclass(frozen=True)
class PlacedData:
    """One worker's rows as tensors, placed once: every training row (each epoch gathers its shard)
    and this rank's validation rows in length order, as predict_proba scores the test split."""

    train_ids: torch.Tensor  # [n, width] on the GPU with train.data_on_device, else on the CPU
    train_y: torch.Tensor
    train_lengths: np.ndarray
    val_ids: torch.Tensor
    val_y: torch.Tensor
    width: int  # padded row length (batches are trimmed to their longest row)
    left_padded: bool
    pin: bool  # GPU training from CPU-held rows: each epoch's rows go through pinned memory

    def close(self) -> None:
        """Nothing runs in the background (StreamData reads ahead and stops here)."""

    def steps_per_epoch(self, world_size: int, batch_size: int) -> int:
        per_rank = -(-len(self.train_y) // world_size)
        return -(-per_rank // batch_size)

    def train_batches(self, epoch: int, ctx: WorkerContext, cfg: TrainConfig) -> Iterator[Batch]:
        """This rank's batches of epoch `epoch`, trimmed to their longest row (CPU or device tensors)."""
        idx = shard_indices(len(self.train_y), ctx.rank, ctx.world_size, cfg.seed, epoch)
        rng = np.random.default_rng([cfg.seed, epoch, ctx.rank])
        order, batches = plan_batches(
            self.train_lengths[idx], cfg.batch_size, cfg.bucketing, cfg.bucket_chunk_batches, rng
        )
        # One gather per epoch; every batch is then a contiguous slice of these tensors.
        rows = torch.from_numpy(idx[order]).to(self.train_ids.device)
        epoch_ids, epoch_y = self.train_ids.index_select(0, rows), self.train_y.index_select(0, rows)
        if self.pin:
            epoch_ids, epoch_y = epoch_ids.pin_memory(), epoch_y.pin_memory()
        for start, end, w in batches:
            yield trim(epoch_ids[start:end], w, self.left_padded), epoch_y[start:end]

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """This rank's validation rows in length order, as predict_proba scores the test split."""
        for start in range(0, len(self.val_y), batch_size):
            yield self.val_ids[start : start + batch_size], self.val_y[start : start + batch_size]


def trim(x: torch.Tensor, width: int, left_padded: bool) -> torch.Tensor:
    """Rows cut to their last (left padding) or first `width` columns: the padding only they share."""
    if width >= x.shape[1]:
        return x
    return x[:, x.shape[1] - width :] if left_padded else x[:, :width]


def place_data(data: TrainData, ctx: WorkerContext, cfg: TrainConfig) -> PlacedData:
    on_gpu = ctx.device.type == "cuda"
    store = ctx.device if on_gpu and cfg.data_on_device else torch.device("cpu")

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(store)

    val_order = length_order(data.val_ids, data.pad_id)
    train_ids = tensor(data.train_ids).long()
    return PlacedData(
        train_ids,
        tensor(data.train_y),
        data.train_lengths,
        tensor(data.val_ids[val_order]).long(),
        tensor(data.val_y[val_order]),
        train_ids.shape[1] if train_ids.dim() == 2 else 0,
        data.padding_side == "left",
        on_gpu and store.type == "cpu",
    )


@dataclass
class WorkerRun:
    """One worker's live training objects: built by `setup`, advanced one epoch at a time."""

    cfg: TrainConfig
    ctx: WorkerContext
    data: PlacedData | StreamData  # where batches come from: in-memory tensors or a Ray Data shard
    model: nn.Module  # what trains: the model as `wrap_model` placed it (DDP under Ray)
    core: nn.Module  # the bare model: state dicts and validation
    optimizer: torch.optim.Optimizer
    scheduler: Any  # cosine/constant: stepped per batch; plateau: per epoch on the watched metric
    stopper: EarlyStopping
    amp: Callable[[], Any]  # a fresh autocast context per forward pass
    ema: AveragedModel | None = None  # train.ema_decay: the moving average that is validated and kept
    adversarial: EmbeddingPerturbation | None = None  # train.adversarial_epsilon
    start_epoch: int = 0
    history: list[Metrics] = field(default_factory=list)

    @property
    def scored(self) -> nn.Module:
        """The weights validation scores and early stopping keeps: the moving average, if any."""
        return self.core if self.ema is None else self.ema.module

    @property
    def per_step(self) -> bool:
        return not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    @property
    def steps_lr(self) -> bool:
        """Whether a training step must step the schedule: not for a constant lr, whose factor is
        always 1 (skipping it saves a Python call per step, which shows on a fast GPU)."""
        return self.per_step and self.cfg.lr_schedule != "constant"


def setup(
    cfg: JobConfig,
    data: TrainData | StreamData,
    ctx: WorkerContext,
    resume: TrainState | None,
    wrap_model: Callable[[nn.Module], nn.Module],
    vocabulary: list[str] | None = None,
    idf: dict[str, dict] | None = None,
) -> WorkerRun:
    """Tensors, model, optimizer and schedule, seeded; then `resume`'s state if there is one.
    `vocabulary`: the tokens by id, for model.ngram_char_buckets (None without it); `idf`: the bags'
    (pipeline.train.idf.document_frequencies), for model.ngram_weighting=idf."""
    tc = cfg.train
    seed_everything(tc.seed)  # same initial weights on every rank; DDP also broadcasts them
    amp = _amp_factory(ctx.device, tc.amp)
    placed = data.place(ctx, tc)
    model = build_model(data.vocab_size, data.pad_id, data.num_classes, cfg.model)
    set_vocabulary(model, vocabulary)  # before the average's copy and DDP's broadcast
    set_idf(model, idf)
    model = wrap_model(model)
    core = model.module if hasattr(model, "module") else model
    optimizer = build_optimizer(core, tc)
    scheduler = build_scheduler(optimizer, tc, placed.steps_per_epoch(ctx.world_size, tc.batch_size))
    # Every rank holds the same weights after each DDP step, so every rank's average is the same too.
    ema = None if tc.ema_decay is None else AveragedModel(core, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay))
    run = WorkerRun(tc, ctx, placed, model, core, optimizer, scheduler, EarlyStopping(tc), amp, ema)
    if tc.adversarial_epsilon is not None:  # after the average's deep copy, which would copy the hook too
        run.adversarial = EmbeddingPerturbation(core.embedding, tc.adversarial_epsilon)
    if resume is not None:  # a restarted worker group, or a rerun of the same job name
        _resume(run, resume)
    return run


def _resume(run: WorkerRun, state: TrainState) -> None:
    run.core.load_state_dict(state.model)
    if len(state.optimizer["param_groups"]) != len(run.optimizer.param_groups):
        # A checkpoint of an n-gram model written before the path had its own lr group (one group then).
        raise UserInputError(
            f"the checkpoint to resume holds {len(state.optimizer['param_groups'])} optimizer parameter group(s), "
            f"this version builds {len(run.optimizer.param_groups)} (the n-gram path has its own learning rate, "
            "train.ngram_lr_factor, since the checkpoint was written); start a new run instead of resuming it "
            "(another tracking.run_name, or delete the run's folder under output_root/ray_results)"
        )
    run.optimizer.load_state_dict(state.optimizer)
    run.scheduler.load_state_dict(state.scheduler)
    if run.ema is not None and state.ema is not None:  # else the average restarts from the resumed weights
        run.ema.load_state_dict(state.ema)
    run.start_epoch = run.cfg.epochs if state.early_stopping.stopped else state.epoch + 1
    run.history = list(state.history)
    run.stopper.state = state.early_stopping
    _restore_rng(state.rng, run.ctx)


def _train_shard(run: WorkerRun, epoch: int) -> tuple[torch.Tensor, int]:
    """One pass over this rank's shard of epoch `epoch`: (sum of row losses, rows seen)."""
    run.model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.ctx.device)
    rows = 0
    for x, y in run.data.train_batches(epoch, run.ctx, run.cfg):
        loss = _train_step(run, x.to(run.ctx.device, non_blocking=True), y.to(run.ctx.device, non_blocking=True))
        # One kernel, no host sync: at ~1k steps/s on a GPU each extra launch per step costs ~1%.
        loss_sum.add_(loss.detach(), alpha=len(y))
        rows += len(y)
    return loss_sum, rows


def _train_step(run: WorkerRun, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with run.amp():
        logits = run.model(x)
    loss = loss_fn(logits, y)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.adversarial is not None:
        run.adversarial.backward_adversarial(run.model, run.amp, x, y)
    if run.cfg.grad_clip:
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update_parameters(run.core)
    if run.steps_lr:
        run.scheduler.step()
    return loss


def run_epoch(run: WorkerRun, epoch: int) -> Metrics:
    """Train one epoch, validate, step the plateau schedule and early stopping; the epoch's report."""
    t0 = time.perf_counter()
    loss_sum, rows = _train_shard(run, epoch)
    train_s = time.perf_counter() - t0
    train_loss, train_seen, train_time = _all_reduce_sum([float(loss_sum), float(rows), train_s], run.ctx.device)
    val = evaluate_shard(run.scored, run.data.val_batches(run.cfg.eval_batch_size), run.ctx, run.amp)
    watched = val["loss"] if run.stopper.metric == "val_loss" else val["accuracy"]
    lr = run.optimizer.param_groups[0]["lr"]
    if not run.per_step:
        run.scheduler.step(watched)
    stop = run.stopper.step(watched, epoch, run.scored)
    return {
        "epoch": epoch,
        "train_loss": train_loss / max(train_seen, 1),
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        # in-loop throughput: all ranks' rows over the mean rank's training time
        "samples_per_s": train_seen / max(train_time / run.ctx.world_size, 1e-9),
        "epoch_s": time.perf_counter() - t0,
        "lr": lr,
        "best_epoch": stop.best_epoch if stop.best_epoch is not None else epoch,
    }


def checkpoint_state(run: WorkerRun, epoch: int) -> TrainState | None:
    """Epoch `epoch`'s checkpoint on rank 0, None elsewhere (collective: every rank calls it)."""
    rng = _gather_rng(run.ctx.device, run.ctx.world_size)
    if run.ctx.rank != 0:
        return None
    # A snapshot: the optimizer's state dict references tensors that the next step mutates.
    return TrainState(
        model=_cpu_state(run.core),
        optimizer=copy.deepcopy(run.optimizer.state_dict()),
        scheduler=copy.deepcopy(run.scheduler.state_dict()),
        epoch=epoch,
        history=list(run.history),
        early_stopping=run.stopper.state,
        rng=rng,
        world_size=run.ctx.world_size,
        ema=None if run.ema is None else _cpu_state(run.ema),
    )


def train_worker(
    cfg: JobConfig,
    data: TrainData | StreamData,
    ctx: WorkerContext,
    report: Report,
    resume: TrainState | None = None,
    wrap_model: Callable[[nn.Module], nn.Module] = lambda m: m,
    log_metrics: Callable[[Metrics, int], None] | None = None,
    vocabulary: list[str] | None = None,
    idf: dict[str, dict] | None = None,
) -> None:
    """Train from scratch or from `resume`, calling `report(metrics, state)` once per epoch on every
    rank; `state` is the checkpoint to save on rank 0, None elsewhere. `vocabulary`: the tokens by id
    (pipeline.data.tokenizer.vocabulary), which model.ngram_char_buckets needs; `idf`: the bags' idf,
    which model.ngram_weighting=idf needs (pipeline.train.idf.document_frequencies).

    `wrap_model` places the model (DDP under Ray). `log_metrics(metrics, epoch)` runs after the
    report, so an epoch is logged only once its checkpoint exists.
    Raises UserInputError when pooling='last' meets right padding (the last step would be padding).
    """
    check_padding_side(cfg.model, data.padding_side)
    run = setup(cfg, data, ctx, resume, wrap_model, vocabulary, idf)
    try:
        for epoch in range(run.start_epoch, cfg.train.epochs):
            metrics = run_epoch(run, epoch)
            run.history.append(metrics)
            report(metrics, checkpoint_state(run, epoch))
            if log_metrics is not None:
                log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, epoch)
            if run.stopper.state.stopped:
                break
    finally:
        run.data.close()


def load_worker_data(loop_config: dict[str, Any], ctx: WorkerContext) -> TrainData | StreamData:
    """The whole prepared data in memory, or this worker's Ray Data shards (loop_config["data_loading"],
    resolved by the driver; streaming workers never open the store themselves)."""
    if loop_config.get("data_loading") == "stream":
        from pipeline.train.stream import StreamData  # stream builds on this module's batch plan

        job = JobConfig.model_validate(loop_config["job"])
        return StreamData.from_ray(Manifest.model_validate(loop_config["manifest"]), ctx, job.train)
    return load_train_data(loop_config["data_path"], ctx.rank, ctx.world_size)


def ray_report(metrics: Metrics, state: TrainState | None) -> None:
    """Ray Train's report, with rank 0's checkpoint written to a folder Ray uploads and then deletes."""
    if state is None:
        ray.train.report(metrics, checkpoint=None)
        return
    checkpoint = ray.train.Checkpoint.from_directory(save_checkpoint_dir(state))
    ray.train.report(metrics, checkpoint=checkpoint, delete_local_checkpoint_after_upload=True)


def train_loop_per_worker(loop_config: dict[str, Any], report: Report = ray_report) -> None:
    """What each Ray Train worker runs. `report` receives every epoch's metrics and checkpoint
    (Ray Train's report by default; a caller may wrap it to observe the epochs or stop a worker)."""
    cfg = JobConfig.model_validate(loop_config["job"])  # re-validated: workers never trust a loose dict
    train_ctx = ray.train.get_context()
    ctx = WorkerContext(train_ctx.get_world_rank(), train_ctx.get_world_size(), ray.train.torch.get_device())
    tracker = RankZeroLogger(
        loop_config.get("tracking_uri"),
        loop_config.get("run_id"),
        ctx.rank,
        constant_lr=cfg.train.lr_schedule == "constant",
    )
    if ctx.device.type == "cpu":
        configure_cpu(cfg)
    else:
        torch.backends.cudnn.enabled = True  # cuDNN RNN kernels
        torch.backends.cudnn.benchmark = True
    data = load_worker_data(loop_config, ctx)
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = load_newest_usable(d)
    train_worker(
        cfg,
        data,
        ctx,
        report,
        resume=resume,
        wrap_model=ray.train.torch.prepare_model,
        log_metrics=tracker.log_metrics,
        vocabulary=loop_config.get("vocabulary"),
        idf=loop_config.get("idf"),
    )

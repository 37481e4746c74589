"""The function every Ray Train worker runs.

Each worker reads only its shard of the prepared Parquet files (contiguous NumPy arrays, no
per-row Python), trains under DDP, and calls `ray.train.report` exactly once per epoch, the
same number of times on every rank (a rank that reported less would hang the others). Only
rank 0 writes: MLflow metrics through RankZeroLogger, and the checkpoint.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from pipeline.data.store import load_manifest, read_split_arrays
from pipeline.evaluate import loss_fn
from pipeline.model import build_model
from pipeline.tracking import RankZeroLogger
from schemas.config import JobConfig

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class WorkerContext:
    rank: int
    world_size: int
    device: torch.device


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_cpu(cfg: JobConfig) -> None:
    threads = cfg.train.threads_per_worker or max(int(cfg.scaling.cpus_per_worker), 1)
    torch.set_num_threads(threads)
    if cfg.train.flush_denormal:
        # Vanishing RNN gradients become denormal floats, which run many times slower on x86.
        torch.set_flush_denormal(True)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


@torch.no_grad()
def evaluate_shard(model, ids: np.ndarray, labels: np.ndarray, ctx: WorkerContext, batch_size: int, amp) -> dict:
    """Loss and accuracy over all ranks' shards (each rank scores its rows; sums are all-reduced)."""
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for start in range(0, len(ids), batch_size):
        x = torch.from_numpy(ids[start : start + batch_size]).to(ctx.device, non_blocking=True).long()
        y = torch.from_numpy(labels[start : start + batch_size]).to(ctx.device, non_blocking=True)
        with amp():
            logits = model(x)
        loss_sum += float(loss_fn(logits, y)) * len(y)
        pred = (logits > 0).long() if logits.dim() == 1 else logits.argmax(-1)
        correct += float((pred == y).sum())
        count += len(y)
    model.train()
    loss_sum, correct, count = _all_reduce_sum([loss_sum, correct, count], ctx.device)
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1)}


def _amp_factory(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return lambda: torch.autocast("cpu", enabled=False)


def _save_checkpoint(state: dict[str, Any]) -> ray.train.Checkpoint:
    tmp = tempfile.mkdtemp(prefix="rnn-ckpt-")
    torch.save(state, os.path.join(tmp, CHECKPOINT_FILE))
    return ray.train.Checkpoint.from_directory(tmp)


def load_checkpoint_state(checkpoint_dir: str) -> dict[str, Any]:
    """State dicts only: loaded with weights_only=True, so no pickled code runs."""
    return torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), map_location="cpu", weights_only=True)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg = JobConfig.model_validate(loop_config["job"])  # re-validated: workers never trust a loose dict
    data_path: str = loop_config["data_path"]
    train_ctx = ray.train.get_context()
    ctx = WorkerContext(train_ctx.get_world_rank(), train_ctx.get_world_size(), ray.train.torch.get_device())
    tracker = RankZeroLogger(loop_config.get("tracking_uri"), loop_config.get("run_id"), ctx.rank)
    if ctx.device.type == "cpu":
        configure_cpu(cfg)
    else:
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.train.seed)  # same initial weights on every rank; DDP also broadcasts them
    amp = _amp_factory(ctx.device)

    manifest = load_manifest(data_path)
    train_ids, train_y, _ = read_split_arrays(data_path, "train")
    val_ids, val_y, _ = read_split_arrays(data_path, "validation")
    # Validation is split without padding (no row counted twice); sums are all-reduced.
    val_ids, val_y = val_ids[ctx.rank :: ctx.world_size], val_y[ctx.rank :: ctx.world_size]
    num_classes = len(manifest.label_names)
    if ctx.device.type == "cuda":  # the whole shard fits on the device: no host->device copy per step
        train_ids_t = torch.from_numpy(train_ids).to(ctx.device)
        train_y_t = torch.from_numpy(train_y).to(ctx.device)
    else:
        train_ids_t, train_y_t = torch.from_numpy(train_ids), torch.from_numpy(train_y)

    model = build_model(manifest.vocab_size, manifest.pad_id, num_classes, cfg.model)
    model = ray.train.torch.prepare_model(model)  # device placement + DDP when world_size > 1
    core = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted worker group or a rerun of the same job name
        with checkpoint.as_directory() as d:
            state = load_checkpoint_state(d)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"] + 1, state.get("history", [])

    bs = cfg.train.batch_size
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        idx = torch.from_numpy(shard_indices(len(train_y), ctx.rank, ctx.world_size, cfg.train.seed, epoch))
        model.train()
        loss_sum, seen = torch.zeros((), device=ctx.device), 0
        for start in range(0, len(idx), bs):
            b = idx[start : start + bs].to(train_ids_t.device)
            x = train_ids_t[b].to(ctx.device, non_blocking=True).long()
            y = train_y_t[b].to(ctx.device, non_blocking=True)
            with amp():
                logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            seen += len(y)
        elapsed = time.perf_counter() - t0
        train_loss, train_seen = _all_reduce_sum([float(loss_sum), float(seen)], ctx.device)
        val = evaluate_shard(model, val_ids, val_y, ctx, max(bs, 512), amp)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss / max(train_seen, 1),
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "samples_per_s": train_seen / max(elapsed, 1e-9),
            "lr": optimizer.param_groups[0]["lr"],
        }
        history.append(metrics)
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        ckpt = None
        if ctx.rank == 0:
            ckpt = _save_checkpoint({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                                     "epoch": epoch, "history": history})
        ray.train.report(metrics, checkpoint=ckpt)

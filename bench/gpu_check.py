"""GPU check, one prepared script: the project's loop under Ray Train with use_gpu=true, fed both
ways (train.data_loading=memory and =stream), against plain PyTorch on the same GPU, same model,
batch and length, in one run.

    python -m bench.gpu_check [--rows 200000] [--length 512] [--batch-size 512] [--epochs 4]
    python -m bench.gpu_check --cpu-smoke      # tiny sizes on CPU (use_gpu=false): checks the script

A synthetic corpus (left padded, IMDB-like random lengths) is written in the prepared-data layout to
a temporary folder. The plain loop keeps the data on the device and uses bf16 autocast (fp16 where
bf16 is unsupported) with cuDNN RNN kernels, as the project's loop does with its defaults
(train.amp, train.data_on_device). The streaming fit reads the Parquet file through Ray Data, pins
each window in Ray Data's prefetch threads and copies batches to the GPU asynchronously. Prints
samples/s of each (the median over the epochs after the first), the ratios (goals: in memory
>= 0.95, streaming >= 0.9 of plain) and the fixed overhead of each fit; with $OUT set, writes the
figures to $OUT/gpu_check.json. Needs no MLflow server and no S3; uses only torch APIs available in
torch 2.11 and older. Default sizes run in about 3-4 minutes on one H100.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from pipeline.data.store import MARKER
from pipeline.evaluation.scoring import loss_fn
from pipeline.model import build_model
from pipeline.train.trainer import fit
from schemas.config import JobConfig
from schemas.features import Manifest, SplitInfo

PAD, VOCAB = 0, 10000


def synthetic_split(rows: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded rows of random ids with IMDB-like lengths; label = a token's presence (learnable)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(230), 0.7, rows).astype(int), 10, length)
    ids = rng.integers(2, VOCAB, (rows, length), dtype=np.int32)
    ids[np.arange(length)[None, :] < (length - lengths)[:, None]] = PAD
    y = rng.integers(0, 2, rows).astype(np.int64)
    ids[y == 1, -1] = 7  # the last token gives the label away: the check is about speed
    return ids, y


def write_prepared(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    width = next(iter(splits.values()))[0].shape[1]
    infos = {}
    for name, (ids, y) in splits.items():
        n_tok = (ids != PAD).sum(1).astype(np.int32)
        pq.write_table(
            pa.table(
                {
                    "text": pa.array([""] * len(y)),
                    "label": pa.array(y, pa.int64()),
                    "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1), pa.int32()), width),
                    "length": pa.array(n_tok),
                    "n_tokens": pa.array(n_tok),
                }
            ),
            root / f"{name}.parquet",
            row_group_size=4096,
        )  # row groups of ~8 MB: Ray Data streams them
        counts = np.bincount(y, minlength=2)
        infos[name] = SplitInfo(
            rows=len(y),
            label_counts={"neg": int(counts[0]), "pos": int(counts[1])},
            digest=name,
            file=f"{name}.parquet",
        )
    manifest = Manifest(
        cache_key="gpu-check",
        created_at="2026-01-01T00:00:00+00:00",
        source={"kind": "synthetic"},
        inputs=[],
        input_digest="-",
        label_names=["neg", "pos"],
        vocab_size=VOCAB,
        pad_id=PAD,
        unk_id=1,
        max_length=width,
        padding_side="left",
        truncation_side="left",
        tokenizer_file="tokenizer.json",
        tokenizer_digest="-",
        splits=infos,
        length_stats={},
        cleaning={},
        content_digest="-",
        versions={},
    )
    (root / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json")))
    (root / MARKER).write_text("ok\n")
    return root


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def plain_gpu(cfg: JobConfig, ids: np.ndarray, y: np.ndarray, epochs: int, dev: torch.device) -> float:
    """Samples/s of the textbook loop on one device (first epoch is warm-up and not counted)."""
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = build_model(VOCAB, PAD, 2, cfg.model).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    x_all, y_all = torch.from_numpy(ids).long().to(dev), torch.from_numpy(y).to(dev)
    dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    amp = cfg.train.amp and dev.type == "cuda"
    bs, rates = cfg.train.batch_size, []
    for epoch in range(epochs):
        perm = torch.randperm(len(y_all), device=dev)
        ex, ey = x_all[perm], y_all[perm]
        sync(dev)
        t0 = time.perf_counter()
        for s in range(0, len(ey), bs):
            with torch.autocast(dev.type, dtype=dtype, enabled=amp):
                logits = model(ex[s : s + bs])
            loss = loss_fn(logits, ey[s : s + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
        sync(dev)
        if epoch > 0 or epochs == 1:
            rates.append(len(ey) / (time.perf_counter() - t0))
    return float(np.median(rates))


def ray_fit(cfg: JobConfig, data: Path, loading: str) -> dict:
    """One fit: median in-loop samples/s over the epochs after the first, and its fixed overhead."""
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"data_loading": loading})})
    t0 = time.perf_counter()
    result = fit(cfg, data, f"gpu-check-{loading}", None, None)
    wall = time.perf_counter() - t0
    rates = [h["samples_per_s"] for h in result.history]
    return {
        "samples_per_s": float(np.median(rates[1:] or rates)),
        "per_epoch": [round(r) for r in rates],
        "val_accuracy": result.metrics["val_accuracy"],
        "overhead_s": wall - sum(h["epoch_s"] for h in result.history),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--no-amp", action="store_true", help="float32 instead of bf16 autocast")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny sizes on CPU with use_gpu=false: checks that the script runs, measures nothing",
    )
    args = parser.parse_args(argv)
    gpu = not args.cpu_smoke
    if args.cpu_smoke:
        args.rows, args.length, args.batch_size, args.epochs = 2000, 32, 128, 2
    elif not torch.cuda.is_available():
        raise SystemExit(
            "bench.gpu_check needs a CUDA GPU (torch.cuda.is_available() is False); "
            "--cpu-smoke checks the script on CPU"
        )
    dev = torch.device("cuda" if gpu else "cpu")
    if gpu:
        print(
            f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
            f"bf16 {torch.cuda.is_bf16_supported()}, cudnn {torch.backends.cudnn.version()}"
        )
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        train = synthetic_split(args.rows, args.length, 0)
        data = write_prepared(
            Path(tmp) / "data",
            {
                "train": train,
                "validation": synthetic_split(2000, args.length, 1),
                "test": synthetic_split(100, args.length, 2),
            },
        )
        cpus = 4 if gpu else 1  # streaming needs a CPU beyond the worker's for Ray Data's reads
        cfg = JobConfig.model_validate(
            {
                "output_root": str(Path(tmp) / "out"),
                "train": {
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "amp": not args.no_amp,
                    "eval_batch_size": 2048,
                },
                "scaling": {"num_workers": 1, "use_gpu": gpu, "cpus_per_worker": cpus},
            }
        )
        plain = plain_gpu(cfg, *train, epochs=args.epochs, dev=dev)
        print(
            f"plain PyTorch      {plain:10.0f} samples/s  (batch {args.batch_size}, length {args.length}, "
            f"{args.rows} rows)"
        )
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=None if gpu else 3, include_dashboard=False, log_to_driver=True)
        cluster_s = time.perf_counter() - t0
        fits = {loading: ray_fit(cfg, data, loading) for loading in ("memory", "stream")}
        ray.shutdown()
        for loading, f in fits.items():
            print(
                f"ray {loading:<6} use_gpu={gpu} {f['samples_per_s']:10.0f} samples/s  per epoch: {f['per_epoch']}  "
                f"val_acc {f['val_accuracy']:.3f}  fit overhead {f['overhead_s']:.1f}s"
            )
        figures = {
            "device": torch.cuda.get_device_name(0) if gpu else "cpu (smoke)",
            "torch": torch.__version__,
            "rows": args.rows,
            "length": args.length,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "amp": not args.no_amp,
            "cluster_start_s": cluster_s,
            "plain_samples_per_s": plain,
            **{f"ray_{k}": v for k, v in fits.items()},
            "memory_over_plain": fits["memory"]["samples_per_s"] / plain,
            "stream_over_plain": fits["stream"]["samples_per_s"] / plain,
        }
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(figures, indent=2))
        print(f"cluster start {cluster_s:.1f}s")
        print(
            f"memory/plain={figures['memory_over_plain']:.3f} (goal >= 0.95) "
            f"stream/plain={figures['stream_over_plain']:.3f} (goal >= 0.9)"
        )


if __name__ == "__main__":
    main()

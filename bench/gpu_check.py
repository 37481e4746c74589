"""GPU check, one prepared script: the project's loop under Ray Train with use_gpu=true, fed both
ways (train.data_loading=memory and =stream), against plain PyTorch on the same GPU, same model,
batch and length, in one run.

    python -m bench.gpu_check [--rows 300000] [--length 512] [--batch-size 512] [--epochs 4]
    python -m bench.gpu_check --device cpu     # tiny sizes on CPU (use_gpu=false): checks the script

A synthetic corpus (left padded, IMDB-like random lengths) is written in the prepared-data layout to
a temporary folder, the training split in shards of --shard-mb as prepare writes it (Ray Data reads
one task per shard). The plain loop keeps the data on the device and uses bf16 autocast (fp16 where
bf16 is unsupported) with cuDNN RNN kernels, as the project's loop does with its defaults
(train.amp, train.data_on_device). The streaming fit reads the shards through Ray Data, permutes and
pins each window in Ray Data's prefetch threads and copies batches to the GPU asynchronously.

Measures, in one run: plain PyTorch; the project's fit under Ray Train fed in memory and streamed
(samples/s: the median over the epochs after the first; fixed overhead of each fit); and a
data-only probe, one Ray Train worker iterating each path's batches with no model (rows/s and the
wait for the first batch, per epoch), which says whether the input or the step bounds a path.
Prints the ratios (goals: in memory >= 0.95, streaming >= 0.9 of plain); with $OUT set, writes every
figure to $OUT/gpu_check.json. Needs no MLflow server and no S3; uses only torch APIs available in
torch 2.11 and older. Default sizes take 3-4 minutes on one H100 or H200 (cluster start included),
about a minute of it in the data-only probes, which --no-probes skips (the ratios need only the fits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from pipeline.data.store import MARKER, load_manifest
from pipeline.evaluation.scoring import loss_fn
from pipeline.model import build_model
from pipeline.train.loop import WorkerContext, load_train_data
from pipeline.train.stream import StreamData, data_config, stream_datasets
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


def write_prepared(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], shard_mb: float = 32.0) -> Path:
    """The prepared-data layout: each split as `<split>/part-*.parquet` shards of about `shard_mb`."""
    root.mkdir(parents=True, exist_ok=True)
    width = next(iter(splits.values()))[0].shape[1]
    per_shard = max(int(shard_mb * 2**20 // (width * 4)), 1)
    infos = {}
    for name, (ids, y) in splits.items():
        n_tok = (ids != PAD).sum(1).astype(np.int32)
        (root / name).mkdir(exist_ok=True)
        shards = []
        for i, start in enumerate(range(0, max(len(y), 1), per_shard)):
            cut = slice(start, start + per_shard)
            rows = len(y[cut])
            file = f"{name}/part-{i:05d}.parquet"
            pq.write_table(
                pa.table(
                    {
                        "text": pa.array([""] * rows),
                        "label": pa.array(y[cut], pa.int64()),
                        "input_ids": pa.FixedSizeListArray.from_arrays(
                            pa.array(ids[cut].reshape(-1), pa.int32()), width
                        ),
                        "length": pa.array(n_tok[cut]),
                        "n_tokens": pa.array(n_tok[cut]),
                    }
                ),
                root / file,
                row_group_size=4096,
            )  # row groups of ~8 MB: Ray Data streams them
            shards.append({"file": file, "rows": rows, "digest": f"{name}-{i}"})
        counts = np.bincount(y, minlength=2)
        infos[name] = SplitInfo(
            rows=len(y),
            label_counts={"neg": int(counts[0]), "pos": int(counts[1])},
            digest=name,
            shards=shards,
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


def _data_only_loop(config: dict) -> None:
    """A Ray Train worker that iterates one path's batches (moved to the device) with no model."""
    cfg = JobConfig.model_validate(config["job"])
    import ray.train.torch

    ctx = WorkerContext(0, 1, ray.train.torch.get_device())
    if config["loading"] == "stream":
        data = StreamData.from_ray(load_manifest(config["data"]), ctx, cfg.train)
    else:
        data = load_train_data(config["data"], 0, 1).place(ctx, cfg.train)
    epochs = []
    for epoch in range(cfg.train.epochs):
        t0, first, rows = time.perf_counter(), None, 0
        for x, y in data.train_batches(epoch, ctx, cfg.train):
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            first = time.perf_counter() - t0 if first is None else first
            rows += len(y)
        sync(ctx.device)
        train_s = time.perf_counter() - t0
        t1, val_rows = time.perf_counter(), 0
        for _, y in data.val_batches(cfg.train.eval_batch_size):
            val_rows += len(y)
        epochs.append(
            {
                "rows_per_s": rows / train_s,
                "first_batch_s": first or 0.0,
                "train_s": train_s,
                "val_s": time.perf_counter() - t1,
                "rows": rows,
                "val_rows": val_rows,
            }
        )
    Path(config["out"]).write_text(json.dumps(epochs))


def data_only(cfg: JobConfig, data: Path, loading: str, tmp: Path) -> dict:
    """Rows/s one worker's input delivers on `loading`'s path with no model (median after epoch 0)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    train = cfg.train.model_copy(update={"data_loading": loading})
    cfg = cfg.model_copy(update={"train": train})
    out = tmp / f"data-only-{loading}.json"
    streaming = loading == "stream"
    trainer = TorchTrainer(
        _data_only_loop,
        train_loop_config={"job": cfg.model_dump(mode="json"), "data": str(data), "loading": loading, "out": str(out)},
        datasets=stream_datasets(data, cfg.train) if streaming else None,
        dataset_config=data_config() if streaming else None,
        scaling_config=ScalingConfig(
            num_workers=1,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker, **({"GPU": 1} if cfg.scaling.use_gpu else {})},
        ),
        run_config=RunConfig(name=f"data-only-{loading}", storage_path=str(tmp / "data-only")),
    )
    trainer.fit()
    epochs = json.loads(out.read_text())
    later = epochs[1:] or epochs
    return {
        "rows_per_s": float(np.median([e["rows_per_s"] for e in later])),
        "first_batch_s": float(np.median([e["first_batch_s"] for e in later])),
        "val_s": float(np.median([e["val_s"] for e in later])),
        "per_epoch": [{k: round(v, 3) for k, v in e.items()} for e in epochs],
    }


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


def ratio_line(ratios: dict[str, float]) -> str:
    """The check's verdict: each path's samples/s over plain PyTorch's, with its goal."""
    return (
        f"memory/plain={ratios['memory_over_plain']:.3f} (goal >= 0.95) "
        f"stream/plain={ratios['stream_over_plain']:.3f} (goal >= 0.9)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--no-amp", action="store_true", help="float32 instead of bf16 autocast")
    parser.add_argument("--shard-mb", type=float, default=32.0, help="size of each stored Parquet shard")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cpu: use_gpu=false, tiny sizes unless --rows/--length are given: checks that the script runs",
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="the same as --device cpu")
    parser.add_argument("--no-probes", action="store_true", help="skip the data-only probes (saves device time)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    gpu = args.device == "cuda" and not args.cpu_smoke
    if not gpu:
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        if "--rows" not in given:
            args.rows = 2000
        if "--length" not in given:
            args.length = 32
        if "--batch-size" not in given:
            args.batch_size = 128
        if "--epochs" not in given:
            args.epochs = 2
    elif not torch.cuda.is_available():
        raise SystemExit(
            "bench.gpu_check needs a CUDA GPU (torch.cuda.is_available() is False); "
            "--device cpu checks the script on CPU"
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
                "validation": synthetic_split(max(args.rows // 20, 1000), args.length, 1),
                "test": synthetic_split(100, args.length, 2),
            },
            shard_mb=args.shard_mb,
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
        num_cpus = args.cpus or (None if gpu else 3)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
        cluster_s = time.perf_counter() - t0
        fits = {loading: ray_fit(cfg, data, loading) for loading in ("memory", "stream")}
        for loading, f in fits.items():
            print(
                f"ray {loading:<6} use_gpu={gpu} {f['samples_per_s']:10.0f} samples/s  per epoch: {f['per_epoch']}  "
                f"val_acc {f['val_accuracy']:.3f}  fit overhead {f['overhead_s']:.1f}s"
            )
        ratios = {f"{k}_over_plain": f["samples_per_s"] / plain for k, f in fits.items()}
        # Printed before the probes too: a device session's time limit that stops the probes keeps these.
        print(ratio_line(ratios), flush=True)
        loadings = () if args.no_probes else ("memory", "stream")
        probes = {loading: data_only(cfg, data, loading, Path(tmp)) for loading in loadings}
        ray.shutdown()
        for loading, p in probes.items():
            print(
                f"data only {loading:<6} {p['rows_per_s']:10.0f} rows/s  first batch {p['first_batch_s']:.2f}s  "
                f"validation {p['val_s']:.2f}s  (median over epochs after the first)"
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
            "train_files": len(load_manifest(data).splits["train"].files),
            **{f"ray_{k}": v for k, v in fits.items()},
            **{f"data_only_{k}": v for k, v in probes.items()},
            **ratios,
            "total_s": time.perf_counter() - started,
        }
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(figures, indent=2))
        print(f"cluster start {cluster_s:.1f}s, total {figures['total_s']:.0f}s")
        print(ratio_line(ratios))


if __name__ == "__main__":
    main()

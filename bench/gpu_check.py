"""GPU check, one prepared script: the project's loop under Ray Train with use_gpu=true against plain
PyTorch on the same GPU, same model and same tensors, in one run.

    python -m bench.gpu_check [--rows 25000] [--length 512] [--batch-size 512] [--epochs 3]

A synthetic corpus of IMDB size (25k rows, length 512, left padded, random lengths) is written in
the prepared-data layout to a temporary folder. The plain loop keeps the data on the device and
uses bf16 autocast (fp16 where bf16 is unsupported) with cuDNN RNN kernels, as the project's loop
does with its defaults (train.amp, train.data_on_device). Prints samples/s of each, the ratio
(goal: >= 0.95) and the fixed overhead of the Ray fit. Needs one CUDA GPU; uses only torch APIs
available in torch 2.11 and older.
"""

from __future__ import annotations

import argparse
import json
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
        pq.write_table(pa.table({
            "text": pa.array([""] * len(y)), "label": pa.array(y, pa.int64()),
            "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1), pa.int32()), width),
            "length": pa.array(n_tok), "n_tokens": pa.array(n_tok),
        }), root / f"{name}.parquet")
        counts = np.bincount(y, minlength=2)
        infos[name] = SplitInfo(rows=len(y), label_counts={"neg": int(counts[0]), "pos": int(counts[1])},
                                digest=name, file=f"{name}.parquet")
    manifest = Manifest(
        cache_key="gpu-check", created_at="2026-01-01T00:00:00+00:00", source={"kind": "synthetic"}, inputs=[],
        input_digest="-", label_names=["neg", "pos"], vocab_size=VOCAB, pad_id=PAD, unk_id=1, max_length=width,
        padding_side="left", truncation_side="left", tokenizer_file="tokenizer.json", tokenizer_digest="-",
        splits=infos, length_stats={}, cleaning={}, content_digest="-", versions={},
    )
    (root / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json")))
    (root / MARKER).write_text("ok\n")
    return root


def plain_gpu(cfg: JobConfig, ids: np.ndarray, y: np.ndarray, epochs: int) -> float:
    """Samples/s of the textbook loop on one GPU (first epoch is warm-up and not counted)."""
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = build_model(VOCAB, PAD, 2, cfg.model).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    x_all, y_all = torch.from_numpy(ids).long().to(dev), torch.from_numpy(y).to(dev)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    bs, rates = cfg.train.batch_size, []
    for epoch in range(epochs):
        perm = torch.randperm(len(y_all), device=dev)
        ex, ey = x_all[perm], y_all[perm]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, len(ey), bs):
            with torch.autocast("cuda", dtype=dtype, enabled=cfg.train.amp):
                logits = model(ex[s : s + bs])
            loss = loss_fn(logits, ey[s : s + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
        torch.cuda.synchronize()
        if epoch > 0 or epochs == 1:
            rates.append(len(ey) / (time.perf_counter() - t0))
    return float(np.median(rates))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=25000)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-amp", action="store_true", help="float32 instead of bf16 autocast")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench.gpu_check needs a CUDA GPU (torch.cuda.is_available() is False)")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"bf16 {torch.cuda.is_bf16_supported()}, cudnn {torch.backends.cudnn.version()}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        train = synthetic_split(args.rows, args.length, 0)
        data = write_prepared(Path(tmp) / "data", {"train": train, "validation": synthetic_split(2000, args.length, 1),
                                                   "test": synthetic_split(100, args.length, 2)})
        cfg = JobConfig.model_validate({
            "output_root": str(Path(tmp) / "out"),
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "amp": not args.no_amp,
                      "eval_batch_size": 2048},
            "scaling": {"num_workers": 1, "use_gpu": True, "cpus_per_worker": 4},
        })
        plain = plain_gpu(cfg, *train, epochs=args.epochs)
        print(f"plain PyTorch      {plain:10.0f} samples/s  (batch {args.batch_size}, length {args.length})")
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=True)
        cluster_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = fit(cfg, data, "gpu-check", None, None)
        wall = time.perf_counter() - t0
        ray.shutdown()
        rates = [h["samples_per_s"] for h in result.history][1:] or [result.history[0]["samples_per_s"]]
        ray_rate = float(np.median(rates))
        print(f"ray train use_gpu  {ray_rate:10.0f} samples/s  per epoch: "
              f"{[round(h['samples_per_s']) for h in result.history]}  val_acc {result.metrics['val_accuracy']:.3f}")
        overhead = wall - sum(h["epoch_s"] for h in result.history)
        print(f"fixed overhead: cluster start {cluster_s:.1f}s, fit {overhead:.1f}s")
        print(f"ray/plain={ray_rate / plain:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()

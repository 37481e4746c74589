"""Training throughput on the embedded corpus: the project's loop against plain PyTorch, in one run.

    python -m bench.train [--epochs 3] [--threads 1] [--max-length 128] [--train-rows N]

Measures samples/s (training steps only, the "in-loop" rate) of
  plain        a single-process PyTorch loop over the same tensors, model, optimizer and batch size,
               with and without torch.set_flush_denormal (and the validation accuracy of each),
  loop         the project's training core in this process, with and without length bucketing,
  in-task      the plain loop again, run as a one-CPU Ray task (the Ray process, not the project),
  ray-1, ray-2 the project's loop under Ray Train with 1 and 2 CPU workers (MLflow logging and a
               checkpoint every epoch included), data in memory (train.data_loading=memory),
  stream-1     the same 1-worker fit fed by Ray Data (train.data_loading=stream),
  rss          one streaming worker's peak RSS over a 1-epoch fit of the corpus and of the corpus
               repeated 4 times (and the in-memory worker's, for contrast),
  data only    rows/s one worker's input delivers on each path with no model (and the wait for each
               epoch's first batch): what bounds a path once the model is fast (goal: well above the
               model's samples/s, e.g. > 100k rows/s per worker for a GPU),
and the fixed overhead of the Ray job in seconds (cluster start, then each fit's wall time minus
its epochs). The last line is
`ray/plain=<r> stream/memory=<r> worker_rss_growth=<g> bucketing_speedup=<r>`, where ray/plain is the
1-worker in-loop rate over the plain rate (goal: >= 0.9 per worker), the plain rate being the mean of
a measurement before and one after the Ray fits; stream/memory is stream-1 over ray-1 over the epochs
after the first (goal >= 0.9): the first epoch of a streaming fit also starts Ray Data's first execution
(new read-task processes: seconds on 2 busy cores, once per fit, whatever the corpus size), which on a
corpus of seconds per epoch would measure start-up, not throughput; the all-epoch ratio is printed too;
worker_rss_growth is the streaming worker's peak RSS with the 4x corpus over the base corpus (goal
<= 1.2). --train-rows cuts (or repeats) the training split to that many rows: tiny values check that
the script runs. Timings on a shared machine vary; compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from mlflow.tracking import MlflowClient

from bench.gpu_check import data_only
from jobs.config_loader import load_config
from pipeline.cluster import ray_session
from pipeline.data.prepare import prepare
from pipeline.data.store import load_manifest, split_files
from pipeline.evaluation.scoring import loss_fn, predict_proba
from pipeline.model import build_model
from pipeline.train.loop import WorkerContext, load_train_data, ray_report, train_loop_per_worker, train_worker
from pipeline.train.trainer import fit
from schemas.config import JobConfig


def plain_loop(cfg: JobConfig, data, epochs: int, flush_denormal: bool) -> tuple[float, float]:
    """(samples/s, validation accuracy) of the textbook loop: same model, Adam, clipping, batches."""
    torch.set_flush_denormal(flush_denormal)
    torch.manual_seed(cfg.train.seed)
    model = build_model(data.vocab_size, data.pad_id, data.num_classes, cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    ids, y = torch.from_numpy(data.train_ids).long(), torch.from_numpy(data.train_y)
    bs, seen, elapsed = cfg.train.batch_size, 0, 0.0
    for epoch in range(epochs):
        perm = torch.from_numpy(np.random.default_rng([cfg.train.seed, epoch]).permutation(len(y)))
        ex, ey = ids[perm], y[perm]
        t0 = time.perf_counter()
        for s in range(0, len(ey), bs):
            loss = loss_fn(model(ex[s : s + bs]), ey[s : s + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
        elapsed += time.perf_counter() - t0
        seen += len(ey)
    acc = float(np.mean(predict_proba(model, data.val_ids, 1024).argmax(axis=1) == data.val_y))
    torch.set_flush_denormal(True)
    return seen / elapsed, acc


def project_loop(cfg: JobConfig, data) -> tuple[float, float]:
    """(samples/s, last validation accuracy) of train_worker in this process, no Ray."""
    torch.set_flush_denormal(cfg.train.flush_denormal)
    reports = []
    train_worker(cfg, data, WorkerContext(0, 1, torch.device("cpu")), lambda m, s: reports.append(m))
    return float(np.mean([m["samples_per_s"] for m in reports])), reports[-1]["val_accuracy"]


def plain_in_ray_task(cfg: JobConfig, data, epochs: int, threads: int) -> float:
    """samples/s of the same plain loop run as a Ray task (one CPU): what a Ray worker process costs
    by itself, so a gap between ray-1 and plain can be told apart from the project's loop."""
    import ray

    @ray.remote(num_cpus=1)
    def task(cfg, data, epochs, threads):
        torch.set_num_threads(threads)
        return plain_loop(cfg, data, epochs, flush_denormal=True)[0]

    return ray.get(task.remote(cfg, data, epochs, threads))


def resized_copy(src: Path, dest: Path, rows: int) -> Path:
    """A copy of a local prepared dataset whose training split is cut or repeated to `rows` rows."""
    shutil.copytree(src, dest)
    manifest = load_manifest(dest)
    files = split_files(dest, "train")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    table = pa.concat_tables([table] * -(-rows // max(table.num_rows, 1))).slice(0, rows)
    per_file = -(-rows // len(files))
    for i, f in enumerate(files):
        pq.write_table(table.slice(i * per_file, per_file), f)
    info = manifest.splits["train"].model_copy(update={"rows": rows})
    updated = manifest.model_copy(update={"splits": {**manifest.splits, "train": info}})
    (dest / "manifest.json").write_text(updated.model_dump_json(indent=2))
    return dest


def rss_loop(loop_config: dict[str, Any]) -> None:
    """The project's worker loop, with each report carrying the worker's peak RSS so far (MiB)."""

    def report(metrics, state):
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        ray_report({**metrics, "peak_rss_mb": peak_mb}, state)

    train_loop_per_worker(loop_config, report=report)


class Fit(NamedTuple):
    rate: float  # in-loop samples/s over all workers, mean over the epochs
    steady: float  # the same over the epochs after the first (the first also starts the data pipeline)
    overhead_s: float  # the fit's wall time minus its epochs
    rss_mb: float  # rank 0's peak RSS


def ray_fit(
    cfg: JobConfig,
    data_path: Path,
    workers: int,
    name: str,
    tracking_uri: str,
    loading: str = "memory",
    epochs: int | None = None,
) -> Fit:
    train = cfg.train.model_copy(update={"data_loading": loading, "epochs": epochs or cfg.train.epochs})
    cfg = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"num_workers": workers}), "train": train})
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("bench") or client.get_experiment(client.create_experiment("bench"))
    run_id = client.create_run(exp.experiment_id, run_name=name).info.run_id
    t0 = time.perf_counter()
    result = fit(cfg, data_path, name, tracking_uri, run_id, train_loop=rss_loop)
    wall = time.perf_counter() - t0
    client.set_terminated(run_id)
    in_loop = sum(h["epoch_s"] for h in result.history)
    rates = [h["samples_per_s"] for h in result.history]
    return Fit(
        float(np.mean(rates)), float(np.mean(rates[1:] or rates)), wall - in_loop, float(result.metrics["peak_rss_mb"])
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process and per worker")
    parser.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="padded length (the seed's 128; longer padding makes denormals matter more)",
    )
    parser.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="cut or repeat the training split to this many rows (default: the corpus as is)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        cfg = load_config(
            None,
            [
                f"train.epochs={args.epochs}",
                f"train.threads_per_worker={args.threads}",
                f"tokenizer.max_length={args.max_length}",
            ],
        )
        prepared = prepare(cfg)
        cfg = cfg.model_copy(update={"output_root": tmp})
        base = Path(prepared.path).resolve()  # Ray workers run in another directory
        if args.train_rows:
            base = resized_copy(base, Path(tmp) / "base", args.train_rows)
        data = load_train_data(base, 0, 1)
        big = resized_copy(base, Path(tmp) / "x4", 4 * len(data.train_y))
        print(
            f"corpus: {len(data.train_y)} training rows, length {data.train_ids.shape[1]}, "
            f"batch {cfg.train.batch_size}, {args.epochs} epochs, {args.threads} thread(s)"
        )

        plain, plain_acc = plain_loop(cfg, data, args.epochs, flush_denormal=True)
        plain_dn, plain_dn_acc = plain_loop(cfg, data, args.epochs, flush_denormal=False)
        print(f"plain flush_denormal=on   {plain:9.0f} samples/s  val_acc {plain_acc:.4f}")
        print(
            f"plain flush_denormal=off  {plain_dn:9.0f} samples/s  val_acc {plain_dn_acc:.4f}  "
            f"(denormal_speedup={plain / plain_dn:.2f})"
        )

        loop, loop_acc = project_loop(cfg, data)
        bcfg = cfg.model_copy(
            update={
                "train": cfg.train.model_copy(update={"bucketing": True}),
                "model": cfg.model.model_copy(update={"trim_padding": True}),
            }
        )
        bucket, bucket_acc = project_loop(bcfg, data)
        print(f"loop                      {loop:9.0f} samples/s  val_acc {loop_acc:.4f}")
        print(f"loop bucketing            {bucket:9.0f} samples/s  val_acc {bucket_acc:.4f}")

        t0 = time.perf_counter()
        with ray_session(cfg.ray.model_copy(update={"num_cpus": 2})):
            cluster_s = time.perf_counter() - t0
            uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            ray1 = ray_fit(cfg, base, 1, "bench-1", uri)
            ray2 = ray_fit(cfg, base, 2, "bench-2", uri)
            stream1 = ray_fit(cfg, base, 1, "bench-stream-1", uri, loading="stream")
            rss_base = ray_fit(cfg, base, 1, "bench-rss-1x", uri, loading="stream", epochs=1).rss_mb
            rss_big = ray_fit(cfg, big, 1, "bench-rss-4x", uri, loading="stream", epochs=1).rss_mb
            probes = {path: data_only(cfg, base, path, Path(tmp)) for path in ("memory", "stream")}
            in_task = plain_in_ray_task(cfg, data, args.epochs, args.threads)  # the cluster is settled by now
        # Measured again after the Ray fits, so that drift in a shared machine's speed over the run
        # hits the baseline as much as the Ray rows; the baseline is the mean of the two.
        plain_after, _ = plain_loop(cfg, data, args.epochs, flush_denormal=True)
        print(f"plain flush_denormal=on   {plain_after:9.0f} samples/s  (again, after the Ray fits)")
        plain = (plain + plain_after) / 2
        print(
            f"plain in a Ray task       {in_task:9.0f} samples/s  ({in_task / plain:.2f} of plain: the Ray "
            "worker process itself, without the project's loop)"
        )
        r1, r2, s1 = ray1.rate, ray2.rate, stream1.rate
        print(f"ray-1 worker              {r1:9.0f} samples/s  ({r1 / plain:.2f} of plain)")
        print(f"ray-2 workers             {r2:9.0f} samples/s  ({r2 / 2 / plain:.2f} of plain per worker)")
        print(f"stream-1 worker           {s1:9.0f} samples/s  ({s1 / r1:.2f} of ray-1 in memory, all epochs)")
        print(
            f"after the first epoch     {stream1.steady:9.0f} samples/s streaming, {ray1.steady:.0f} in memory "
            f"({stream1.steady / ray1.steady:.2f}; the first also starts Ray Data's reads)"
        )
        print(
            f"fixed overhead: cluster start {cluster_s:.1f}s, fit overhead (worker start, data load, "
            f"checkpoints, MLflow) {ray1.overhead_s:.1f}s with 1 worker, {ray2.overhead_s:.1f}s with 2, "
            f"{stream1.overhead_s:.1f}s streaming"
        )
        print(
            f"worker peak RSS: streaming {rss_base:.0f} MiB ({len(data.train_y)} rows), {rss_big:.0f} MiB "
            f"(4x rows); in memory {ray1.rss_mb:.0f} MiB ({len(data.train_y)} rows)"
        )
        for path, p in probes.items():
            print(
                f"data only {path:<6}          {p['rows_per_s']:9.0f} rows/s     "
                f"first batch {p['first_batch_s']:.2f}s, validation {p['val_s']:.2f}s "
                "(no model; median over epochs after the first)"
            )
        print(
            f"ray/plain={r1 / plain:.2f} stream/memory={stream1.steady / ray1.steady:.2f} "
            f"worker_rss_growth={rss_big / rss_base:.2f} "
            f"bucketing_speedup={bucket / loop:.2f}"
        )


if __name__ == "__main__":
    main()

"""Batch scoring: one process (`jobs.predict` into a file) vs Ray Data (into a folder), and the driver's
memory at N and 4N rows.

    python -m bench.predict [--rows 200000] [--cpus 2]

1. A registered model: the seed config's model on the embedded corpus's prepared data, weights as
   initialised (scoring costs the same whatever the weights), logged and registered as jobs.run does
   in a temporary sqlite store. Inputs: bench.scale's corpus of N (and 4N) distinct texts, Parquet
   files of 100,000 rows; the single run reads one Parquet file of the same N rows.
2. Each measurement runs in a fresh child process (`--child`); a thread samples the child's RSS
   every 20 ms while it scores (the driver's: Ray's actors are other processes).
     single  pipeline.registry's predict_file path: the whole input in pandas, scored in one process
     ray     plan_scoring + score_to_folder on a local Ray cluster of --cpus CPUs (started before the clock)
   Both runs must write the same rows in the same order (checked); labels and probabilities are compared
   (a text's score depends a little on its batch-mates' padding, and the two paths batch differently).
3. Driver peak RSS of the Ray run at N and at 4N rows: g = peak(4N) / peak(N).
Last line: `scale-predict: rows=<N> ray/single=<throughput ratio> driver_rss_growth=<g>
single_rss_growth=<peak(4N)/peak(N) of the single run>`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.scale import PeakRss, build_corpus, run_child, start_local_ray


def register_seed_model(root: Path) -> str:
    """The seed config's model (untrained) registered as `bench` in root/mlflow.db; its tracking URI."""
    import mlflow
    import torch

    from pipeline.data.prepare import prepare
    from pipeline.model import build_model
    from pipeline.registry.log_model import log_raw_text_model
    from pipeline.registry.versions import register_version
    from pipeline.tracking import ensure_experiment, tracking_store
    from schemas.config import JobConfig

    cfg = JobConfig(output_root=str(root))
    prepared = prepare(cfg)
    m = prepared.manifest
    torch.manual_seed(0)
    state = build_model(m.vocab_size, m.pad_id, len(m.label_names), cfg.model).state_dict()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with tracking_store(uri) as client:
        experiment = ensure_experiment(client, "bench-predict", cfg.output_root)
        with mlflow.start_run(experiment_id=experiment) as run:
            info = log_raw_text_model(state, m, Path(prepared.path) / "tokenizer.json", cfg.model, ["好看"])
        version = register_version(client, "bench", info.model_uri, run.info.run_id, {}, "bench").version
        client.set_registered_model_alias("bench", "champion", version)
    return uri


def child(mode: str, corpus: str, out: str, uri: str, cpus: int) -> None:
    import pandas as pd

    from jobs.predict import predict_file
    from pipeline.registry.batch_scoring import plan_scoring, score_to_folder
    from pipeline.tracking import tracking_store

    model = "models:/bench@champion"
    t_ray = start_local_ray(cpus) if mode == "ray" else 0.0
    with PeakRss() as rss:
        t0 = time.perf_counter()
        with tracking_store(uri):
            if mode == "single":
                rows = len(predict_file(model, corpus, f"{out}/scored.parquet", prefix="pred_"))
            else:
                rows = score_to_folder(plan_scoring(model, corpus, f"{out}/scored", "text", "pred_")).rows
        wall = time.perf_counter() - t0
    path = Path(out) / ("scored.parquet" if mode == "single" else "scored")
    scored = pd.read_parquet(path, columns=["text", "pred_label", "pred_p_pos"])  # the corpus has its own label
    np.save(Path(corpus).with_name(f"{Path(corpus).name}-{mode}.npy"), scored["pred_p_pos"].to_numpy())
    labels = scored["pred_label"]
    print(
        json.dumps(
            {
                "mode": mode,
                "rows": rows,
                "wall_s": wall,
                "ray_start_s": t_ray,
                "peak_rss": rss.peak,
                "pos_share": float((labels == "pos").mean()),
                "texts_digest": hash(tuple(scored["text"])),
            }
        )
    )


def measure(mode: str, corpus: Path, uri: str, cpus: int) -> dict:
    env = {"PYTHONHASHSEED": "0"}  # the texts' digest compares the two runs' rows
    with tempfile.TemporaryDirectory(prefix="bench-predict-out-") as out:
        return run_child("bench.predict", [mode, str(corpus), out, uri, "--cpus", str(cpus)], env, mode)


def _one_file(folder: Path, target: Path) -> Path:
    """The folder's Parquet files as one file: the single-process path reads one file."""
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(sorted(folder.glob("*.parquet"))), target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="N, distinct texts to score")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "CORPUS", "OUT", "URI"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, cpus=args.cpus)
        return
    n = args.rows
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        uri = register_seed_model(root / "model")
        small, large = root / "n", root / "4n"
        build_corpus(n, small)
        build_corpus(4 * n, large)
        print(f"model registered and inputs of {n:,} / {4 * n:,} rows built in {time.perf_counter() - t0:.1f} s")
        single = measure("single", _one_file(small, root / "n.parquet"), uri, args.cpus)
        single4 = measure("single", _one_file(large, root / "4n.parquet"), uri, args.cpus)
        dist = measure("ray", small, uri, args.cpus)
        dist4 = measure("ray", large, uri, args.cpus)
        p_single, p_ray = np.load(root / "n.parquet-single.npy"), np.load(root / "n-ray.npy")
    if (single["texts_digest"], single["rows"]) != (dist["texts_digest"], dist["rows"]):
        raise SystemExit("single and Ray scoring wrote different rows or another order")
    # Not equal to the last bit: a text's score depends a little on the padding its batch-mates bring
    # (pipeline.model: trim_shared_padding); the two paths batch rows differently (2,048 vs 1,024 per call).
    diff = float(np.abs(p_single - p_ray).max())
    agree = float(((p_single >= 0.5) == (p_ray >= 0.5)).mean())
    print(f"{'run':<22}{'rows':>11}{'wall s':>9}{'rows/s':>10}{'driver peak RSS MiB':>21}")
    for name, r in (
        ("single (1 process)", single),
        ("single, 4N", single4),
        (f"ray ({args.cpus} CPUs)", dist),
        ("ray, 4N", dist4),
    ):
        rate, mib = r["rows"] / r["wall_s"], r["peak_rss"] / 2**20
        print(f"{name:<22}{r['rows']:>11,}{r['wall_s']:>9.1f}{rate:>10,.0f}{mib:>21.0f}")
    print(
        f"ray start (not timed): {dist['ray_start_s']:.1f} s; same rows in the same order; labels agree on "
        f"{agree:.4f} of rows, largest probability difference {diff:.2e}"
    )
    ratio = (dist["rows"] / dist["wall_s"]) / (single["rows"] / single["wall_s"])
    print(
        f"scale-predict: rows={n} ray/single={ratio:.2f} driver_rss_growth={dist4['peak_rss'] / dist['peak_rss']:.2f} "
        f"single_rss_growth={single4['peak_rss'] / single['peak_rss']:.2f}"
    )


if __name__ == "__main__":
    main()

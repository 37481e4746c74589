"""Prepare the corpus: clean, split, train the tokenizer, encode, store (reused when unchanged).

    python -m jobs.prepare [--config jobs/configs/embedded.yaml] [section.key=value ...]
"""

from __future__ import annotations

import sys

from jobs.cli import build_parser, run_main
from pipeline.data.prepare import PreparedData, prepare
from schemas.config import JobConfig


def run(cfg: JobConfig, force: bool = False) -> PreparedData:
    prepared = prepare(cfg, force=force)
    m = prepared.manifest
    sizes = ", ".join(f"{s} {i.rows}" for s, i in m.splits.items())
    print(f"{'reused' if prepared.reused else 'prepared'} {prepared.path}: {sizes}; vocab {m.vocab_size}, "
          f"labels {m.label_names}, max_length {m.max_length}, dropped {m.cleaning.dropped}")
    return prepared


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m jobs.prepare", __doc__)
    parser.add_argument("--force", action="store_true", help="recompute even if a stored result matches")
    return run_main(parser, lambda cfg, args: run(cfg, force=args.force), argv)


if __name__ == "__main__":
    sys.exit(main())

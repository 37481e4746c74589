"""Prepare the corpus: clean, split, train the tokenizer, encode, store (reused when unchanged).

python -m jobs.prepare [--config jobs/configs/embedded.yaml] [section.key=value ...]
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from jobs.cli import build_parser, run_main
from pipeline.console import say
from schemas.config import JobConfig

if TYPE_CHECKING:
    from pipeline.data.prepare import PreparedData


def run(cfg: JobConfig, force: bool = False) -> PreparedData:
    """Prepare (or reuse) the corpus and print one line saying what was prepared."""
    from pipeline.data.prepare import prepare  # here: `datasets` is slow to import, --help must not be

    prepared = prepare(cfg, force=force)
    m = prepared.manifest
    sizes = ", ".join(f"{s} {i.rows:,}" for s, i in m.splits.items())
    dropped = sum(m.cleaning.dropped.values())
    say(
        f"{'reused' if prepared.reused else 'prepared'} data: {sizes}; vocab {m.vocab_size:,}, "
        f"labels {list(m.label_names)}, max_length {m.max_length}, {dropped:,} rows dropped ({prepared.path})"
    )
    return prepared


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m jobs.prepare", __doc__)
    parser.add_argument("--force", action="store_true", help="recompute even if a stored result matches")
    return run_main(parser, lambda cfg, args: run(cfg, force=args.force), argv)


if __name__ == "__main__":
    sys.exit(main())

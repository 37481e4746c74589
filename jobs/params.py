"""Print each named parameter's shape and count for a model config, as the seed tutorial does.

    python -m jobs.params [--vocab-size 10000] [--seed-variants] [model.cell=gru ...]

`--seed-variants` prints the tutorial's three tables: one layer, two layers, bidirectional.
"""

from __future__ import annotations

import sys

from jobs.cli import build_parser, run_main
from schemas.config import JobConfig, ModelConfig


def tables(model_cfgs: dict[str, ModelConfig], vocab_size: int, pad_id: int = 0, num_classes: int = 2) -> str:
    from pipeline.model import build_model, format_parameter_table  # torch: imported on use, not for --help

    return "\n\n".join(
        format_parameter_table(build_model(vocab_size, pad_id, num_classes, m), title)
        for title, m in model_cfgs.items()
    )


def seed_variants(base: ModelConfig) -> dict[str, ModelConfig]:
    return {
        "one layer": base,
        "two layers": base.model_copy(update={"num_layers": 2}),
        "bidirectional": base.model_copy(update={"bidirectional": True}),
    }


def run(cfg: JobConfig, vocab_size: int, variants: bool) -> str:
    out = tables(seed_variants(cfg.model) if variants else {cfg.model.cell: cfg.model}, vocab_size)
    print(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m jobs.params", __doc__)
    parser.add_argument("--vocab-size", type=int, default=10000, help="vocabulary size (default: %(default)s)")
    parser.add_argument("--seed-variants", action="store_true", help="one-layer, two-layer and bidirectional")
    return run_main(parser, lambda cfg, args: run(cfg, args.vocab_size, args.seed_variants), argv)


if __name__ == "__main__":
    sys.exit(main())

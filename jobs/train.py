"""Train on the prepared corpus with Ray Train, track the run in MLflow, register a model version.

    python -m jobs.train [--config jobs/configs/embedded.yaml] [section.key=value ...]
"""

from __future__ import annotations

import sys

import ray

from jobs.cli import build_parser, run_main
from pipeline.data.prepare import PreparedData, prepare
from pipeline.tracking import resolve_tracking_uri
from pipeline.train.trainer import ensure_ray
from pipeline.train.workflow import TrainOutcome, train_and_register
from schemas.config import JobConfig


def run(cfg: JobConfig, prepared: PreparedData | None = None) -> TrainOutcome:
    """Train on `prepared`, or on prepare(cfg): the stored result of jobs.prepare when inputs are unchanged."""
    prepared = prepared or prepare(cfg)
    started = ensure_ray(cfg.ray)
    try:
        outcome = train_and_register(cfg, prepared, resolve_tracking_uri(cfg))
    finally:
        if started:
            ray.shutdown()
    print(f"run {outcome.run_id}: test accuracy {outcome.test_metrics['accuracy']:.4f}; "
          f"registered {outcome.registered_model} version {outcome.version}")
    return outcome


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser("python -m jobs.train", __doc__), lambda cfg, args: run(cfg), argv)


if __name__ == "__main__":
    sys.exit(main())

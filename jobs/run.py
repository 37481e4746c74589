"""The whole job, as a scheduled run does it: prepare -> train (Ray) -> register -> promote.

    python -m jobs.run [--config jobs/configs/embedded.yaml] [section.key=value ...]

It chains `jobs.train` and `jobs.promote`, so a scheduled run does exactly what the two stages do
by hand. Any failure stops the job before promotion: nothing is registered by a failed training
run, and the alias never moves on a failed evaluation.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from jobs import promote as promote_job
from jobs import train as train_job
from jobs.cli import build_parser, run_main
from pipeline.data.prepare import prepare
from pipeline.registry.promotion import Decision
from pipeline.tracking import mask_secrets, resolve_tracking_uri
from pipeline.train.workflow import TrainOutcome
from schemas.config import JobConfig


@dataclass(frozen=True)
class RunSummary:
    outcome: TrainOutcome
    decision: Decision
    tracking_uri: str
    wall_s: float

    def text(self) -> str:
        o, d = self.outcome, self.decision
        ui = (f"mlflow ui --backend-store-uri {self.tracking_uri}" if self.tracking_uri.startswith("sqlite:")
              else f"open {mask_secrets('tracking_uri', self.tracking_uri)}")
        versus = [f"baseline      : {o.versus_baseline.line()}"] if o.versus_baseline else []
        return "\n".join([
            "== summary ==",
            f"test accuracy : {o.test_metrics['accuracy']:.4f} (f1 {o.test_metrics['f1']:.4f})",
            *versus,
            f"parameters    : {o.n_params:,}",
            f"model version : {o.registered_model} v{o.version} (run {o.run_id})",
            f"promoted      : {'yes' if d.promoted else 'no'} ({d.reason})",
            *(f"adapted       : {n}" for n in o.notes),
            f"wall time     : {self.wall_s:.1f} s",
            f"MLflow UI     : {ui}",
        ])


def run(cfg: JobConfig) -> RunSummary:
    t0 = time.perf_counter()
    # Prepared once: training and the gate read the very same stored split, even if an input
    # file changes while the job runs, and the inputs are hashed once.
    prepared = prepare(cfg)
    outcome = train_job.run(cfg, prepared)  # Ray Train -> MLflow run -> registered version
    baseline = outcome.versus_baseline.baseline if outcome.versus_baseline else None  # fitted once, by the run
    decision = promote_job.run(cfg, outcome.version, prepared, baseline)  # same test split, same scoring code
    summary = RunSummary(outcome, decision, resolve_tracking_uri(cfg), time.perf_counter() - t0)
    print(summary.text())
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser("python -m jobs.run", __doc__), lambda cfg, args: run(cfg), argv)


if __name__ == "__main__":
    sys.exit(main())

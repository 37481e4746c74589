"""The whole job, as a scheduled run does it: prepare -> train (Ray) -> register -> promote.

    python -m jobs.run [--config jobs/configs/embedded.yaml] [section.key=value ...]

It chains `jobs.train` and `jobs.promote`, so a scheduled run does exactly what the two stages do
by hand. Any failure stops the job before promotion: nothing is registered by a failed training
run, and the alias never moves on a failed evaluation.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from jobs import promote as promote_job
from jobs import train as train_job
from jobs.cli import build_parser, run_main
from pipeline.data.prepare import prepare
from pipeline.registry.promotion import Decision
from pipeline.registry.schedule_lease import SCHEDULE_ENV, LeaseHeld, schedule_lease
from pipeline.tracking import mask_secrets, resolve_tracking_uri, tracking_store
from pipeline.train.workflow import TrainOutcome, config_digest
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


def run(cfg: JobConfig) -> RunSummary | None:
    """The whole job; under a schedule (env RNN_SCHEDULE_NAME) inside that schedule's lease, see scheduled()."""
    schedule = os.environ.get(SCHEDULE_ENV)
    return scheduled(cfg, schedule) if schedule else run_once(cfg)


def scheduled(cfg: JobConfig, schedule: str) -> RunSummary | None:
    """One run of `schedule` at a time, one run name across its retries (pipeline/registry/schedule_lease.py).

    The lease is taken before any work. A run that finds it held by a live run returns None (exit 0, so
    KubeRay does not retry); a retry after a failed or crashed run of the same configuration gets that
    run's name back, so it resumes its MLflow run and its `ray_results/<run name>` checkpoints.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with tracking_store(resolve_tracking_uri(cfg)) as client:
        try:
            with schedule_lease(client, schedule, new_run_name=f"{schedule}-{stamp}",
                                fingerprint=schedule_fingerprint(cfg), ttl_s=300.0,
                                wait_s=cfg.tracking.schedule_wait_s) as lease:
                named = cfg.tracking.model_copy(update={"run_name": lease.run_name})
                return run_once(cfg.model_copy(update={"tracking": named}))
        except LeaseHeld as e:
            print(f"skipped: {e}", file=sys.stderr)
            return None


def schedule_fingerprint(cfg: JobConfig) -> str:
    """The configuration a retry must share to resume a run: everything but the run's name."""
    return config_digest(cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"run_name": None})}))


def run_once(cfg: JobConfig) -> RunSummary:
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

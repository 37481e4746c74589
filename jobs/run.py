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
from typing import TYPE_CHECKING

from jobs import prepare as prepare_job
from jobs import promote as promote_job
from jobs import train as train_job
from jobs.cli import build_parser, run_main
from pipeline.console import say
from schemas.config import JobConfig

if TYPE_CHECKING:
    from pipeline.registry.promotion import Decision
    from pipeline.train.workflow import TrainOutcome


UI_PORT = 5000  # the port the printed `mlflow ui` command serves on, and the run link points at


@dataclass(frozen=True)
class RunSummary:
    outcome: TrainOutcome
    decision: Decision
    tracking_uri: str
    wall_s: float

    def text(self) -> str:
        from pipeline.masking import mask_secrets
        from pipeline.tracking import run_page_url

        o, d = self.outcome, self.decision
        local = self.tracking_uri.startswith("sqlite:")
        ui = (
            f"mlflow ui --backend-store-uri {self.tracking_uri} --port {UI_PORT}"
            if local
            else mask_secrets("tracking_uri", self.tracking_uri)
        )
        server = f"http://127.0.0.1:{UI_PORT}" if local else self.tracking_uri
        versus = [f"baseline      : {o.versus_baseline.line()}"] if o.versus_baseline else []
        return "\n".join(
            [
                "== summary ==",
                f"test accuracy : {o.test_metrics['accuracy']:.4f} (f1 {o.test_metrics['f1']:.4f})",
                *versus,
                f"parameters    : {o.n_params:,}",
                f"model version : {o.registered_model} v{o.version} (run {o.run_id})",
                f"promoted      : {'yes' if d.promoted else 'no'} ({d.reason})",
                *(f"adapted       : {n}" for n in o.notes),
                f"wall time     : {self.wall_s:.1f} s",
                f"MLflow UI     : {ui}",
                f"run page      : {mask_secrets('url', run_page_url(server, o.experiment_id, o.run_id))}",
            ]
        )


def run(cfg: JobConfig) -> RunSummary | None:
    """The whole job; under a schedule (env RNN_SCHEDULE_NAME) inside that schedule's lease, see scheduled()."""
    from pipeline.registry.schedule_lease import SCHEDULE_ENV, with_run_identity

    schedule = os.environ.get(SCHEDULE_ENV)
    return scheduled(cfg, schedule) if schedule else run_once(with_run_identity(cfg))


def scheduled(cfg: JobConfig, schedule: str) -> RunSummary | None:
    """One run of `schedule` at a time, one run name across its retries (pipeline/registry/schedule_lease.py).

    The lease is taken before any work. A run that finds it held by a live run returns None (exit 0, so
    KubeRay does not retry); a retry after a failed or crashed run of the same configuration (keys that may
    change on resume aside: more epochs) gets that run's name back, so it resumes its MLflow run and its
    `ray_results/<run name>` checkpoints. A new run is named after its Ray job submission id (else
    `<schedule>-<UTC time>`); KubeRay gives a retry a new id, so the lease's name is the one that survives.
    A run name the user set wins over both.
    """
    from pipeline.registry.schedule_lease import LeaseHeld, schedule_lease, with_run_identity
    from pipeline.tracking import resolve_tracking_uri, tracking_store

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    proposed = with_run_identity(cfg).tracking.run_name or f"{schedule}-{stamp}"
    with tracking_store(resolve_tracking_uri(cfg)) as client:
        try:
            with schedule_lease(
                client,
                schedule,
                new_run_name=proposed,
                fingerprint=schedule_fingerprint(cfg),
                ttl_s=300.0,
                wait_s=cfg.tracking.schedule_wait_s,
            ) as lease:
                named = cfg.tracking.model_copy(update={"run_name": cfg.tracking.run_name or lease.run_name})
                return run_once(cfg.model_copy(update={"tracking": named}))
        except LeaseHeld as e:
            print(f"skipped: {e}", file=sys.stderr)
            return None


def schedule_fingerprint(cfg: JobConfig) -> str:
    """The configuration a retry must share to resume a run: everything but the keys a resumed run may change
    (pipeline.tracking.RESUMABLE_KEYS, the run's name among them), so the lease and check_resume agree."""
    import hashlib
    import json

    from pipeline.tracking import RESUMABLE_KEYS, requested_config

    kept = {k: v for k, v in requested_config(cfg).items() if not k.startswith(RESUMABLE_KEYS)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def run_once(cfg: JobConfig) -> RunSummary:
    t0 = time.perf_counter()
    # Prepared once: training and the gate read the very same stored split, even if an input
    # file changes while the job runs, and the inputs are hashed once.
    from pipeline.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(cfg)  # an unusable store stops the job before prepare, not after
    train_job.resume_check(cfg, announce=False)  # before prepare: a named run resumed with a changed config stops here
    prepared = prepare_job.run(cfg)
    outcome = train_job.run(cfg, prepared)  # Ray Train -> MLflow run -> registered version
    baseline = outcome.versus_baseline.baseline if outcome.versus_baseline else None  # fitted once, by the run
    decision = promote_job.run(cfg, outcome.version, prepared, baseline)  # same test split, same scoring code
    summary = RunSummary(outcome, decision, tracking_uri, time.perf_counter() - t0)
    say(summary.text())
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser("python -m jobs.run", __doc__), lambda cfg, args: run(cfg), argv)


if __name__ == "__main__":
    sys.exit(main())

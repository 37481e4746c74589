"""Train on the prepared corpus with Ray Train, track the run in MLflow, register a model version.

python -m jobs.train [--config jobs/configs/embedded.yaml] [section.key=value ...]
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from jobs.cli import build_parser, run_main
from pipeline.console import say
from schemas.config import JobConfig

if TYPE_CHECKING:
    from pipeline.data.prepare import PreparedData
    from pipeline.train.workflow import TrainOutcome


def run(cfg: JobConfig, prepared: PreparedData | None = None) -> TrainOutcome:
    """Train on `prepared`, or on prepare(cfg): the stored result of jobs.prepare when inputs are unchanged.

    Under Ray Jobs an unnamed run is named after its submission id (resubmitting that id resumes it); a
    named run resumed with a changed configuration is checked before any work (check_resume)."""
    # Imported here, not at the top: `--help` must not wait for torch, Ray and MLflow.
    import json

    import mlflow

    from jobs.prepare import run as prepare
    from pipeline.adaptive import adapt_to_corpus
    from pipeline.cluster import ray_session
    from pipeline.registry.schedule_lease import with_run_identity
    from pipeline.tracking import (
        CHANGED_ON_RESUME_TAG,
        REQUESTED_CONFIG_TAG,
        mlflow_run,
        requested_config,
        resolve_tracking_uri,
        tracking_store,
    )
    from pipeline.train import workflow as step
    from pipeline.train.progress import EpochLines
    from pipeline.train.trainer import fit

    cfg = with_run_identity(cfg)
    changed = resume_check(cfg)
    requested = json.dumps(requested_config(cfg))  # what the user asked for, compared when the run resumes
    prepared = prepared or prepare(cfg)
    cfg, notes = adapt_to_corpus(cfg, prepared.manifest)  # the config logged is the one trained
    run_name = step.run_name(cfg, prepared.manifest)
    tags = {**step.lineage_tags(cfg, prepared), REQUESTED_CONFIG_TAG: requested}
    with (
        tracking_store(resolve_tracking_uri(cfg)) as client,
        named_run_guard(client, cfg),
        ray_session(cfg.ray),
        mlflow_run(client, cfg, run_name, tags) as run,
    ):
        if changed:
            mlflow.set_tag(CHANGED_ON_RESUME_TAG, changed)  # its params keep the first values
        n_params = step.log_inputs(cfg, prepared)
        baseline = step.log_baseline(cfg, prepared)
        result = fit(
            cfg,
            prepared.path,
            step.ray_run_name(cfg, run),
            client.tracking_uri,
            run.info.run_id,
            on_epoch=EpochLines(cfg.train.epochs, say),
        )
        evaluation = step.log_evaluation(cfg, prepared, result, baseline, notes)
        outcome = step.publish_model(client, run, cfg, prepared, result, evaluation, n_params, notes)
    say(
        f"registered {outcome.registered_model} v{outcome.version}: test accuracy "
        f"{outcome.test_metrics['accuracy']:.4f} (run {outcome.run_name}, {outcome.run_id})"
    )
    if outcome.versus_baseline:
        say(outcome.versus_baseline.line())
    return outcome


def resume_check(cfg: JobConfig, announce: bool = True) -> str | None:
    """Before prepare and Ray: a named run resumed with changed keys that may not change stops here with one
    line (UserInputError); allowed changes come back as a line (said when `announce`, and tagged on the run)."""
    if not cfg.tracking.run_name:
        return None
    from pipeline.tracking import check_resume, resolve_tracking_uri, tracking_store

    with tracking_store(resolve_tracking_uri(cfg)) as client:
        changed = check_resume(client, cfg)
    if changed and announce:
        say(f"resuming run {cfg.tracking.run_name!r} with {changed}")
    return changed


def named_run_guard(client, cfg: JobConfig) -> AbstractContextManager:
    """A named (resumable) run is held by one job at a time: a second one with the same name stops here."""
    if not cfg.tracking.run_name:
        return nullcontext()
    from pipeline.registry.schedule_lease import run_name_lease

    return run_name_lease(client, cfg.tracking.experiment_name, cfg.tracking.run_name)


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser("python -m jobs.train", __doc__), lambda cfg, args: run(cfg), argv)


if __name__ == "__main__":
    sys.exit(main())

"""Search hyperparameters with Ray Tune (ASHA), write the best config as a YAML the jobs load.

    python -m jobs.tune [--config jobs/configs/tune.yaml] [--output best-found.yaml | s3://b/best.yaml] [--register]
                        [section.key=value ...]      e.g. tune.num_samples=8 tune.time_budget_s=600

Each trial trains one sampled configuration (tune.space) as a Ray Train run on
tune.workers_per_trial workers and logs it as an MLflow child run of one parent run, which holds
the comparison table and plot. With tune.select_top=N the best N trials are then trained again on
tune.select_splits fresh train/validation splits and the best mean wins (the top score on one small
validation split overstates its trial). Trials are compared on validation rows only; the test split
stays untouched until the best config is trained for real: `--register` then runs jobs.run on it
(train on scaling.num_workers workers, register, gate), as `python -m jobs.run --config
best-found.yaml` would.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs import run as run_job
from jobs.cli import build_parser, run_main
from jobs.config_loader import CONFIG_DIR
from pipeline.console import say
from pipeline.selection import candidate_label
from schemas.config import JobConfig

if TYPE_CHECKING:
    from pipeline.data.store import StorePath
    from pipeline.tune import SearchOutcome

DEFAULT_TUNE_CONFIG = CONFIG_DIR / "tune.yaml"


@dataclass(frozen=True)
class TuneSummary:
    search: SearchOutcome
    registered: run_job.RunSummary | None

    def text(self) -> str:
        s = self.search
        base = (
            f" (TF-IDF + LR baseline {s.baseline_validation_accuracy:.4f})"
            if s.baseline_validation_accuracy is not None
            else ""
        )
        lines = [
            "== search ==",
            f"trials        : {len(s.trials)} ({sum(t.status == 'stopped' for t in s.trials)} stopped by ASHA, "
            f"{sum(t.status == 'failed' for t in s.trials)} failed) in {s.wall_s:.0f} s",
            f"best          : validation {s.best_config.tune.metric} {s.best_trial.best:.4f}{base}",
            "               " + ", ".join(f"{k}={v}" for k, v in s.best_trial.sample.items()),
        ]
        if s.selection:
            others = ", ".join(f"{candidate_label(c)} {c.mean:.4f}" for c in s.selection if c is not s.chosen)
            verdict = (
                f"chose {candidate_label(s.chosen)}, mean validation {s.chosen.mean:.4f} over {s.chosen.scored} splits"
                if s.chosen is not None
                else "no choice within tune.select_time_budget_s, the search's best stands"
            )
            lines.append(f"re-selection  : top {len(s.selection)} trials on fresh splits; {verdict} (others: {others})")
        lines += [
            f"best config   : {s.config_path}",
            f"parent run    : {s.parent_run_id}",
            f"next          : python -m jobs.run --config {s.config_path}",
        ]
        return "\n".join(lines)


def run(cfg: JobConfig, output: StorePath, register: bool = False) -> TuneSummary:
    # Imported here, not at the top: `--help` must not wait for Ray Tune, MLflow and datasets.
    from pipeline.baseline import fit_on_prepared
    from pipeline.cluster import ray_session
    from pipeline.data.prepare import prepare
    from pipeline.data.store import filesystem, is_remote
    from pipeline.tracking import resolve_tracking_uri, tracking_store
    from pipeline.tune import search

    if is_remote(output):
        filesystem(str(output))  # a URL no filesystem serves stops the job now, not after the search
    tracking_uri = resolve_tracking_uri(cfg)  # an unusable store, too: before prepare and the baseline
    with ray_session(cfg.ray):
        baseline_acc = None
        if cfg.baseline.enabled:  # the bar the trials should clear, on the same validation rows
            baseline_acc = fit_on_prepared(prepare(cfg).path, cfg.baseline).validation_accuracy
        with tracking_store(tracking_uri) as client:
            outcome = search(cfg, client, output, baseline_acc)
        say(TuneSummary(outcome, None).text())
        registered = run_job.run(outcome.best_config) if register else None  # the same cluster
    return TuneSummary(outcome, registered)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m jobs.tune", __doc__)
    parser.set_defaults(config=str(DEFAULT_TUNE_CONFIG))
    parser.add_argument(
        "--output",
        default="best-found.yaml",
        help="where to write the best config: a path or an object-store URL (default: %(default)s)",
    )
    parser.add_argument(
        "--register",
        action="store_true",
        help="then train the best config on scaling.num_workers workers, register and gate it",
    )

    def job(cfg: JobConfig, args: argparse.Namespace) -> TuneSummary:
        return run(cfg, args.output, args.register)

    return run_main(parser, job, argv)


if __name__ == "__main__":
    sys.exit(main())

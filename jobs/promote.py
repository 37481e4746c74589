"""Evaluate a registered version against the champion on the held-out test split; move the alias
only if the gate passes. Records the decision as tags on the version.

    python -m jobs.promote [--version N] [--config jobs/configs/embedded.yaml] [section.key=value ...]
    python -m jobs.promote --history       # every decision, newest first
    python -m jobs.promote --rollback      # move the alias back to the previous champion
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from jobs.cli import build_parser, run_main
from pipeline.console import say
from pipeline.errors import UserInputError
from schemas.config import JobConfig

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from pipeline.baseline import BaselineResult
    from pipeline.data.prepare import PreparedData
    from pipeline.registry.promotion import Decision


def newest_version(client: MlflowClient, name: str) -> str:
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise UserInputError(
            f"registered model {name!r} has no version; run jobs.train first or set tracking.registered_model_name"
        )
    return str(max(int(v.version) for v in versions))


def run(
    cfg: JobConfig,
    version: str | None = None,
    prepared: PreparedData | None = None,
    baseline: BaselineResult | None = None,
) -> Decision:
    """Gate `version` (default: the newest) on the held-out test split of `prepared` (default: prepare(cfg)).

    `baseline`: the TF-IDF + LR baseline on that split (jobs.run passes the one its training run
    fitted); with promotion.require_beats_baseline and none given, it is fitted here (deterministic:
    the same predictions as the training run's, on the same split and baseline settings).
    """
    from pipeline.baseline import fit_on_prepared
    from pipeline.data.prepare import prepare
    from pipeline.data.store import read_texts
    from pipeline.registry.promotion import Score, promote_version
    from pipeline.tracking import resolve_tracking_uri, tracking_store

    name = cfg.tracking.registered_model_name
    with tracking_store(resolve_tracking_uri(cfg)) as client:
        version = version or newest_version(client, name)  # checked before the (slow) prepare
        prepared = prepared or prepare(cfg)  # the held-out test split (reused from the stored result)
        texts, labels = read_texts(prepared.path, "test")
        if baseline is None and cfg.promotion.require_beats_baseline:
            baseline = fit_on_prepared(prepared.path, cfg.baseline)
        score = Score(baseline.test_metrics, baseline.test_correct) if baseline else None
        decision = promote_version(
            client, name, version, texts, labels, list(prepared.manifest.label_names), cfg.promotion, baseline=score
        )
    say(
        f"gate: v{version} {'promoted to' if decision.promoted else 'not promoted to'} {cfg.promotion.alias}: "
        f"{decision.reason}"
    )
    return decision


def show_history(cfg: JobConfig) -> list[dict[str, str]]:
    from pipeline.registry.promotion import history
    from pipeline.tracking import resolve_tracking_uri, tracking_store

    with tracking_store(resolve_tracking_uri(cfg)) as client:
        rows = history(client, cfg.tracking.registered_model_name)
    print(f"{'version':<8} {'aliases':<20} {'decision':<9} {'time':<25} reason")
    for r in rows:
        print(f"v{r['version']:<7} {r['aliases']:<20} {r['decision']:<9} {r['time']:<25} {r['reason']}")
    return rows


def do_rollback(cfg: JobConfig) -> tuple[str, str]:
    from pipeline.registry.promotion import rollback
    from pipeline.tracking import resolve_tracking_uri, tracking_store

    with tracking_store(resolve_tracking_uri(cfg)) as client:
        frm, to = rollback(client, cfg.tracking.registered_model_name, cfg.promotion)
    print(f"{cfg.promotion.alias}: v{frm} -> v{to}")
    return frm, to


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m jobs.promote", __doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--version", help="version to evaluate (default: the newest)")
    group.add_argument("--history", action="store_true", help="list every recorded promotion decision")
    group.add_argument("--rollback", action="store_true", help="move the alias back to the previous champion")

    def job(cfg: JobConfig, args) -> object:
        if args.history:
            return show_history(cfg)
        if args.rollback:
            return do_rollback(cfg)
        return run(cfg, args.version)

    return run_main(parser, job, argv)


if __name__ == "__main__":
    sys.exit(main())

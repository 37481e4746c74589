"""Evaluate a registered version against the champion on the held-out test split; move the alias
only if the gate passes. Records the decision as tags on the version.

    python -m jobs.promote [--version N] [--config jobs/configs/embedded.yaml] [section.key=value ...]
"""

from __future__ import annotations

import json
import sys

from mlflow.tracking import MlflowClient

from jobs.cli import build_parser, run_main
from pipeline.data.prepare import prepare
from pipeline.data.store import read_texts
from pipeline.errors import UserInputError
from pipeline.promotion import Decision, promote_version
from pipeline.tracking import resolve_tracking_uri
from schemas.config import JobConfig


def run(cfg: JobConfig, version: str | None = None) -> Decision:
    client = MlflowClient(resolve_tracking_uri(cfg))
    name = cfg.tracking.registered_model_name
    if version is None:
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise UserInputError(f"registered model {name!r} has no version; run jobs.train first "
                                 "or set tracking.registered_model_name")
        version = str(max(int(v.version) for v in versions))
    prepared = prepare(cfg)  # the held-out test split (reused from the stored result)
    texts, labels = read_texts(prepared.path, "test")
    decision = promote_version(client, name, version, texts, labels, list(prepared.manifest.label_names),
                               cfg.promotion)
    print(json.dumps({"version": version, "promoted": decision.promoted, "reason": decision.reason}))
    return decision


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m jobs.promote", __doc__)
    parser.add_argument("--version", help="version to evaluate (default: the newest)")
    return run_main(parser, lambda cfg, args: run(cfg, args.version), argv)


if __name__ == "__main__":
    sys.exit(main())

"""One command for every job: `rnn-textcls <job> [options] [section.key=value ...]`.

    rnn-textcls run                      # = python -m jobs.run
    rnn-textcls train train.epochs=3     # = python -m jobs.train train.epochs=3
    rnn-textcls promote --history

Each job keeps its own `--help`; only the chosen job's module is imported.
"""

from __future__ import annotations

import importlib
import sys

JOBS = {
    "prepare": "prepare (or reuse) the encoded corpus",
    "train": "prepare + train with Ray + log to MLflow + register a version",
    "promote": "gate a version against the champion (--history, --rollback)",
    "run": "all stages, as the scheduled job does",
    "tune": "search hyperparameters with Ray Tune, write the best config",
    "predict": "score a file with a registered model",
    "params": "parameter tables of the configured model",
    "submit": "submit jobs.run to a Ray cluster",
}


def usage() -> str:
    rows = "\n".join(f"  {name:<8} {what}" for name, what in JOBS.items())
    return (
        f"usage: rnn-textcls <job> [--config PATH] [--verbose] [--print-config] [section.key=value ...]\n\n"
        f"jobs:\n{rows}\n\n`rnn-textcls <job> --help` lists the job's options and every config key."
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    job, rest = argv[0], argv[1:]
    if job not in JOBS:
        print(f"error: unknown job {job!r}; choose one of {', '.join(JOBS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"jobs.{job}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())

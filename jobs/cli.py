"""What every job's `main()` shares: parse `--config` and `section.key=value` overrides, report
user errors as one line (exit 2), and turn SIGTERM (Ray job stop, Kubernetes) and Ctrl-C into
JobInterrupted, so that MLflow runs end KILLED and the process exits 143 or 130."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable

from jobs.config_loader import DEFAULT_CONFIG, config_help, load_config
from pipeline.errors import UserInputError, interrupting_signal, raise_job_interrupted
from schemas.config import JobConfig


class _OneLineErrors(argparse.ArgumentParser):
    """A bad flag is a user error like any other: one line and exit 2 (argparse prints the usage too)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="overrides (section.key=value), with defaults:\n" + config_help(),
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="job YAML (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override any config key")
    return parser


def run_main(parser: argparse.ArgumentParser, job: Callable[[JobConfig, argparse.Namespace], object],
             argv: list[str] | None = None) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for sig in (signal.SIGTERM, signal.SIGINT):  # ray_session and fit keep these in place
        signal.signal(sig, raise_job_interrupted)
    try:
        cfg = load_config(args.config, args.overrides)
        job(cfg, args)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # JobInterrupted, or a Ctrl-C that arrived before our handler
        signum = interrupting_signal(e)
        print(f"error: stopped by {signal.Signals(signum).name}; an MLflow run it had started ends KILLED "
              "(rerun with the same tracking.run_name to resume it)", file=sys.stderr)
        return 128 + signum
    return 0

"""What every job's `main()` shares: parse `--config` and `section.key=value` overrides, report
user errors as one line (exit 2), and turn SIGTERM (Ray job stop, Kubernetes) into an exception
so that MLflow runs end KILLED instead of staying RUNNING."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable

from jobs.config_loader import DEFAULT_CONFIG, config_help, load_config
from pipeline.errors import UserInputError
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


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_main(parser: argparse.ArgumentParser, job: Callable[[JobConfig, argparse.Namespace], object],
             argv: list[str] | None = None) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        cfg = load_config(args.config, args.overrides)
        job(cfg, args)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

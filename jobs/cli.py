"""What every job's `main()` shares: parse `--config` and `section.key=value` overrides, set the
console policy (`--verbose`), report user errors as one line (exit 2) and a failed job as one line
naming the cause, the MLflow run and the command that resumes it (exit 1), and turn SIGTERM (Ray
job stop, Kubernetes) and Ctrl-C into JobInterrupted, so that MLflow runs end KILLED and the process
exits 143 or 130.

Only light modules are imported here and at the top of every job: `--help` answers without
loading torch, Ray, MLflow or datasets.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from jobs.config_loader import DEFAULT_CONFIG, config_help, load_config, read_yaml
from pipeline import console
from pipeline.errors import UserInputError, interrupting_signal, raise_job_interrupted
from schemas.config import JobConfig


class _OneLineErrors(argparse.ArgumentParser):
    """A bad flag is a user error like any other: one line and exit 2 (argparse prints the usage too)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="job YAML, a path or an s3:// URL (default: %(default)s)"
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="show Ray's, MLflow's and the workers' own output and progress bars",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (YAML + overrides, validated) and exit",
    )
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override any config key")
    return parser


def _config_arg(argv: list[str], default: str) -> str:
    """--config from argv without a full parse: --help must show the defaults of the file it will run."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=default)
    return pre.parse_known_args(argv)[0].config


def failure_line(prog: str, argv: list[str], error: BaseException) -> str:
    """`error: <cause>; MLflow run <id> FAILED; resume: <command>`: the job's last line on a failure."""
    from pipeline.masking import mask_secrets

    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    cause = mask_secrets("error", f"{type(error).__name__}: {first}")
    # The command is printed for copying, so a password in an override (a database URI) must not be.
    argv = [_masked_arg(a, mask_secrets) for a in argv]
    run = getattr(error, "mlflow_run", None)  # (run id, run name), set by pipeline.tracking.mlflow_run
    if run is None:
        return f"error: {cause}; no MLflow run was started; rerun: {shlex.join([*prog.split(), *argv])}"
    run_id, run_name = run
    kept = [a for a in argv if not a.startswith("tracking.run_name=")]
    resume = shlex.join([*prog.split(), *kept, f"tracking.run_name={run_name}"])
    return f"error: {cause}; MLflow run {run_id} ended FAILED; resume with: {resume}"


def _masked_arg(arg: str, mask) -> str:
    key, sep, value = arg.partition("=")
    return f"{key}{sep}{mask(key, value)}" if sep else arg


def run_main(
    parser: argparse.ArgumentParser,
    job: Callable[[JobConfig, argparse.Namespace], object],
    argv: list[str] | None = None,
) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = _config_arg(argv, parser.get_default("config"))  # jobs.tune defaults to tune.yaml
    parser.epilog = (
        f"overrides (section.key=value), with the values {Path(config_path).name} runs with:\n"
        + config_help(read_yaml(config_path), Path(config_path).name)
    )
    args = parser.parse_args(argv)
    console.configure(args.verbose)
    for sig in (signal.SIGTERM, signal.SIGINT):  # ray_session and fit keep these in place
        signal.signal(sig, raise_job_interrupted)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())
            return 0
        job(cfg, args)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # JobInterrupted, or a Ctrl-C that arrived before our handler
        signum = interrupting_signal(e)
        print(
            f"error: stopped by {signal.Signals(signum).name}; an MLflow run it had started ends KILLED "
            "(rerun with the same tracking.run_name to resume it)",
            file=sys.stderr,
        )
        return 128 + signum
    except Exception as e:
        if console.verbose():
            traceback.print_exc()
        print(failure_line(parser.prog, argv, e), file=sys.stderr)
        return 1
    return 0

"""What a job prints: a few meaningful lines by default, everything with `--verbose`.

Quiet by default because job logs are read by people (and scheduled-job log viewers) after the
fact: Ray's INFO lines, per-rank reports and progress bars redrawn with `\\r` bury the handful of
lines that matter. Only environment variables are set here, never a heavy import, so that
`--help` stays fast; Ray, `datasets`, tqdm and MLflow read them when they are imported.
"""

from __future__ import annotations

import logging
import os
import sys

VERBOSE_ENV = "RNN_TEXTCLS_VERBOSE"

# Loggers of the libraries we drive: WARNING in quiet mode (their INFO lines are progress chatter).
_LIBRARY_LOGGERS = ("ray", "mlflow", "datasets", "alembic", "urllib3", "filelock", "fsspec", "matplotlib")


def configure(verbose: bool) -> None:
    """Set the process's console policy; child processes (Ray workers, `mlflow` CLIs) inherit it."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    # Ray 2.60 warns on every local start that token auth (its default, kept) is on. Setting
    # RAY_AUTH_MODE=token explicitly would silence it but then Ray does not create the token.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.NOTSET if verbose else logging.ERROR
    )
    # `datasets`' JSON/CSV builders log a parse error at ERROR before raising it; the job turns that
    # exception into its own one-line error naming the file, row and fix, so the log line only repeats it.
    logging.getLogger("datasets.packaged_modules").setLevel(logging.NOTSET if verbose else logging.CRITICAL)
    # MLflow sets its own logger's level when it is imported (INFO unless told otherwise).
    os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO" if verbose else "WARNING"
    if not progress_bars():
        # Read at import by each library: `\r`-redrawn bars turn into one unreadable line in job logs.
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TQDM_DISABLE"] = "1"
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "0") == "1"


def progress_bars() -> bool:
    """Progress bars only where someone watches them redraw: a terminal, or --verbose."""
    return verbose() or sys.stderr.isatty()


def say(line: str) -> None:
    """One of the job's own console lines (stdout, flushed: job logs interleave processes)."""
    print(line, flush=True)

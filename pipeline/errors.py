"""Errors a user can act on.

Each message names the file or field, the value that was wrong and the fix, so that a
scheduled job's log line alone is enough to repair the input.
"""


class UserInputError(ValueError):
    """Bad configuration or bad corpus: the job stops before training, nothing is registered."""


class DataValidationError(UserInputError):
    """The corpus failed a check (missing column, unknown label, too many invalid rows...)."""


class PreparedDataMissing(UserInputError, FileNotFoundError):
    """No complete prepared dataset where one was expected. Still a FileNotFoundError for callers
    that probe for a stored result."""


class LockTimeout(UserInputError):
    """Another promotion held the registry lock longer than promotion.lock_wait_s."""


class StorageFull(UserInputError):
    """The disk (or quota) under output_root filled up while writing prepared data."""


class JobInterrupted(KeyboardInterrupt):
    """SIGTERM (Ray job stop, Kubernetes) or SIGINT (Ctrl-C): the job stops, its MLflow run ends KILLED
    and the process exits 128 + the signal number (143, 130)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


_received: list[int] = []  # signals the handler saw, newest last


def raise_job_interrupted(signum, frame) -> None:
    """The job's handler for SIGTERM and SIGINT (see JobInterrupted)."""
    _received.append(signum)
    raise JobInterrupted(signum)


def interrupting_signal(exc: KeyboardInterrupt) -> int:
    """The signal behind `exc`. Ray's blocking calls run the handler themselves and re-raise a plain
    KeyboardInterrupt, so the signal the handler saw is the answer when `exc` does not carry one."""
    return getattr(exc, "signum", None) or (_received[-1] if _received else 2)  # 2: SIGINT, a bare Ctrl-C

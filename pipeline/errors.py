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

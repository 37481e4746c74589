"""Errors a user can act on.

Each message names the file or field, the value that was wrong and the fix, so that a
scheduled job's log line alone is enough to repair the input.
"""


class UserInputError(ValueError):
    """Bad configuration or bad corpus: the job stops before training, nothing is registered."""


class DataValidationError(UserInputError):
    """The corpus failed a check (missing column, unknown label, too many invalid rows...)."""

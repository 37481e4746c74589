"""Hide secrets in what a job logs or prints. Light on purpose (no MLflow import): the CLI and
`jobs.submit` use it before anything heavy is loaded."""

from __future__ import annotations

import re
from typing import Any

_SECRET_KEY = re.compile(r"(password|passwd|secret|token(?!iz)|api[_-]?key|credential)", re.I)
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@", re.I)


def mask_secrets(key: str, value: Any) -> Any:
    """Hide passwords in URIs (`postgresql://u:pw@h` -> `postgresql://u:***@h`) and secret-named keys."""
    if value is None:
        return value
    if _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, str):
        return _URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    return value

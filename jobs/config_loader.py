"""Load a job's YAML, apply `section.key=value` overrides, validate into a frozen JobConfig."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import UserInputError
from schemas.config import JobConfig, unsafe_output_root

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "embedded.yaml"


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (['train', 'epochs'], 3). Values are read as YAML scalars/lists."""
    if "=" not in item:
        raise UserInputError(f"override {item!r} is not of the form section.key=value (e.g. train.epochs=3)")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserInputError(f"override {item!r} has an empty key; write e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise UserInputError(f"override {item!r}: value {raw!r} is not valid YAML ({e.__class__.__name__})") from e
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(raw))  # deep copy of plain YAML data
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise UserInputError(f"override {item!r}: {p!r} is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            parent = _model_at(JobConfig, list(e["loc"][:-1]))
            allowed = ", ".join(parent.model_fields) if parent else "?"
            lines.append(f"{key}: unknown key; allowed here: {allowed}")
        elif e["type"] == "finite_number":
            lines.append(f"{key}: infinity and NaN are not settings (got {e.get('input')!r}); {_finite_fix(e['loc'])}")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"{key}: {e['msg']}{shown}")
    # One line, as every user error is: a scheduled job's log shows it whole.
    return f"invalid configuration ({source}): " + "; ".join(lines)


def _finite_fix(loc: tuple) -> str:
    fields = [p for p in loc if isinstance(p, str)]  # a list's index is not a field
    parent = _model_at(JobConfig, fields[:-1])
    field = parent.model_fields.get(fields[-1]) if parent and fields else None
    default = field.get_default(call_default_factory=True) if field else None
    return "give a finite number" + (f" (default {default!r})" if default is not None else "")


def _model_at(model: type[BaseModel], path: list) -> type[BaseModel] | None:
    for p in path:
        field = model.model_fields.get(str(p))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> JobConfig:
    """Read YAML (default: the embedded-corpus config; a local path or an object-store URL), apply
    overrides, validate.

    Raises UserInputError naming the file/key, the value and what is allowed.
    """
    path = path or DEFAULT_CONFIG
    text = _remote_config(path) if _is_url(path) else None
    if text is None:
        path = Path(str(path).removeprefix("file://"))
        if not path.is_file():
            raise UserInputError(f"config file {path} not found; pass --config with an existing YAML file")
        text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserInputError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise UserInputError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    merged = apply_overrides(raw, overrides or [])
    try:
        cfg = JobConfig.model_validate(merged)
    except ValidationError as e:
        raise UserInputError(_format_validation_error(e, str(path))) from None
    # A relative output_root is judged where the job starts (the schema cannot: workers re-validate elsewhere).
    problem = unsafe_output_root(os.path.abspath(cfg.output_root)) if "://" not in cfg.output_root else None
    if problem:
        raise UserInputError(f"invalid configuration ({path}): {problem} (from output_root={cfg.output_root!r})")
    return cfg


def _is_url(path: str | Path) -> bool:
    # pipeline.data.store.is_remote's rule, without importing pyarrow (`--help` must start fast). A str, not
    # a Path: Path("s3://b/c.yaml") is "s3:/b/c.yaml". file:// is a local path.
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def _remote_config(url: str) -> str:
    """The text of a config on object storage (a tuned config kept next to the runs, for a scheduled job
    that reads it from s3://). Raises UserInputError when it is not there or cannot be read."""
    from pipeline.data.store import read_text  # on use: `--help` must not wait for pyarrow

    try:
        return read_text(url)
    except FileNotFoundError:
        raise UserInputError(f"config file {url} not found (no such object); check the bucket and key") from None
    except OSError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(
            f"config file {url} could not be read ({reason}); check the URL and the object store's credentials "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)"
        ) from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"config file {url} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    """The job YAML as plain data, or {} when it cannot be read (help text must still print). A config on
    object storage is not fetched for the help text: its values are read when the job runs."""
    if path and _is_url(path):
        return {}
    try:
        raw = yaml.safe_load(Path(path or DEFAULT_CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def config_help(effective: dict[str, Any] | None = None, source: str = "") -> str:
    """Every option with its effective default and description, generated from the schema.

    `effective` is the job YAML's data: where it sets a key, that value is shown (the one the job
    runs with), followed by the schema's default."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str, given: dict[str, Any]) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                lines.append(f"\n[{prefix}{name}] {field.description or ''}")
                sub = given.get(name)
                walk(ann, f"{prefix}{name}.", sub if isinstance(sub, dict) else {})
                continue
            default = field.get_default(call_default_factory=True)
            if name in given:
                shown = f"{given[name]!r}   ({source}; schema default {default!r})"
            else:
                shown = repr(default)
            lines.append(f"  {prefix}{name}={shown}\n      {field.description or ''}")

    walk(JobConfig, "", effective or {})
    return "\n".join(lines)

"""Check every row before tokenization; drop what is invalid with a count per reason.

Outcome of each case (counts go to `cleaning_report.json` next to the data, and to MLflow):

invalid (dropped, counted; more than `data.max_drop_fraction` of rows stops the job):
- `missing_text` / `missing_label`: None or NaN (a missing column stops the job in `sources`);
- `empty_text`: empty or whitespace-only text;
- `zero_tokens`: text the tokenizer's normalizer and pre-tokenizer turn into no token at all
  (e.g. only control or zero-width characters);
- `conflicting_label`: the same text with different labels (every copy is dropped);
- `bad_csv_row`: a malformed CSV row skipped by the reader (data.on_bad_csv_row=skip);
- `unknown_label`: a label outside data.labels, with data.on_unknown_label=drop.

kept or not invalid (counted only):
- `duplicate`: exact duplicate texts, the first kept (the embedded corpus repeats about half its
  lines); `duplicate_across_splits`: a text in both a source's train and test split is kept in
  test only, so no test text is a training text;
- `truncated_chars`: text longer than data.max_chars, cut before tokenizing (bounded memory);
- `replaced_bytes`: rows with U+FFFD, i.e. bytes replaced under data.encoding_errors=replace.

stops the job (DataValidationError): labels mixing integers and strings (`1` and `"1"`), a label
outside data.labels (on_unknown_label=error), fewer than two classes, no rows left.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral

import pandas as pd

from pipeline.data.encode import cut_text
from pipeline.errors import DataValidationError
from schemas.config import DataConfig

INVALID_REASONS = (
    "missing_text", "missing_label", "empty_text", "zero_tokens", "conflicting_label", "bad_csv_row",
    "unknown_label",
)


@dataclass
class CleanReport:
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    counted: Counter = field(default_factory=Counter)  # rows kept but changed (truncated, replaced bytes)
    rows_per_split: dict = field(default_factory=dict)

    @property
    def invalid(self) -> int:
        return sum(self.dropped[r] for r in INVALID_REASONS)

    def to_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted((k, v) for k, v in self.dropped.items() if v)),
            "counted": dict(sorted((k, v) for k, v in self.counted.items() if v)),
            "invalid_rows": self.invalid,
            "invalid_fraction": round(self.invalid / self.rows_in, 6) if self.rows_in else 0.0,
            "rows_per_split": dict(self.rows_per_split),
        }


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _label_kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Integral) or (isinstance(value, float) and value.is_integer()):
        return "int"  # CSV readers turn an int column with a gap into floats
    return "str" if isinstance(value, str) else type(value).__name__


def _label_str(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _check_label_types(splits: dict[str, pd.DataFrame], cfg: DataConfig) -> bool:
    """True if every label is an integer. Raises DataValidationError on a mix of types."""
    examples: dict[str, object] = {}
    for frame in splits.values():
        for value in frame["label"].tolist():
            if not _is_missing(value):
                examples.setdefault(_label_kind(value), value)
    if len(examples) > 1:
        shown = ", ".join(f"{kind} {value!r}" for kind, value in sorted(examples.items()))
        raise DataValidationError(
            f"column {cfg.label_column!r} mixes label types ({shown}): 1 and '1' would be two classes; "
            "write every label the same way (all strings or all integers) in the source files"
        )
    return set(examples) == {"int"}


def clean_splits(
    splits: dict[str, pd.DataFrame],
    cfg: DataConfig,
    known_labels: tuple[str, ...] | None,
    *,
    truncation_side: str = "left",
    count_pieces: Callable[[list[str]], Sequence[int]] | None = None,
    reader_dropped: Counter | None = None,
) -> tuple[dict[str, pd.DataFrame], tuple[str, ...], CleanReport]:
    """Return cleaned splits (columns text, label as int64 ids), label names in id order, the report.

    `count_pieces` (texts -> token count before the vocabulary, see tokenizer.piece_counter)
    finds texts that would become zero tokens. Raises DataValidationError (see module doc).
    """
    report = CleanReport()
    report.dropped.update(reader_dropped or {})
    report.rows_in = sum(len(f) for f in splits.values()) + sum((reader_dropped or {}).values())
    integer_labels = _check_label_types(splits, cfg)
    allowed = set(cfg.labels) if cfg.labels is not None else None
    unknown: Counter = Counter()
    # Test first, so that a text in both splits survives in test and leaves train.
    order = sorted(splits, key=lambda s: {"test": 0, "validation": 1}.get(s, 2))
    rows: dict[str, list[tuple[str, str]]] = {}
    for name in order:
        frame = splits[name]
        kept = []
        for text, label in zip(frame["text"].tolist(), frame["label"].tolist(), strict=True):
            if _is_missing(text):
                report.dropped["missing_text"] += 1
                continue
            if _is_missing(label):
                report.dropped["missing_label"] += 1
                continue
            lab = _label_str(label)
            if allowed is not None and lab not in allowed:
                unknown[lab] += 1
                continue
            text = str(text)
            if len(text) > cfg.max_chars:
                text = cut_text(text, cfg.max_chars, truncation_side)
                report.counted["truncated_chars"] += 1
            text = text.strip()
            if not text:
                report.dropped["empty_text"] += 1
                continue
            if "\ufffd" in text and cfg.encoding_errors == "replace":
                report.counted["replaced_bytes"] += 1
            kept.append((text, lab))
        if count_pieces is not None and kept:
            pieces = count_pieces([t for t, _ in kept])
            before = len(kept)
            kept = [row for row, n in zip(kept, pieces, strict=True) if n > 0]
            report.dropped["zero_tokens"] += before - len(kept)
        rows[name] = kept

    if unknown:
        if cfg.on_unknown_label == "error":
            values = [v for v, _ in unknown.most_common(5)]
            raise DataValidationError(
                f"label value {values[0]!r} in column {cfg.label_column!r} is not one of data.labels="
                f"{list(cfg.labels or ())} ({sum(unknown.values())} rows, values {values}); add it to "
                "data.labels, fix those rows, or set data.on_unknown_label=drop"
            )
        report.dropped["unknown_label"] += sum(unknown.values())

    labels_of: dict[str, set[str]] = {}
    for kept in rows.values():
        for text, lab in kept:
            labels_of.setdefault(text, set()).add(lab)
    conflicting = {t for t, labs in labels_of.items() if len(labs) > 1}

    first_split: dict[str, str] = {}
    out: dict[str, list[tuple[str, str]]] = {}
    for name in order:
        unique = []
        for text, lab in rows[name]:
            if text in conflicting:
                report.dropped["conflicting_label"] += 1
            elif text in first_split:
                same = first_split[text] == name
                report.dropped["duplicate" if same else "duplicate_across_splits"] += 1
            else:
                first_split[text] = name
                unique.append((text, lab))
        out[name] = unique

    if report.rows_in and report.invalid / report.rows_in > cfg.max_drop_fraction:
        reasons = {r: report.dropped[r] for r in INVALID_REASONS if report.dropped[r]}
        raise DataValidationError(
            f"{report.invalid} of {report.rows_in} rows are invalid ({reasons}), more than "
            f"data.max_drop_fraction={cfg.max_drop_fraction}; fix the corpus or raise data.max_drop_fraction"
        )

    found = {lab for kept in out.values() for _, lab in kept}
    if cfg.labels is not None:
        label_names = tuple(cfg.labels)
    elif known_labels is not None and found <= set(known_labels):
        label_names = tuple(known_labels)
    else:
        label_names = tuple(sorted(found, key=int) if integer_labels else sorted(found))
    if not found:
        raise DataValidationError(
            f"the corpus has no valid rows after cleaning (dropped {dict(report.dropped)}); check "
            "data.text_column and the files"
        )
    if len(found) < 2:
        raise DataValidationError(
            f"the corpus has a single class {sorted(found)} in column {cfg.label_column!r}; a classifier "
            "needs at least two: check the label column or add the missing class"
        )

    ids = {name: i for i, name in enumerate(label_names)}
    cleaned = {
        name: pd.DataFrame(
            {"text": pd.Series([t for t, _ in kept], dtype=object),
             "label": pd.Series([ids[lab] for _, lab in kept], dtype="int64")}
        )
        for name, kept in out.items()
    }
    report.rows_out = sum(len(f) for f in cleaned.values())
    return cleaned, label_names, report

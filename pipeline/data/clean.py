"""Check every row before tokenization; drop what is invalid with a count per reason.

Outcomes:
- missing text or label, empty/whitespace-only text, the same text with conflicting labels:
  dropped and counted as invalid; more than `max_drop_fraction` invalid stops the job;
- exact duplicate texts: the first is kept, the rest dropped and counted (not invalid: the
  embedded corpus repeats about half its lines). A text in both a source's train and test
  split is kept in test only, so no test text is a training text;
- a label outside `data.labels`: the job stops, naming the value and the fix.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from pipeline.errors import DataValidationError
from schemas.config import DataConfig

INVALID_REASONS = ("missing_text", "missing_label", "empty_text", "conflicting_label")


@dataclass
class CleanReport:
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def invalid(self) -> int:
        return sum(self.dropped[r] for r in INVALID_REASONS)

    def to_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items())),
            "invalid_rows": self.invalid,
            "invalid_fraction": round(self.invalid / self.rows_in, 6) if self.rows_in else 0.0,
        }


def _label_str(value) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # CSV readers turn an int column with a gap into floats
    return str(value)


def clean_splits(
    splits: dict[str, pd.DataFrame], cfg: DataConfig, known_labels: tuple[str, ...] | None
) -> tuple[dict[str, pd.DataFrame], tuple[str, ...], CleanReport]:
    """Return cleaned splits (columns text, label_id), the label names in id order, the report."""
    report = CleanReport()
    # Test first, so that a text in both splits survives in test and leaves train.
    order = sorted(splits, key=lambda s: 0 if s == "test" else 1)
    rows: dict[str, list[tuple[str, str]]] = {}
    for name in order:
        frame = splits[name]
        report.rows_in += len(frame)
        kept = []
        for text, label in zip(frame["text"].tolist(), frame["label"].tolist(), strict=True):
            if text is None or (isinstance(text, float) and pd.isna(text)):
                report.dropped["missing_text"] += 1
                continue
            lab = _label_str(label)
            if lab is None:
                report.dropped["missing_label"] += 1
                continue
            text = str(text).strip()
            if not text:
                report.dropped["empty_text"] += 1
                continue
            kept.append((text, lab))
        rows[name] = kept

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
        raise DataValidationError(
            f"{report.invalid} of {report.rows_in} rows are invalid ({dict(report.dropped)}), more than "
            f"data.max_drop_fraction={cfg.max_drop_fraction}; fix the corpus or raise data.max_drop_fraction"
        )

    found = sorted({lab for kept in out.values() for _, lab in kept})
    if cfg.labels is not None:
        label_names = tuple(cfg.labels)
        unknown = sorted(set(found) - set(label_names))
        if unknown:
            raise DataValidationError(
                f"label value {unknown[0]!r} in column {cfg.label_column!r} is not one of data.labels="
                f"{list(label_names)} (unknown values: {unknown[:5]}); add it to data.labels or fix those rows"
            )
    elif known_labels is not None and set(found) <= set(known_labels):
        label_names = tuple(known_labels)
    else:
        label_names = tuple(found)
    if len(found) == 0:
        raise DataValidationError("the corpus has no valid rows after cleaning; check data.text_column and the files")
    if len(set(found)) < 2:
        raise DataValidationError(
            f"the corpus has a single class {found!r} in column {cfg.label_column!r}; a classifier needs at "
            "least two: check the label column or add the missing class"
        )

    ids = {name: i for i, name in enumerate(label_names)}
    cleaned = {
        name: pd.DataFrame(
            {"text": [t for t, _ in kept], "label": [ids[lab] for _, lab in kept]}
        ).astype({"label": "int64"})
        for name, kept in out.items()
    }
    report.rows_out = sum(len(f) for f in cleaned.values())
    return cleaned, label_names, report

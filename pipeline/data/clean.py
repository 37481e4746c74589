"""Check every row before tokenization; drop what is invalid with a count per reason.

Three steps, each a pure function over Arrow tables, so that one shard on one machine and many
shards as Ray tasks run the very same code (pipeline.data.stages wires them):
1. `check_rows` (per input shard): missing, empty, unknown labels, cut to max_chars;
2. `dedup_partition` (per hash partition, after the shuffle): exact duplicates and conflicting
   labels, decided where every copy of a text meets (the shuffle sends equal texts to one partition);
3. `name_labels` (on the driver, over the merged label sets): label names in id order.

Outcome of each case (counts go to `cleaning_report.json` next to the data, and to MLflow):

invalid (dropped, counted; more than `data.max_drop_fraction` of rows stops the job):
- `missing_text` / `missing_label`: None or NaN (a missing column stops the job in `sources`); a label
  cell spelled `NaN`, `nan`, `null`, `None`, `NA`, `N/A` or blank is a missing label, never a class
  (a text reading "NA" stays a text);
- `empty_text`: empty or whitespace-only text;
- `zero_tokens`: text the tokenizer's normalizer and pre-tokenizer turn into no token at all
  (e.g. only control or zero-width characters); found by the encode step (0 ids <=> 0 pieces);
- `conflicting_label`: the same text with different labels (every copy is dropped);
- `bad_csv_row`: a malformed CSV row (too many or too few fields, or a stray double quote that swallows
  the following lines into one value: one count per physical line) with data.on_bad_csv_row=skip;
  `examples` in the report names the first files and lines;
- `unknown_label`: a label outside data.labels, with data.on_unknown_label=drop.

kept or not invalid (counted only):
- `duplicate`: exact duplicate texts, one kept (the embedded corpus repeats about half its
  lines); `duplicate_across_splits`: a text in both a source's train and test split is kept in
  test only, so no test text is a training text;
- `truncated_chars`: text longer than data.max_chars, cut before tokenizing (bounded memory);
- `replaced_bytes`: rows with U+FFFD, i.e. bytes replaced under data.encoding_errors=replace;
- `backslash_quotes`: texts holding a backslash before a double quote (source=files, data.escapechar
  unset): a CSV/TSV written with backslash-escaped quotes, read under the doubled-quote rule (a warning
  names data.escapechar).

stops the job (DataValidationError): a text column holding numbers or lists, labels mixing integers
and strings (`1` and `"1"`), labels with fractions (scores), a label outside data.labels
(on_unknown_label=error), an input without a single label (an unlabeled Hub test split), fewer than two
classes, a label column with hardly a row per label (an id column), no rows left.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.text_columns import as_text, is_string_type
from pipeline.errors import DataValidationError
from schemas.config import DataConfig
from schemas.features import CleaningReport

INVALID_REASONS = (
    "missing_text",
    "missing_label",
    "empty_text",
    "zero_tokens",
    "conflicting_label",
    "bad_csv_row",
    "unknown_label",
)
# Label cells that mean "no label" (compared trimmed and lowercased): never a class. Texts keep them.
MISSING_LABEL_SPELLINGS = ("", "nan", "null", "none", "na", "n/a", "<na>")
# A label column with at least this many labels and under this many rows per label is not a column of
# classes (an id, a free-text field): the job stops naming it.
MANY_LABELS, MIN_ROWS_PER_LABEL = 10, 3
EXAMPLES_KEPT = 20  # 'file:line' examples kept per reason in the report
# Source split -> priority of the copy kept among duplicates: test first, so a text in both a
# source's train and test split survives in test and leaves train.
PRIORITY = {"test": 0, "validation": 1, "train": 2, "all": 2}


@dataclass
class CleanReport:
    """Counts of one shard, or of the whole corpus once merged (`merge` adds counts)."""

    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    counted: Counter = field(default_factory=Counter)  # rows kept but changed (truncated, replaced bytes)
    rows_per_split: dict[str, int] = field(default_factory=dict)
    label_proportions: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> 'file:line' of dropped rows

    @property
    def invalid(self) -> int:
        return sum(self.dropped[r] for r in INVALID_REASONS)

    def merge(self, other: CleanReport) -> CleanReport:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.dropped.update(other.dropped)
        self.counted.update(other.counted)
        for reason, where in other.examples.items():
            kept = self.examples.setdefault(reason, [])
            kept.extend(where[: EXAMPLES_KEPT - len(kept)])
        return self

    def to_model(self) -> CleaningReport:
        return CleaningReport(
            rows_in=self.rows_in,
            rows_out=self.rows_out,
            dropped=dict(sorted((k, v) for k, v in self.dropped.items() if v)),
            counted=dict(sorted((k, v) for k, v in self.counted.items() if v)),
            invalid_rows=self.invalid,
            invalid_fraction=round(self.invalid / self.rows_in, 6) if self.rows_in else 0.0,
            rows_per_split=dict(self.rows_per_split),
            label_proportions=self.label_proportions,
            examples={k: list(v) for k, v in sorted(self.examples.items()) if v},
        )

    def to_dict(self) -> dict:
        return self.to_model().model_dump(mode="json")


# -- labels: one kind per corpus -------------------------------------------------------------------


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


def label_strings(labels: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, dict[str, object]]:
    """Labels of any Arrow type -> (strings with nulls for missing, {kind: an example value}).

    Integers keep their digits; integral floats (an int column with a gap read by pandas) count as
    integers; NaN is missing. Vectorized for the usual types, per value only for odd ones.
    """
    arr = labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels
    t = arr.type
    valid = arr.drop_null()
    if pa.types.is_floating(t):
        arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, t), arr)
        valid = arr.drop_null()
        if len(valid) and pc.all(pc.equal(pc.floor(valid), valid)).as_py():
            arr = pc.cast(arr, pa.int64())
            t = arr.type
    if pa.types.is_integer(t):
        return pc.cast(arr, pa.string()), ({"int": valid[0].as_py()} if len(valid) else {})
    if is_string_type(t):
        return pc.cast(arr, pa.string()), ({"str": valid[0].as_py()} if len(valid) else {})
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string()), {}
    values = arr.to_pylist()  # floats with fractions, booleans, mixed Python objects: rare, per value
    kinds: dict[str, object] = {}
    for v in values:
        if v is not None:
            kinds.setdefault(_label_kind(v), v)
    return pa.array([None if v is None else _label_str(v) for v in values], pa.string()), kinds


def check_label_kinds(kinds: dict[str, object], cfg: DataConfig, where: dict[str, str] | None = None) -> bool:
    """True if every label is an integer. Raises DataValidationError on a mix of kinds (1 and '1'), or on
    labels with fractions (0.73: a score, which a classifier would take as that many classes)."""
    if "float" in kinds:
        raise DataValidationError(
            f"column {cfg.label_column!r} holds numbers with fractions ({kinds['float']!r}): a score, not a "
            "class; this job classifies text, so turn the scores into classes in the data (e.g. 'pos' where "
            "score >= 0.5) or set data.label_column to the column of classes"
        )
    if len(kinds) > 1:
        shown = ", ".join(f"{kind} {value!r}" for kind, value in sorted(kinds.items()))
        seen = f"; seen in {', '.join(f'{k}: {w}' for k, w in sorted(where.items()))}" if where else ""
        raise DataValidationError(
            f"column {cfg.label_column!r} mixes label types ({shown}){seen}: 1 and '1' would be two classes; "
            "write every label the same way (all strings or all integers) in the source files"
        )
    return set(kinds) == {"int"}


# -- step 1: row checks, per input shard ----------------------------------------------------------


@dataclass
class CheckedRows:
    table: pa.Table  # text (cleaned), label (string), prio (int8)
    report: CleanReport
    unknown: Counter  # label value -> rows, for labels outside data.labels
    kinds: dict[str, object]  # label kind -> an example value


def _cut(text: pa.Array, max_chars: int, truncation_side: str) -> pa.Array:
    # encode.cut_text's rule, vectorized: keep the last max_chars characters (left) or the first.
    if truncation_side == "left":
        return pc.utf8_slice_codeunits(text, start=-max_chars)
    return pc.utf8_slice_codeunits(text, start=0, stop=max_chars)


def _missing_spelled(labels: pa.Array, cfg: DataConfig) -> pa.Array:
    """Label strings spelled as missing ('NaN', 'null', 'None', 'NA', blank) -> null, unless data.labels
    names that spelling as a class."""
    allowed = {name.strip().lower() for name in cfg.labels or ()}
    spellings = [s for s in MISSING_LABEL_SPELLINGS if s not in allowed]
    spelled = pc.fill_null(
        pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(labels)), value_set=pa.array(spellings, pa.string())), False
    )
    return pc.if_else(spelled, pa.scalar(None, pa.string()), labels)


def check_rows(
    table: pa.Table, cfg: DataConfig, split: str, truncation_side: str = "left", where: str = "the corpus"
) -> CheckedRows:
    """(text, label) rows of one input shard -> the valid rows (text cut to max_chars and stripped,
    label as a string) and the counts per reason. Each row is counted under its first failing check.
    Raises DataValidationError (naming `where`) when the text column does not hold text."""
    report = CleanReport(rows_in=table.num_rows)
    # As strings, or the job stops naming the column (several text columns were joined where they were read).
    text = as_text(table.column("text"), cfg.text_columns[0], where, "data.text_column")
    labels, kinds = label_strings(table.column("label"))
    labels = _missing_spelled(labels, cfg)
    missing_text = pc.is_null(text)
    missing_label = pc.and_(pc.invert(missing_text), pc.is_null(labels))
    report.dropped["missing_text"] += pc.sum(missing_text).as_py() or 0
    report.dropped["missing_label"] += pc.sum(missing_label).as_py() or 0
    if (
        report.dropped["missing_label"]
        and report.dropped["missing_label"] == report.rows_in - report.dropped["missing_text"]
    ):
        raise _unlabeled(split, report.dropped["missing_label"], cfg, where)
    keep = pc.invert(pc.or_(missing_text, missing_label))
    unknown: Counter = Counter()
    if cfg.labels is not None:
        outside = pc.and_(keep, pc.invert(pc.is_in(labels, value_set=pa.array(list(cfg.labels), pa.string()))))
        for row in pc.value_counts(pc.filter(labels, outside)).to_pylist():
            unknown[row["values"]] += row["counts"]
        keep = pc.and_(keep, pc.invert(outside))
    text, labels = pc.filter(text, keep), pc.filter(labels, keep)
    too_long = pc.greater(pc.utf8_length(text), cfg.max_chars)
    report.counted["truncated_chars"] += pc.sum(too_long).as_py() or 0
    if report.counted["truncated_chars"]:
        text = pc.if_else(too_long, _cut(text, cfg.max_chars, truncation_side), text)
    text = pc.utf8_trim_whitespace(text)
    nonempty = pc.greater(pc.utf8_length(text), 0)
    report.dropped["empty_text"] += len(text) - (pc.sum(nonempty).as_py() or 0)
    text, labels = pc.filter(text, nonempty), pc.filter(labels, nonempty)
    if cfg.encoding_errors == "replace":
        report.counted["replaced_bytes"] += pc.sum(pc.match_substring(text, "\ufffd")).as_py() or 0
    if cfg.source == "files" and cfg.escapechar is None:
        report.counted["backslash_quotes"] += pc.sum(pc.match_substring(text, '\\"')).as_py() or 0
    prio = pa.array(np.full(len(text), PRIORITY[split], np.int8))
    return CheckedRows(pa.table({"text": text, "label": labels, "prio": prio}), report, unknown, kinds)


def _unlabeled(split: str, rows: int, cfg: DataConfig, where: str) -> DataValidationError:
    """A whole input without a label: a counted drop would hide it (or, past max_drop_fraction, blame it on
    the corpus). Hub datasets such as GLUE ship their test split unlabeled (ClassLabel -1 in every row)."""
    what = f"every one of the {rows} rows of {where}"
    if split in ("test", "validation"):
        setting = f"data.{split}_split"
        carve = "its test set" if split == "test" else "its validation set"
        return DataValidationError(
            f"{what} ({setting}={getattr(cfg, setting.removeprefix('data.'))!r}) has no label in column "
            f"{cfg.label_column!r} (missing or -1: some Hub datasets, GLUE's among them, ship that split "
            f"unlabeled); set {setting}=null to carve {carve} out of the training rows"
        )
    return DataValidationError(
        f"{what} has no label in column {cfg.label_column!r} (all missing); set data.label_column to the "
        "column that holds the labels, or leave out the unlabeled file"
    )


def check_unknown(unknown: Counter, cfg: DataConfig, report: CleanReport) -> None:
    """Labels outside data.labels: stop naming the value (on_unknown_label=error) or count them."""
    if not unknown:
        return
    if cfg.on_unknown_label == "error":
        values = [v for v, _ in unknown.most_common(5)]
        raise DataValidationError(
            f"label value {values[0]!r} in column {cfg.label_column!r} is not one of data.labels="
            f"{list(cfg.labels or ())} ({sum(unknown.values())} rows, values {values}); add it to "
            "data.labels, set data.labels=null to take the data's own labels, fix those rows, or set "
            "data.on_unknown_label=drop"
        )
    report.dropped["unknown_label"] += sum(unknown.values())


def check_drop_fraction(report: CleanReport, cfg: DataConfig) -> None:
    if report.rows_in and report.invalid / report.rows_in > cfg.max_drop_fraction:
        reasons = {r: report.dropped[r] for r in INVALID_REASONS if report.dropped[r]}
        raise DataValidationError(
            f"{report.invalid} of {report.rows_in} rows are invalid ({reasons}), more than "
            f"data.max_drop_fraction={cfg.max_drop_fraction}; fix the corpus or raise data.max_drop_fraction"
        )


# -- step 2: duplicates and conflicting labels, per hash partition ---------------------------------


def _changes(values: pa.Array) -> np.ndarray:
    """bool [n]: row i differs from row i-1 (row 0: True)."""
    out = np.ones(len(values), bool)
    if len(values) > 1:
        out[1:] = pc.not_equal(values[1:], values[:-1]).to_numpy(zero_copy_only=False)
    return out


def dedup_partition(table: pa.Table) -> tuple[pa.Table, CleanReport]:
    """Rows (text, label, prio, h) holding every copy of their texts -> one row per text, sorted by
    (h, text); conflicting texts dropped entirely. Vectorized: sort, then compare neighbours."""
    report = CleanReport()
    if table.num_rows == 0:
        return table, report
    table = table.take(
        pc.sort_indices(
            table, [("h", "ascending"), ("text", "ascending"), ("prio", "ascending"), ("label", "ascending")]
        )
    )
    text, label, prio = (
        table.column("text").combine_chunks(),
        table.column("label").combine_chunks(),
        table.column("prio").to_numpy(),
    )
    first = _changes(text)  # the first row of each group: its best priority (test first)
    group = np.cumsum(first) - 1
    label_changes = _changes(label) & ~first
    conflict = np.zeros(group[-1] + 1, bool)
    conflict[group[label_changes]] = True
    in_conflict = conflict[group]
    report.dropped["conflicting_label"] += int(in_conflict.sum())
    copies = ~first & ~in_conflict
    same_split = prio == prio[np.flatnonzero(first)][group]
    report.dropped["duplicate"] += int((copies & same_split).sum())
    report.dropped["duplicate_across_splits"] += int((copies & ~same_split).sum())
    kept = table.filter(pa.array(first & ~in_conflict))
    return kept, report


# -- step 3: label names, on the driver ------------------------------------------------------------


def name_labels(
    found: set[str],
    integer_labels: bool,
    cfg: DataConfig,
    known: tuple[str, ...] | None,
    report: CleanReport,
    rows: int,
) -> tuple[str, ...]:
    """Label names in id order: data.labels, else the source's ClassLabel names, else the labels found
    (numeric order for integers). Raises DataValidationError for no rows, a single class, or a label
    column with hardly a row per label (`rows`: the rows kept)."""
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
    if cfg.labels is None and len(found) >= MANY_LABELS and rows < MIN_ROWS_PER_LABEL * len(found):
        # An id or free-text column taken for the label: every row its own class. Without this the job
        # went on to "split 'validation' has 0 rows and 0 classes", which names neither column nor cause.
        shown = sorted(found)[:3]
        raise DataValidationError(
            f"column {cfg.label_column!r} has {len(found):,} distinct labels over {rows:,} rows "
            f"({rows / len(found):.1f} per label, e.g. {shown}): too few to learn a class from; is it the "
            "label column? Set data.label_column to the column of classes, or group the labels into fewer"
        )
    if cfg.labels is not None:
        return tuple(cfg.labels)
    if known is not None and found <= set(known):
        return tuple(known)
    return tuple(sorted(found, key=int) if integer_labels else sorted(found))


def quote_warnings(report: CleanReport) -> list[str]:
    """One sentence when texts hold a backslash before a double quote: what a CSV/TSV written with
    backslash-escaped quotes ("he said \\"wow\\"", Kaggle's IMDB labeledTrainData.tsv) reads as under the
    RFC 4180 rule, which ends the quoted field at that quote and keeps the rest with stray \\ and "."""
    rows = report.counted.get("backslash_quotes", 0)
    if not rows:
        return []
    return [
        f'{rows} text(s) hold a backslash before a double quote (\\"): a CSV/TSV file written with '
        'backslash-escaped quotes reads so, its texts keeping stray \\ and " characters; if the files are '
        "written that way, set data.escapechar='\\'"
    ]


def label_warnings(names: tuple[str, ...]) -> list[str]:
    """One sentence when labels differ only in case or in spaces around them (' pos', 'Pos', 'pos'):
    each is a class of its own, as the data spells it, which a hand-edited label column rarely means."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.strip().casefold(), []).append(name)
    clashes = [group for group in groups.values() if len(group) > 1]
    if not clashes:
        return []
    listed = "; ".join(", ".join(repr(n) for n in group) for group in clashes)
    return [
        f"labels that differ only in case or surrounding spaces are separate classes: {listed}; if each group "
        "is one class, write its label one way in the data (data.labels only orders and filters labels)"
    ]


def clean_splits(
    splits: dict[str, pd.DataFrame],
    cfg: DataConfig,
    known_labels: tuple[str, ...] | None,
    *,
    truncation_side: str = "left",
) -> tuple[dict[str, pd.DataFrame], tuple[str, ...], CleanReport]:
    """The three steps on in-memory frames (one partition): cleaned frames (text, label id), label names,
    the report. Zero-token texts are found later, by the encode step. Raises DataValidationError."""
    from pipeline.data.split import text_hash

    report, unknown, kinds, parts = CleanReport(), Counter(), {}, []
    for name, frame in splits.items():
        # A pandas object column may mix 1 and "1": check kinds per value before Arrow sees it.
        for value in frame["label"].tolist():
            if value is not None and not (isinstance(value, float) and value != value):
                kinds.setdefault(_label_kind(value), value)
        check_label_kinds(kinds, cfg)
        labels = [
            None if v is None or (isinstance(v, float) and v != v) else _label_str(v) for v in frame["label"].tolist()
        ]
        texts = pa.array(
            [None if t is None or (isinstance(t, float) and t != t) else str(t) for t in frame["text"].tolist()],
            pa.string(),
        )
        checked = check_rows(
            pa.table({"text": texts, "label": pa.array(labels, pa.string())}), cfg, name, truncation_side
        )
        report.merge(checked.report)
        unknown.update(checked.unknown)
        parts.append(checked.table)
    integer_labels = check_label_kinds(kinds, cfg)
    check_unknown(unknown, cfg, report)
    rows = pa.concat_tables(parts)
    rows = rows.append_column("h", pa.array(text_hash(rows.column("text"), cfg.seed)))
    kept, dups = dedup_partition(rows)
    report.merge(dups)
    check_drop_fraction(report, cfg)
    names = name_labels(set(kept.column("label").to_pylist()), integer_labels, cfg, known_labels, report, kept.num_rows)
    ids = {n: i for i, n in enumerate(names)}
    by_prio = {PRIORITY[n]: n for n in splits}
    prio = kept.column("prio").to_numpy()
    cleaned = {}
    for p, name in by_prio.items():
        part = kept.filter(pa.array(prio == p))
        cleaned[name] = pd.DataFrame(
            {
                "text": pd.Series(part.column("text").to_pylist(), dtype=object),
                "label": pd.Series([ids[x] for x in part.column("label").to_pylist()], dtype="int64"),
            }
        )
    report.rows_out = kept.num_rows
    return cleaned, names, report

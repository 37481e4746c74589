"""A row's text from its text column, or from several (data.text_column=[title, content]) joined.

Amazon polarity's and AG News' rows hold a title and a body; both carry the sentiment or topic. The job
joins the columns in the configured order with one space, leaving a missing or blank part out, so that a
row with a title and no body is its title. Training (pipeline.data.sources), batch scoring
(jobs.predict, pipeline.registry.batch_scoring) and the served model (raw_text_model) join with this one
function: a model sees at scoring time the text it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import DataValidationError

SEPARATOR = " "


def is_string_type(t: pa.DataType) -> bool:
    """string, large_string or string_view (Polars' and DuckDB's Arrow strings, kept in Parquet metadata)."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _fix(setting: str | None) -> str:
    """How to mend a text column of other values: choose other columns (`setting`), or send strings."""
    chosen = f"set {setting} to the column(s) that hold the texts, or " if setting else ""
    return f"{chosen}write the texts as strings"


def as_text(values: pa.Array | pa.ChunkedArray, column: str, where: str, setting: str | None) -> pa.Array:
    """A text column as strings. Numbers, lists or other values are not text: stringified they would make a
    vocabulary of digits and brackets, so they stop the job naming the column (`setting`: the option that
    chose it). A column of missing values only (pandas reads one as float NaN) is all nulls."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    if is_string_type(values.type):
        return pc.cast(values, pa.string())
    valid = values.drop_null()
    if not len(valid) or pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.string())
    raise DataValidationError(
        f"{where}: column {column!r} holds {values.type} values (e.g. {valid[0].as_py()!r}), not text; " + _fix(setting)
    )


def join_text(
    columns: Sequence[pa.Array | pa.ChunkedArray], names: Sequence[str], where: str, setting: str | None
) -> pa.Array:
    """The row texts of `columns` (named `names`), joined with SEPARATOR. A missing or blank part is left
    out; a row whose parts are all missing is missing, one whose parts are all blank or missing is empty
    (the cleaning step counts both)."""
    parts = [as_text(c, n, where, setting) for c, n in zip(columns, names, strict=True)]
    if len(parts) == 1:
        return parts[0]
    blank = [pc.fill_null(pc.equal(pc.utf8_trim_whitespace(p), ""), True) for p in parts]
    kept = [pc.if_else(b, pa.scalar(None, pa.string()), p) for p, b in zip(parts, blank, strict=True)]
    # Folded pairwise: binary_join_element_wise(null_handling="skip") drops the rows whose parts are all
    # null (pyarrow 25), shortening the column.
    joined = kept[0]
    for part in kept[1:]:
        joined = pc.coalesce(pc.binary_join_element_wise(joined, part, pa.scalar(SEPARATOR)), joined, part)
    missing = _all([pc.is_null(p) for p in parts])
    return pc.coalesce(joined, pc.if_else(missing, pa.scalar(None, pa.string()), pa.scalar("")))


def _all(masks: list[pa.Array]) -> pa.Array:
    out = masks[0]
    for m in masks[1:]:
        out = pc.and_(out, m)
    return out


def column_names(text_column: str | Sequence[str]) -> tuple[str, ...]:
    """data.text_column or --text-column (one name, or several) as a tuple of names."""
    return (text_column,) if isinstance(text_column, str) else tuple(text_column)


def frame_texts(frame, text_column: str | Sequence[str], where: str, setting: str | None) -> list:
    """A scoring frame's text values (pandas), for the served model's row check: its text column's values
    as they are, or its text columns joined by `join_text`. Raises DataValidationError for a text column
    holding other values than text."""
    names = column_names(text_column)
    if len(names) == 1:
        return frame[names[0]].tolist()
    columns = []
    for name in names:
        try:
            columns.append(pa.array(frame[name].tolist(), from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # strings mixed with numbers, lists, ...
            kinds = sorted({type(v).__name__ for v in frame[name].tolist()})
            raise DataValidationError(
                f"{where}: column {name!r} mixes {', '.join(kinds)} values, not text only; " + _fix(setting)
            ) from None
    return join_text(columns, names, where, setting).to_pylist()

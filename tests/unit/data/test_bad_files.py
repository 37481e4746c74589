"""Malformed input files: each is a counted drop or one line naming the file, the line, the value and
the fix; never a silent change of the data (issue 13, items 1-4)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.prepare import prepare
from pipeline.data.sources import jsonl_error
from pipeline.data.store import read_texts
from pipeline.errors import DataValidationError, UserInputError
from schemas.config import DataConfig


def _rows(n: int = 40) -> list[tuple[str, str]]:
    return [(f"review number {i} {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(n)]


def _csv_lines(rows) -> str:
    return "".join(f"{t},{lab}\n" for t, lab in rows)


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# -- item 1: a stray double quote, a row with too few fields -------------------------------------------


def _stray_quote_csv(tmp_path: Path) -> str:
    # line 12 opens a quote that line 15 closes: lines 12-15 would read as one record labelled 'pos'.
    body = (
        _csv_lines(_rows()[:10]) + '"stray quote review,neg\nswallowed one,pos\nswallowed two,neg\n'
        'closing "here" review,pos\n' + _csv_lines(_rows()[10:])
    )
    return _write(tmp_path, "stray.csv", "text,label\n" + body)


def test_stray_quote_swallowing_lines_stops_naming_file_and_lines(tmp_path, job):
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(_stray_quote_csv(tmp_path),)))
    msg = _one_line(e)
    assert "stray.csv" in msg and "line 12" in msg and "15" in msg and "quote" in msg
    assert "stray quote review" in msg and "on_bad_csv_row=skip" in msg


def test_stray_quote_skipped_counts_every_swallowed_line(tmp_path, job):
    m = prepare(
        job(source="files", paths=(_stray_quote_csv(tmp_path),), on_bad_csv_row="skip", max_drop_fraction=0.2)
    ).manifest
    assert m.cleaning.dropped["bad_csv_row"] == 4  # the 4 physical lines of the bad record
    assert m.cleaning.rows_in == 44  # every data line of the file is accounted for
    assert m.cleaning.rows_out == 40
    assert m.cleaning.examples["bad_csv_row"] == [f"{tmp_path / 'stray.csv'}:12-15"]


def test_quoted_multiline_text_is_not_a_bad_row(tmp_path, job):
    path = _write(tmp_path, "multi.csv", "text,label\n" + _csv_lines(_rows()) + '"first line\nsecond line",pos\n')
    m = prepare(job(source="files", paths=(path,))).manifest
    assert m.cleaning.rows_in == 41 and m.cleaning.dropped == {}


def test_row_with_too_few_fields_is_a_bad_csv_row(tmp_path, job):
    path = _write(tmp_path, "few.csv", "text,label\n" + _csv_lines(_rows()) + "only a text here\nempty label,\n")
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(path,)))
    msg = _one_line(e)
    assert "few.csv" in msg and "line 42" in msg and "'only a text here'" in msg and "1 field" in msg
    m = prepare(job(source="files", paths=(path,), on_bad_csv_row="skip", max_drop_fraction=0.2)).manifest
    assert m.cleaning.dropped == {"bad_csv_row": 1, "missing_label": 1}  # `empty label,` has 2 fields


def test_unclosed_quote_at_end_of_file_names_the_line_without_advising_skip(tmp_path, job):
    path = _write(tmp_path, "eof.csv", "text,label\n" + _csv_lines(_rows()) + '"never closed,pos\nlast,neg\n')
    for mode in ("error", "skip"):
        with pytest.raises(DataValidationError) as e:
            prepare(job(source="files", paths=(path,), on_bad_csv_row=mode))
        msg = _one_line(e)
        assert "eof.csv" in msg and "line 42" in msg and "quote" in msg and "on_bad_csv_row" not in msg


# -- item 2: spellings of a missing label -------------------------------------------------------------


def test_missing_label_spellings_are_missing_not_classes(tmp_path, job):
    spellings = ["NaN", "nan", "null", "None", "NA", "", "  "]
    extra = "".join(f"{s} is a word here {i},{s}\n" for i, s in enumerate(spellings))
    path = _write(tmp_path, "na.csv", "text,label\n" + _csv_lines(_rows()) + extra + "NA,pos\nnull,neg\n")
    prepared = prepare(job(source="files", paths=(path,), max_drop_fraction=0.2))
    assert prepared.manifest.label_names == ["neg", "pos"]
    assert prepared.manifest.cleaning.dropped == {"missing_label": len(spellings)}
    assert prepared.manifest.cleaning.rows_out == 42  # texts "NA" and "null" stay texts


def test_missing_label_spellings_in_json(tmp_path, job):
    records = [{"text": t, "label": lab} for t, lab in _rows()] + [
        {"text": f"json row {s}", "label": s} for s in ("NaN", "null", "None", "NA")
    ]
    path = _write(tmp_path, "na.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    m = prepare(job(source="files", paths=(path,), max_drop_fraction=0.2)).manifest
    assert m.label_names == ["neg", "pos"] and m.cleaning.dropped == {"missing_label": 4}


# -- item 3: text values that are not strings ----------------------------------------------------------


@pytest.mark.parametrize("values", [list(range(40)), [[i, i + 1] for i in range(40)], [i / 2 for i in range(40)]])
def test_non_string_text_in_parquet_stops_naming_file_column_and_value(tmp_path, job, values):
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": values, "label": [lab for _, lab in _rows()]}), path)
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(str(path),)))
    msg = _one_line(e)
    assert "numbers.parquet" in msg and "'text'" in msg and repr(values[0]) in msg and "data.text_column" in msg


def test_number_among_string_texts_in_jsonl_names_the_line(tmp_path, job):
    records = [{"text": t, "label": lab} for t, lab in _rows()] + [{"text": 12345, "label": "pos"}]
    path = _write(tmp_path, "mixed.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(path,)))
    msg = _one_line(e)
    assert "mixed.jsonl" in msg and "line 41" in msg and "12345" in msg and "'text'" in msg
    assert "label" not in msg.split("'text'")[0]  # not blamed on the labels


# The CSV reader infers each 10,000-row chunk's column types and casts later chunks to the first's.
_CHUNK = 10_000


def test_csv_texts_that_look_like_numbers_for_a_whole_chunk_stay_texts(tmp_path, job):
    numbers = [(f"{i:05d}", "pos" if i % 2 else "neg") for i in range(_CHUNK + 10)]  # "00007": not 7
    path = _write(tmp_path, "codes.csv", "text,label\n" + _csv_lines(numbers + _rows()))
    prepared = prepare(job(source="files", paths=(path,)))
    texts = [t for split in ("train", "validation", "test") for t in read_texts(prepared.path, split)[0]]
    assert prepared.manifest.cleaning.rows_out == len(numbers) + 40
    assert "00007" in texts and "review number 3 good" in texts


def test_an_unused_csv_column_that_changes_kind_does_not_stop_the_job(tmp_path, job):
    # An `id` of 1, 2, 3 ... that turns into "A-17", and a score that turns into "NA", further down.
    lines = [f"{i},{t},{lab},{i / 2}" for i, (t, lab) in enumerate(_rows(_CHUNK + 10))]
    lines += [f"A-{i},late {t},{lab},NA" for i, (t, lab) in enumerate(_rows())]
    path = _write(tmp_path, "ids.csv", "id,text,label,score\n" + "\n".join(lines) + "\n")
    assert prepare(job(source="files", paths=(path,))).manifest.cleaning.rows_out == _CHUNK + 50


def test_csv_labels_that_change_kind_after_the_first_chunk_name_the_column_and_value(tmp_path, job):
    rows = [(f"text {i}", i % 2) for i in range(_CHUNK + 10)] + _rows()
    path = _write(tmp_path, "labels.csv", "text,label\n" + _csv_lines(rows))
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(path,)))
    msg = _one_line(e)
    assert "labels.csv" in msg and "data.label_column='label'" in msg and "'bad'" not in msg
    assert re.search(r"holds integers in its first rows and '(neg|pos)' further down", msg)
    assert "all names or all integers" in msg


def test_backslash_escaped_quotes_are_named_and_read_with_data_escapechar(tmp_path, job):
    # As Kaggle's IMDB labeledTrainData.tsv: quoted fields whose inner quotes are written \" (not "").
    rows = [(f'"he said \\"wow\\" about film {i}"' if i % 4 == 0 else f'"film {i} review"', i % 2) for i in range(40)]
    path = _write(
        tmp_path,
        "kaggle.tsv",
        "id\treview\tsentiment\n" + "".join(f"{i}\t{t}\t{lab}\n" for i, (t, lab) in enumerate(rows)),
    )
    columns = {"text_column": "review", "label_column": "sentiment"}
    plain = prepare(job(source="files", paths=(path,), **columns)).manifest
    assert plain.cleaning.rows_out == 40 and plain.cleaning.counted["backslash_quotes"] == 10
    assert any(
        "10 text(s) hold a backslash before a double quote" in w and "data.escapechar" in w for w in plain.warnings
    )
    escaped = prepare(job(source="files", paths=(path,), escapechar="\\", **columns))
    texts = [t for split in ("train", "validation", "test") for t in read_texts(escaped.path, split)[0]]
    assert 'he said "wow" about film 0' in texts and not any("\\" in t for t in texts)
    assert "backslash_quotes" not in escaped.manifest.cleaning.counted and escaped.manifest.warnings == []


def test_data_escapechar_is_refused_where_no_csv_is_read(tmp_path, job):
    path = _write(tmp_path, "rows.jsonl", "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in _rows()))
    with pytest.raises(UserInputError, match=r"data.escapechar='\\\\' .* holds json files; remove data.escapechar"):
        prepare(job(source="files", paths=(path,), escapechar="\\"))
    with pytest.raises(ValueError, match=r"data.source=hub, data.format=auto; remove data.escapechar"):
        DataConfig(source="hub", name="x", escapechar="\\")


# -- item 4: empty, header-only and broken files ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.csv", "", "is empty"),
        ("blank.csv", "\n\n", "is empty"),
        ("header.csv", "text,label\n", "only a header"),
        ("empty.jsonl", "", "is empty"),
        ("empty.json", "[]", "no rows"),
    ],
)
def test_empty_files_stop_with_one_line(tmp_path, job, name, content, words):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(path,)))
    msg = _one_line(e)
    assert name in msg and words in msg and "data.paths" in msg


def test_jsonl_error_finds_the_first_bad_line():
    good = b'{"text": "a"}\n\n{"text": "b"}\n'
    assert jsonl_error(good) is None  # blank lines are skipped
    assert jsonl_error(good + b'{"text": "c\n{"text": "d"}\n') == (
        'line 4 is not valid JSON (Unterminated string starting at column 10): \'{"text": "c\''
    )
    assert jsonl_error(good + b'{"text" "c"}\n').startswith("line 4 is not valid JSON (Expecting ':' delimiter at")
    assert jsonl_error(b'{"text": "a"}\n[1, 2]\n') == "line 2 is a JSON list, not an object: '[1, 2]'"
    assert jsonl_error(b'{"text": "caf\xe9"}\n').startswith("line 1 is not valid UTF-8: ")


def test_jsonl_line_that_is_not_an_object_is_named(tmp_path, job):
    # Arrow's reason was "Column() changed from object to array", read as labels of mixed types.
    good = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in _rows())
    path = _write(tmp_path, "listed.jsonl", good + '["a", "list"]\n')
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(path,)))
    msg = _one_line(e)
    assert f'listed.jsonl: line {len(_rows()) + 1} is a JSON list, not an object: \'["a", "list"]\'' in msg
    assert "mixes value types" not in msg


def test_broken_jsonl_line_names_file_line_and_value(tmp_path, job):
    good = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in _rows())
    path = _write(
        tmp_path,
        "broken.jsonl",
        good[: len(good) // 2] + '{"text": "x", "label": "pos"} junk\n' + good[len(good) // 2 :],
    )
    lines = Path(path).read_text().splitlines()
    bad_line = next(i for i, line in enumerate(lines, 1) if "junk" in line)
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(path,)))
    msg = _one_line(e)
    assert "broken.jsonl" in msg and f"line {bad_line}" in msg and "junk" in msg and "fix" in msg

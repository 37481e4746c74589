"""Batch scoring's readers (pipeline.registry.scoring_input): a parse error names the file (and, for JSON
Lines, the line); good files read as Ray's own readers read them."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from pipeline.errors import UserInputError
from pipeline.registry.batch_scoring import _input_errors, _read


def _parts(folder, lines_per_file: list[list[str]], suffix: str) -> list[str]:
    folder.mkdir()
    paths = []
    for i, lines in enumerate(lines_per_file):
        path = folder / f"part-{i}{suffix}"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        paths.append(str(path))
    return paths


def test_a_bad_json_line_is_named_by_file_and_line(ray_cluster, tmp_path):
    rows = [json.dumps({"id": i, "text": f"review {i}"}) for i in range(40)]
    files = _parts(tmp_path / "in", [rows, [*rows[:5], '{"id": 5, "text": "cut', *rows[6:]]], ".jsonl")
    with pytest.raises(UserInputError) as err, _input_errors(str(tmp_path / "in"), "json"):
        _read(files, "json", "text").materialize()
    assert str(err.value) == (
        f"--input file {files[1]} could not be read as JSON Lines: line 6 is not valid JSON (Unterminated string "
        'starting at column 19): \'{"id": 5, "text": "cut\'; fix that file or remove it from the input'
    )


def test_a_bad_csv_row_is_named_by_file(ray_cluster, tmp_path):
    header, rows = "id,text", [f'{i},"review {i}, in quotes"' for i in range(40)]
    files = _parts(tmp_path / "in", [[header, *rows], [header, *rows[:7], "7,too,many,fields"]], ".csv")
    with pytest.raises(UserInputError) as err, _input_errors(str(tmp_path / "in"), "csv"):
        _read(files, "csv", "text").materialize()
    message = str(err.value)
    assert message.startswith(f"--input file {files[1]} could not be read as CSV: ")
    assert "Expected 2 columns, got 4: 7,too,many,fields" in message
    assert message.endswith("; fix that file or remove it from the input")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_good_files_read_whole_and_in_order(ray_cluster, tmp_path, suffix):
    import ray.data

    frame = pd.DataFrame({"id": range(30), "text": ["NA", "123", 'a "quoted"\nline', *(f"t{i}" for i in range(27))]})
    halves = [frame.iloc[:12], frame.iloc[12:]]
    (tmp_path / "in").mkdir()
    files = []
    for i, half in enumerate(halves):
        path = tmp_path / "in" / f"part-{i}{suffix}"
        if suffix == ".jsonl":
            half.to_json(path, orient="records", lines=True)
        else:
            half.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
        files.append(str(path))
    fmt = {".jsonl": "json", ".csv": "csv", ".tsv": "tsv"}[suffix]
    context = ray.data.DataContext.get_current()
    saved, context.execution_options.preserve_order = context.execution_options.preserve_order, True
    try:
        got = _read(files, fmt, "text").to_pandas()
    finally:
        context.execution_options.preserve_order = saved
    # JSON Lines keeps its types; CSV columns are read as written (strings), as the one-file path reads them
    assert got["id"].tolist() == (list(range(30)) if suffix == ".jsonl" else [str(i) for i in range(30)])
    assert got["text"].tolist() == frame["text"].tolist()  # "NA" and "123" stay text


def test_a_csv_column_that_changes_kind_after_the_first_block_reads_as_written(ray_cluster, tmp_path):
    # Arrow infers a column's type from a file's first block (1 MiB): an id that turns into "A-17"
    # further down stopped the whole job ("CSV conversion error to int64"). Read as written, as the
    # one-file path reads the same file.
    from jobs.predict import _READERS

    lines = [f"{i},review number {i} of the first block,{i / 2}" for i in range(40_000)]
    lines += ['A-17,"a later review, quoted",NA', "00042,last review,1e3"]
    path = tmp_path / "in.csv"
    path.write_text("\ufeffid,text,score\n" + "\n".join(lines) + "\n", encoding="utf-8")  # with a BOM
    assert path.stat().st_size > 1 << 20
    got = _read([str(path)], "csv", "text").to_pandas()
    one_file = _READERS[".csv"](path, None, None)
    pd.testing.assert_frame_equal(got, one_file, check_dtype=False)  # Arrow vs pandas strings
    assert list(got.columns) == ["id", "text", "score"] and len(got) == 40_002
    assert got.iloc[-2:].to_dict("list") == {
        "id": ["A-17", "00042"],
        "text": ["a later review, quoted", "last review"],
        "score": ["NA", "1e3"],
    }


def test_a_csv_without_a_header_reads_with_column_names_on_both_paths(ray_cluster, tmp_path):
    # As AG News' test.csv: "label","title","text", no header line. Both readers take the first line as a
    # row and give the same frame; a first line of another field count, or a header, is named.
    from jobs.predict import read_input

    path = tmp_path / "test.csv"
    path.write_text("".join(f'"{i % 4 + 1}","title {i}","body {i}, with a comma"\n' for i in range(30)))
    names = ("label", "title", "body")
    got = _read([str(path)], "csv", "body", None, names).to_pandas()
    one_file = read_input(path, "body", column_names=names)
    pd.testing.assert_frame_equal(got, one_file, check_dtype=False)
    assert list(got.columns) == list(names) and len(got) == 30
    assert got.iloc[0].to_dict() == {"label": "1", "title": "title 0", "body": "body 0, with a comma"}
    with pytest.raises(
        UserInputError,
        match=r"columns are \['1', 'title 0', 'body 0, with a comma'\]; .*pass "
        r"--column-names with the columns' names in order \(e.g. --column-names label,c2,text\)",
    ):
        read_input(path, "text")
    few = r"line 1 has 3 fields \('1', 'title 0', 'body 0, with a comma'\), but --column-names=\['label', 'body'\]"
    with pytest.raises(UserInputError, match=rf"^--input {path}: {few}"):
        read_input(path, "body", column_names=("label", "body"))
    with pytest.raises(UserInputError) as err, _input_errors(str(path), "csv"):
        _read([str(path)], "csv", "body", None, ("label", "body")).materialize()
    assert re.match(rf"--input file {path}: {few} names 2; name every column, in order", str(err.value))
    with pytest.raises(UserInputError, match=r"--text-column 'text' is not among --column-names label,title,body"):
        read_input(path, "text", column_names=names)
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "a"}\n')
    with pytest.raises(UserInputError, match=r"--column-names applies to CSV or TSV input .*; drop it"):
        read_input(jsonl, "text", column_names=("label", "text"))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"text": "a"}\n{"text": "b\n', "line 2 is not valid JSON (Unterminated string starting at column 10)"),
        ('{"text": "a"}\n["a", "list"]\n', "line 2 is a JSON list, not an object"),  # was a TypeError, exit 1
    ],
)
def test_the_one_file_path_names_the_json_line(tmp_path, content, reason):
    from jobs.predict import read_input

    path = tmp_path / "in.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserInputError, match=rf"^--input {path} could not be read as jsonl \({re.escape(reason)}: "):
        read_input(path, "text")


def test_an_object_store_prefix_given_with_an_output_file_says_to_give_a_folder():
    from jobs.predict import read_input

    # before: "unsupported extension ''"; checked before any request to the store
    with pytest.raises(
        UserInputError, match=r"^--input s3://bucket/reviews has no extension: .* give --output a folder"
    ):
        read_input("s3://bucket/reviews", "text")


def test_an_output_file_is_compressed_by_its_name_and_parquet_is_not(tmp_path):
    import gzip

    from jobs.predict import _writer, write_output

    frame = pd.DataFrame({"text": ["a", "NA"], "label": ["pos", "neg"]})
    write_output(frame, tmp_path / "scored.csv.gz")
    assert gzip.decompress((tmp_path / "scored.csv.gz").read_bytes()) == frame.to_csv(index=False).encode()
    assert [p.name for p in tmp_path.iterdir()] == ["scored.csv.gz"]  # no plain file left beside it
    with pytest.raises(UserInputError, match=r"^--output x\.parquet\.gz: Parquet is compressed inside the file"):
        _writer("x.parquet.gz")
    with pytest.raises(UserInputError, match=r"^--output x\.gz: unsupported extension '\.gz'; use \.csv"):
        _writer("x.gz")

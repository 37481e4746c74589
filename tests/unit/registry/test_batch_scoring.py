"""The pure parts of batch scoring (pipeline.registry.batch_scoring); the Ray runs are in
tests/integration/test_serving.py."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.errors import UserInputError
from pipeline.registry.batch_scoring import (
    SUMMARY,
    _pinned,
    _read_error,
    block_texts,
    check_collisions,
    check_delimiter,
    check_output,
    input_files,
    is_folder_output,
    score_columns,
)


@pytest.mark.parametrize(
    ("path", "folder"),
    [
        ("scored/", True),
        ("scored", True),
        ("s3://bucket/scored/", True),
        ("s3://bucket/run.2026/scored", True),
        ("scored.parquet", False),
        ("s3://bucket/scored.csv", False),
        ("out/scored.jsonl", False),
    ],
)
def test_an_output_without_extension_is_a_folder(path, folder):
    assert is_folder_output(path) is folder


def test_input_files_takes_a_folder_or_glob_of_one_format(tmp_path):
    for name in ("b.csv", "a.csv", "sub/c.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("text\nx\n")
    files, fmt = input_files(str(tmp_path))
    assert fmt == "csv" and [f.removeprefix(str(tmp_path)) for f in files] == ["/a.csv", "/b.csv", "/sub/c.csv"]
    assert input_files(str(tmp_path / "*.csv"))[0] == files[:2]
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(UserInputError, match=r"files of one format expected .*found \['\.csv', '\.jsonl'\]"):
        input_files(str(tmp_path))
    with pytest.raises(UserInputError, match=r"--input .*nothing\*\.csv matches no file"):
        input_files(str(tmp_path / "nothing*.csv"))
    (tmp_path / "d.jsonl").unlink()
    (tmp_path / "e.csv.gz").write_bytes(b"")  # compressed: of the format behind the compression (Ray decompresses)
    assert input_files(str(tmp_path)) == ([*files[:2], str(tmp_path / "e.csv.gz"), files[2]], "csv")
    assert input_files(f"file://{tmp_path}") == input_files(str(tmp_path))  # file:// is the local path


def test_a_folder_of_text_lines_is_scoring_input_and_one_of_other_files_is_named(tmp_path):
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "a.txt").write_text("__label__1 x\n")
    (tmp_path / "ft" / "b.txt.bz2").write_bytes(b"")
    files, fmt = input_files(str(tmp_path / "ft"))
    assert fmt == "txt" and [f.rpartition("/")[2] for f in files] == ["a.txt", "b.txt.bz2"]
    (tmp_path / "sheets").mkdir()
    (tmp_path / "sheets" / "a.xlsx").write_bytes(b"")
    with pytest.raises(
        UserInputError, match=r"sheets holds no \.csv, \.tsv, \.jsonl, \.parquet, \.txt file \(found \['\.xlsx'\]\)"
    ):
        input_files(str(tmp_path / "sheets"))


def test_a_column_the_scores_would_write_is_refused_with_the_prefix_to_use():
    assert score_columns(["neg", "pos"], "pred_") == ["pred_label", "pred_probability", "pred_p_neg", "pred_p_pos"]
    check_collisions(["text", "label"], ["neg", "pos"], "pred_", "in.csv")  # apart: no error
    with pytest.raises(UserInputError, match=r"in\.csv already has the column\(s\) \['label', 'p_pos'\].*pred_"):
        check_collisions(["text", "label", "p_pos"], ["neg", "pos"], "", "in.csv")
    with pytest.raises(UserInputError, match=r"--score-prefix x_pred_"):
        check_collisions(["x_label"], ["neg", "pos"], "x_", "in.csv")


def test_a_block_without_text_is_refused_quoting_the_rows():
    rows = pd.DataFrame({"id": [1, 2, 3, 4], "text": ["good", "", None, 5]})
    with pytest.raises(UserInputError) as e:
        block_texts(rows, "text", "s3://b/in/")
    message = str(e.value)
    assert "{'id': 2, 'text': ''} (empty)" in message and "(missing)" in message and "(int, not a string)" in message
    assert block_texts(rows.iloc[:1], "text", "x") == ["good"]


def test_read_errors_are_told_from_other_failures():
    assert _read_error(pa.ArrowInvalid("Parquet file size is 1 bytes\nmore")) == "Parquet file size is 1 bytes"
    remote = (
        "ray::ReadCSV->SplitBlocks(4)() (pid=1)\n  File x\nValueError: Failed to read CSV file: /d/a.csv. "
        "Please check the CSV file has correct format\nFailed to read stream iteratively after 1/10 attempts"
    )
    assert _read_error(RuntimeError(remote)) == "Failed to read CSV file: /d/a.csv"
    assert _read_error(RuntimeError("ray::MapWorker(MapBatches(Scorer)).submit()\nValueError: boom")) is None


def test_an_output_folder_is_replaced_only_if_a_scoring_run_wrote_it(tmp_path):
    check_output(str(tmp_path / "new"))  # absent: fine
    (tmp_path / "empty").mkdir()
    check_output(str(tmp_path / "empty"))
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / SUMMARY).write_text("{}")
    (tmp_path / "earlier" / "part-000000.parquet").write_bytes(b"")
    check_output(str(tmp_path / "earlier"))
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserInputError, match=r"holds files that no scoring run wrote .*give a new or empty folder"):
        check_output(str(tmp_path) + "/")
    with pytest.raises(UserInputError, match=r"mine\.txt is a file"):
        check_output(str(tmp_path / "mine.txt"))
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    # A bucket's root has no sibling prefix for the staging parts.
    with pytest.raises(UserInputError, match=r"s3://bucket/ is a bucket's root: give a folder inside it"):
        check_output("s3://bucket/")


def test_a_delimiter_is_one_character_for_csv_or_tsv_input():
    check_delimiter(None, ".parquet", "in.parquet")
    check_delimiter(";", ".csv", "in.csv")
    check_delimiter("|", ".tsv", "in.tsv")
    for bad in (";;", "", '"', "\n"):
        with pytest.raises(UserInputError, match="one character expected"):
            check_delimiter(bad, ".csv", "in.csv")
    with pytest.raises(UserInputError, match=r"applies to CSV or TSV input, not in\.jsonl \(\.jsonl\)"):
        check_delimiter(";", ".jsonl", "in.jsonl")


def test_an_alias_is_pinned_to_the_version_it_resolved_to():
    assert _pinned("models:/m@champion", "7") == "models:/m/7"
    assert _pinned("models:/m/3", "3") == "models:/m/3"
    assert _pinned("runs:/abc/model", None) == "runs:/abc/model"


def test_the_sink_writes_every_block_in_order_one_file_per_task(ray_cluster, tmp_path):
    # Ray 2.60's write_parquet gave 200,000 scored rows back with 1,024-row batches swapped (pyarrow's
    # threaded write_dataset); this sink writes each task's blocks in order and reports what it wrote.
    import numpy as np
    import ray.data

    from pipeline.registry.batch_scoring import _ordered_parquet_sink

    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        ds = ray.data.range(20_000, override_num_blocks=8).map_batches(
            lambda b: b, batch_size=1024, batch_format="pandas"
        )
        sink = _ordered_parquet_sink(tmp_path / "out")
        ds.write_datasink(sink)
    finally:
        context.execution_options.preserve_order = saved
    assert sum(rows for _, rows in sink.files) == 20_000 and len(sink.files) > 1
    assert [path for path, _ in sink.files] == sorted(str(p) for p in (tmp_path / "out").iterdir())
    ids = pd.read_parquet(tmp_path / "out")["id"].to_numpy()
    assert (ids == np.arange(20_000)).all()

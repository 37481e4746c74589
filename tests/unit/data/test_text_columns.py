"""data.text_column=[title, content]: a row's text joined from several columns, in every reader."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pytest

from pipeline.data.prepare import prepare
from pipeline.data.store import read_texts
from pipeline.data.text_columns import join_text
from pipeline.errors import DataValidationError
from schemas.config import DataConfig


def _texts(prepared) -> list[str]:
    return sorted(t for split in ("train", "validation", "test") for t in read_texts(prepared.path, split)[0])


def _rows(n: int = 40) -> list[dict]:
    # As Amazon polarity: a title and a body, both carrying the sentiment; some titles missing or blank.
    rows = []
    for i in range(n):
        title = None if i % 10 == 3 else "  " if i % 10 == 7 else f"title {i} {'great' if i % 2 else 'awful'}"
        rows.append({"label": i % 2 + 1, "title": title, "content": f"body of review {i}"})
    return rows


def _expected(rows: list[dict]) -> list[str]:
    return sorted(f"{r['title']} {r['content']}" if r["title"] and r["title"].strip() else r["content"] for r in rows)


def test_join_text_leaves_out_missing_and_blank_parts():
    title = pa.array(["Great CD", None, "  ", None, "t", ""])
    body = pa.array(["loved it", None, "b", " ", "x", None])
    joined = join_text([title, body], ["title", "content"], "f.csv", "data.text_column").to_pylist()
    # All parts missing: a missing text; all blank or missing: an empty one (the cleaning step counts each).
    assert joined == ["Great CD loved it", None, "b", "", "t x", ""]
    with pytest.raises(DataValidationError, match=r"f\.csv: column 'stars' holds int64 values \(e\.g\. 5\), not text"):
        join_text([pa.array(["a"]), pa.array([5])], ["title", "stars"], "f.csv", "data.text_column")


@pytest.mark.parametrize("prepare_mode", ["local", pytest.param("ray", marks=pytest.mark.integration)])
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "headerless"])
def test_several_text_columns_prepare_their_joined_text(tmp_path, job, fmt, prepare_mode, request):
    if prepare_mode == "ray":
        request.getfixturevalue("ray_cluster")
    rows = _rows()
    extra = {}
    if fmt == "jsonl":
        path = tmp_path / "reviews.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path = tmp_path / "reviews.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, quoting=csv.QUOTE_ALL)
            if fmt == "csv":
                writer.writerow(["label", "title", "content"])
            else:  # AG News' and Amazon polarity's CSVs: "2","Great CD","...", no header line
                extra = {"column_names": ("label", "title", "content")}
            writer.writerows([r["label"], r["title"] or "", r["content"]] for r in rows)
    cfg = job(source="files", paths=(str(path),), text_column=("title", "content"), prepare_mode=prepare_mode, **extra)
    prepared = prepare(cfg)
    assert _texts(prepared) == _expected(rows)
    assert prepared.manifest.source.text_column == ["title", "content"]
    # Another choice of columns is another prepared dataset (the cache key holds data.text_column).
    body_only = prepare(
        job(source="files", paths=(str(path),), text_column="content", prepare_mode=prepare_mode, **extra)
    )
    assert body_only.manifest.cache_key != prepared.manifest.cache_key
    assert _texts(body_only) == sorted(r["content"] for r in rows)


def test_several_text_columns_of_a_hub_dataset(tmp_path, job):
    import datasets

    rows = _rows(60)
    ds = datasets.Dataset.from_list(rows).cast_column("label", datasets.Value("int64"))
    ds.save_to_disk(str(tmp_path / "saved"))
    prepared = prepare(job(source="hub", name=str(tmp_path / "saved"), text_column=("title", "content")))
    assert _texts(prepared) == _expected(rows)


def test_a_missing_or_non_text_column_among_them_is_named(tmp_path, job):
    path = tmp_path / "reviews.csv"
    path.write_text("label,title,stars,content\n" + "".join(f"{i % 2},t {i},{i},body {i}\n" for i in range(20)))
    with pytest.raises(DataValidationError, match=r"text column 'body' not found in .*reviews\.csv; columns are"):
        prepare(job(source="files", paths=(str(path),), text_column=("title", "body")))
    # data.text_column=title,content on the command line is one name with a comma: say how to list them.
    with pytest.raises(DataValidationError, match=r"list them: data.text_column=\[title,content\]$"):
        prepare(job(source="files", paths=(str(path),), text_column="title,content"))
    # A CSV's fields are text as written ("5" is a text); JSON keeps numbers numbers.
    lines = tmp_path / "reviews.jsonl"
    lines.write_text("".join(json.dumps({"label": i % 2, "title": f"t {i}", "stars": i}) + "\n" for i in range(20)))
    with pytest.raises(DataValidationError, match=r"reviews\.jsonl: column 'stars' holds int64 values \(e\.g\. 0\)"):
        prepare(job(source="files", paths=(str(lines),), text_column=("title", "stars")))


def test_text_column_lists_are_checked_with_the_config():
    assert DataConfig(text_column=["body"]).text_column == "body"  # a one-item list is that column
    assert DataConfig(text_column=["title", "body"]).text_columns == ("title", "body")
    with pytest.raises(ValueError, match=r"must name each text column once"):
        DataConfig(text_column=["title", "title"])
    with pytest.raises(ValueError, match=r"data.label_column='label' is also data.text_column"):
        DataConfig(text_column=["title", "label"])
    with pytest.raises(ValueError, match=r"data.text_column='body' is not among data.column_names"):
        DataConfig(
            source="files", paths=("x.csv",), column_names=("label", "title", "text"), text_column=["title", "body"]
        )


def test_arrow_string_views_are_text(tmp_path, job):
    # Polars and DuckDB hand Arrow strings over as string_view, which a Parquet file's schema keeps.
    import pyarrow.parquet as pq

    texts = [f"review {i} {'great fun' if i % 2 else 'awful bore'}" for i in range(40)]
    labels = ["pos" if i % 2 else "neg" for i in range(40)]
    view = pa.table({"text": pa.array(texts, pa.string_view()), "label": pa.array(labels, pa.string_view())})
    pq.write_table(view, tmp_path / "view.parquet")
    pq.write_table(pa.table({"text": texts, "label": labels}), tmp_path / "plain.parquet")
    by_view = prepare(job(source="files", paths=(str(tmp_path / "view.parquet"),)))
    plain = prepare(job(source="files", paths=(str(tmp_path / "plain.parquet"),), output_root=str(tmp_path / "p")))
    assert by_view.manifest.label_names == ["neg", "pos"] and _texts(by_view) == sorted(texts) == _texts(plain)


def test_several_text_columns_of_a_file_read_in_parts(tmp_path, job):
    # A title and a multi-line body; a file over data.split_file_mb read by several tasks gives the same data.
    path = tmp_path / "big.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "title", "content"])
        for i in range(3000):
            body = f"body {i} {'great fun' if i % 2 else 'awful bore'}" + (
                ' said "so", and\nmore' if i % 7 == 0 else ""
            )
            writer.writerow([i % 2, f"title {i}" if i % 5 else "", body])
    columns = {"source": "files", "paths": (str(path),), "text_column": ("title", "content")}
    whole = prepare(job(output_root=str(tmp_path / "whole"), **columns))
    parts = prepare(job(output_root=str(tmp_path / "parts"), split_file_mb=0.01, **columns))
    assert parts.manifest.content_digest == whole.manifest.content_digest
    assert parts.manifest.cleaning.rows_out == 3000 and "title 1 body 1 great fun" in _texts(parts)
    # A stray quote opening the title of a late row swallows the lines after it: named in both plans.
    text = path.read_text(encoding="utf-8").replace("1,title 2501,body", '1,"title 2501,body', 1)
    path.write_text(text, encoding="utf-8")
    messages = []
    for split_mb in (256.0, 0.01):
        with pytest.raises(DataValidationError) as e:
            prepare(job(output_root=str(tmp_path / str(split_mb)), split_file_mb=split_mb, **columns))
        messages.append(str(e.value))
    assert messages[0] == messages[1] and "a double quote opens a field" in messages[0], messages
    assert "into one value ('title 2501,body 2501 great fun\\n0,title 2502" in messages[0]  # the title field

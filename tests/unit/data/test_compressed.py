"""Compressed inputs (reviews.csv.gz, .jsonl.bz2, .tsv.zst): read as the plain file, hashed as stored, and a
file that does not decompress or holds a bad byte is named."""

from __future__ import annotations

import bz2
import gzip
import hashlib
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.data.prepare import prepare
from pipeline.data.sources import COMPRESSED_EXPANSION, data_suffix, expand_paths, file_format, load_corpus, plan_units
from pipeline.data.store import read_texts
from pipeline.errors import DataValidationError, UserInputError
from schemas.config import DataConfig


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".zst": _zstd}


@pytest.mark.parametrize(("name", "ext"), [("reviews.csv", ".gz"), ("reviews.jsonl", ".bz2"), ("reviews.tsv", ".zst")])
def test_a_compressed_file_prepares_as_the_plain_one(fx, job, tmp_path, name, ext):
    plain = fx / "formats" / name
    packed = tmp_path / f"{name}{ext}"
    packed.write_bytes(COMPRESS[ext](plain.read_bytes()))
    columns = {"text_column": "review", "label_column": "sentiment"} if name.endswith(".csv") else {}
    a = prepare(job(output_root=str(tmp_path / "plain"), source="files", paths=(str(plain),), **columns))
    b = prepare(job(output_root=str(tmp_path / "packed"), source="files", paths=(str(packed),), **columns))
    assert b.manifest.content_digest == a.manifest.content_digest
    assert b.manifest.splits == a.manifest.splits
    # lineage names the file as given and hashes its bytes as stored (what `sha256sum` says)
    (entry,) = b.manifest.inputs
    assert entry.uri == str(packed.resolve())
    assert entry.sha256 == hashlib.sha256(packed.read_bytes()).hexdigest()


def test_a_file_that_does_not_decompress_is_named(job, tmp_path):
    bad = tmp_path / "reviews.csv.gz"
    bad.write_bytes(b"text,label\nnot gzip at all,pos\n")
    with pytest.raises(DataValidationError, match=r"reviews\.csv\.gz: could not be decompressed as gzip \("):
        prepare(job(source="files", paths=(str(bad),)))


def test_a_bad_byte_inside_a_compressed_file_is_named_by_line(job, tmp_path):
    bad = tmp_path / "reviews.csv.gz"
    bad.write_bytes(gzip.compress(b"text,label\ngood one,pos\nbad \xff byte,neg\n"))
    bad_byte = r"reviews\.csv\.gz: byte 28 \(line 3, value 0xff\) is not valid utf-8"
    with pytest.raises(DataValidationError, match=bad_byte):
        prepare(job(source="files", paths=(str(bad),)))


def test_the_format_is_the_extension_behind_the_compression(tmp_path):
    assert [data_suffix(p) for p in ("s3://b/A.CSV.GZ", "x.jsonl.zst", "x.parquet", "x.gz", "x")] == [
        ".csv",
        ".jsonl",
        ".parquet",
        "",
        "",
    ]
    assert file_format([Path("a.csv.gz"), Path("b.csv"), Path("c.csv.bz2")], "auto") == "csv"
    with pytest.raises(UserInputError, match=r"extensions \['\.csv\.gz', '\.jsonl\.gz'\]"):
        file_format([Path("a.csv.gz"), Path("b.jsonl.gz")], "auto")
    with pytest.raises(UserInputError, match=r"extensions \['\.gz'\]"):
        file_format([Path("a.gz")], "auto")
    for name in ("a.csv.gz", "b.csv", "notes.txt.gz", "c.gz"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in expand_paths((str(tmp_path),))] == ["a.csv.gz", "b.csv"]


def test_a_compressed_file_counts_as_the_text_it_holds_when_planning(tmp_path):
    # prepare_mode=auto and the partition count go by the text to read, not by the bytes stored
    (tmp_path / "a.csv").write_bytes(b"x" * 1000)
    (tmp_path / "b.csv.gz").write_bytes(b"x" * 1000)
    plan = plan_units(DataConfig(source="files", paths=(str(tmp_path / "a.csv"), str(tmp_path / "b.csv.gz"))))
    assert [u.uris for u in plan.units] == [(str(tmp_path / "a.csv"), str(tmp_path / "b.csv.gz"))]  # one task
    assert plan.input_bytes == 1000 + 1000 * COMPRESSED_EXPANSION


def test_two_compressed_files_of_one_name_are_both_read(fx, job, tmp_path):
    rows = (fx / "formats/reviews.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    for folder, part in (("a", rows[:21]), ("b", [rows[0], *rows[21:]])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "reviews.tsv.gz").write_bytes(gzip.compress("".join(part).encode()))
    raw = load_corpus(DataConfig(source="files", paths=(str(tmp_path / "a"), str(tmp_path / "b"))))
    whole = load_corpus(DataConfig(source="files", paths=(str(fx / "formats/reviews.tsv"),)))
    assert raw.splits["all"].equals(whole.splits["all"])


def test_a_folder_of_compressed_documents_prepares_as_the_plain_folder(fx, job, tmp_path):
    # <root>/<split>/<label>/x.txt.gz (and .bz2, mixed with plain .txt): one document per file, as the plain tree.
    packed = tmp_path / "imdb"
    for i, f in enumerate(sorted((fx / "imdb").rglob("*.txt"))):
        target = packed / f.relative_to(fx / "imdb")
        target.parent.mkdir(parents=True, exist_ok=True)
        ext = [".gz", ".bz2", ""][i % 3]
        target.with_name(target.name + ext).write_bytes(COMPRESS[ext](f.read_bytes()) if ext else f.read_bytes())
    labels = ("neg", "pos")
    a = prepare(job(output_root=str(tmp_path / "plain"), source="folder", paths=(str(fx / "imdb"),), labels=labels))
    b = prepare(job(output_root=str(tmp_path / "packed"), source="folder", paths=(str(packed),), labels=labels))
    assert b.manifest.splits == a.manifest.splits
    for split in ("train", "validation", "test"):
        (texts_a, labels_a), (texts_b, labels_b) = read_texts(a.path, split), read_texts(b.path, split)
        assert texts_b == texts_a and list(labels_b) == list(labels_a)
    assert any(e.uri.endswith(".txt.gz") for e in b.manifest.inputs)

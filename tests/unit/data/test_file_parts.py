"""A file over data.split_file_mb is read by several prepare tasks (pipeline/data/file_parts.py), small
files are read several to a task: the prepared data, lineage and messages are those of one task per file."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from pipeline.data.file_parts import RecordCuts, spans
from pipeline.data.prepare import prepare
from pipeline.data.sources import plan_units, with_cuts
from pipeline.data.stages import LocalRunner, fingerprint
from pipeline.errors import DataValidationError

SMALL = 0.01  # MiB: a file of ~100 KB becomes ~10 parts


def _rows(n: int = 3000) -> list[tuple[str, str]]:
    # Every 7th text holds quotes, a comma and a newline: a CSV record of two lines.
    return [
        (
            f"review {i} {'great fun' if i % 2 else 'awful bore'}" + (' said "so", and\nmore' if i % 7 == 0 else ""),
            "pos" if i % 2 else "neg",
        )
        for i in range(n)
    ]


def _write(tmp_path, fmt: str, rows) -> tuple[str, dict]:
    path = tmp_path / {"csv": "a.csv", "jsonl": "a.jsonl", "parquet": "a.parquet", "fasttext": "a.txt"}[fmt]
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows), encoding="utf-8")
    elif fmt == "parquet":
        pd.DataFrame(rows, columns=["text", "label"]).to_parquet(path, row_group_size=200)
    else:
        path.write_text("".join(f"__label__{lab} {t.replace(chr(10), ' ')}\n" for t, lab in rows), encoding="utf-8")
    return str(path), ({"format": "fasttext"} if fmt == "fasttext" else {})


def _edit(path: str, old: str, new: str) -> None:
    text = open(path, encoding="utf-8").read()
    assert old in text
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "fasttext"])
def test_a_large_file_read_in_parts_prepares_as_the_whole_file(tmp_path, job, fmt):
    path, extra = _write(tmp_path, fmt, _rows())
    assert len(plan_units(job(source="files", paths=(path,), split_file_mb=SMALL, **extra).data).units) >= 3
    whole = prepare(job(output_root=str(tmp_path / "whole"), source="files", paths=(path,), **extra)).manifest
    parts = prepare(
        job(output_root=str(tmp_path / "parts"), source="files", paths=(path,), split_file_mb=SMALL, **extra)
    ).manifest
    assert parts.content_digest == whole.content_digest and parts.cache_key == whole.cache_key
    assert [e.model_dump() for e in parts.inputs] == [e.model_dump() for e in whole.inputs]  # one entry per file
    assert parts.cleaning.rows_out == whole.cleaning.rows_out == 3000


@pytest.mark.integration
def test_parts_run_as_ray_tasks(tmp_path, job, ray_cluster):
    path, _ = _write(tmp_path, "csv", _rows())
    whole = prepare(job(output_root=str(tmp_path / "whole"), source="files", paths=(path,))).manifest
    ray = prepare(
        job(output_root=str(tmp_path / "ray"), source="files", paths=(path,), split_file_mb=SMALL, prepare_mode="ray")
    ).manifest
    assert ray.prepare_mode == "ray" and ray.content_digest == whole.content_digest


@pytest.mark.parametrize(
    ("fmt", "bad"),
    [
        ("csv", "review 2500 has,one field too many,pos"),
        ("jsonl", '{"text": "review 2500, cut short'),
    ],
)
def test_a_bad_record_in_a_later_part_is_named_by_the_file_and_its_own_line(tmp_path, job, fmt, bad):
    path, _ = _write(tmp_path, fmt, _rows())
    lines = open(path, encoding="utf-8").read().split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(("review 2500", '{"text": "review 2500')))
    lines[at] = bad
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    messages = []
    for split_mb in (256.0, SMALL):
        with pytest.raises(DataValidationError) as e:
            prepare(
                job(output_root=str(tmp_path / str(split_mb)), source="files", paths=(path,), split_file_mb=split_mb)
            )
        messages.append(str(e.value))
    assert messages[1] == messages[0] and path in messages[0] and f"line {at + 1}" in messages[0], messages


def test_rows_a_part_drops_are_counted_at_the_file_lines(tmp_path, job):
    rows = _rows()
    path, _ = _write(tmp_path, "csv", rows)
    _edit(path, "review 2501 great fun,pos\n", "review 2501 great fun\n")
    got = []
    for split_mb in (256.0, SMALL):
        cfg = job(output_root=str(tmp_path / str(split_mb)), source="files", paths=(path,), split_file_mb=split_mb)
        got.append(prepare(cfg.model_copy(update={"data": cfg.data.model_copy(update={"on_bad_csv_row": "skip"})})))
    assert got[1].manifest.cleaning.examples == got[0].manifest.cleaning.examples
    assert got[0].manifest.cleaning.dropped["bad_csv_row"] == 1


def test_record_cuts_skip_newlines_inside_quotes_across_blocks():
    data = b'text,label\n"a\nb",1\n"c ""q""\n\nd",0\nplain,1\r\nlast,0\n'
    for block in (1, 3, 64):
        cuts = RecordCuts(targets=[12, 20, 30], quoted=True)
        for i in range(0, len(data), block):
            cuts.feed(data[i : i + block])
        # records start at bytes 0 (header, line 1), 11 ("a\nb", line 2), 19 ("c ""q""\n\nd", line 4),
        # 34 (plain, line 7) and 43 (last, line 8)
        assert cuts.header_end == (11, 2)
        assert cuts.cuts == [(19, 4), (34, 7), (34, 7)]
    assert spans(cuts.cuts, len(data)) == [(0, 19, 1), (19, 34, 4), (34, len(data), 7)]


def test_a_stray_quote_in_an_unquoted_field_keeps_the_file_whole(tmp_path, job):
    # `12" pizza` unquoted: pandas reads the quote as a character, but it flips the quote parity that finds
    # record starts for the rest of the file, so the file is read by one task (same rows as before).
    rows = _rows()
    path, _ = _write(tmp_path, "csv", rows)
    _edit(path, "review 100 awful bore,", 'review 100 a 12" pizza,')
    cfg = job(source="files", paths=(path,), split_file_mb=SMALL)
    plan = plan_units(cfg.data)
    _, cuts = fingerprint(LocalRunner(), plan.units, cfg.data, plan.fmt)
    assert len(plan.units) > 3 and [(u.parts, u.span) for u in with_cuts(plan, cuts).units] == [(1, None)]
    whole = prepare(job(output_root=str(tmp_path / "whole"), source="files", paths=(path,))).manifest
    assert prepare(cfg).manifest.content_digest == whole.content_digest


@pytest.mark.parametrize(
    ("data", "safe"),
    [
        (b'text,label\n"a ""b"", c",1\n"",0\n\xef\xbb\xbf,1\n', True),  # doubled, empty quoted field
        (b'\xef\xbb\xbf"text",label\n"x",1\n', True),  # a BOM before the first quote
        (b'text,label\n12" pizza,1\nok,0\n', False),  # opens inside a field
        (b'text,label\n"a"b,1\nok,0\n', False),  # closes inside a field
        (b'text;label\n"a;b";1\n', True),  # another separator
    ],
)
def test_record_cuts_tell_a_stray_quote(data, safe):
    for block in (1, 5, 64):
        cuts = RecordCuts(targets=[5], quoted=True, sep=b";" if b";" in data else b",")
        for i in range(0, len(data), block):
            cuts.feed(data[i : i + block])
        assert cuts.safe is safe, block


def test_small_files_are_read_in_groups_with_the_same_result(tmp_path, job, monkeypatch):
    # One task per small file made 100,000 files 100,000 tasks (and P + 1 shuffle objects each).
    from pipeline.data import sources

    rows = _rows(400)
    paths = []
    for k in range(40):
        path, _ = _write(tmp_path, "csv", rows[k * 10 : (k + 1) * 10])
        paths.append(str((tmp_path / "a.csv").rename(tmp_path / f"part-{k:02d}.csv")))
    cfg = job(output_root=str(tmp_path / "grouped"), source="files", paths=tuple(paths))
    units = plan_units(cfg.data).units
    assert len(units) < 10 and [u for unit in units for u in unit.uris] == paths
    grouped = prepare(cfg).manifest
    monkeypatch.setattr(sources, "MIN_GROUP", 1)
    monkeypatch.setattr(sources, "GROUPS_FOR_PARALLELISM", 10**9)
    one_each = job(output_root=str(tmp_path / "one-each"), source="files", paths=tuple(paths))
    assert len(plan_units(one_each.data).units) == 40
    alone = prepare(one_each).manifest
    assert grouped.content_digest == alone.content_digest and grouped.cache_key == alone.cache_key
    assert [e.uri for e in grouped.inputs] == [e.uri for e in alone.inputs] == paths


def test_record_cuts_are_the_first_record_starts_after_their_targets():
    # Random records with separators, doubled quotes and line breaks inside quoted fields, as csv.writer
    # writes them; the true record starts are known from the writer, the cuts must be exactly those.
    import io
    import random

    rng = random.Random(7)
    alphabet = ["a", "b", " ", ",", '"', "\n", "\r\n", "é", "字"]
    for trial in range(20):
        starts, data, line, lines = [], b"", 1, []
        for _ in range(rng.randint(1, 60)):
            buf = io.StringIO(newline="")
            csv.writer(buf).writerow(["".join(rng.choices(alphabet, k=rng.randint(0, 12))), rng.choice("01")])
            record = buf.getvalue().encode("utf-8")
            starts.append(len(data))
            lines.append(line)
            data += record
            line += record.count(b"\n")
        starts.append(len(data))  # the end of the file reads as the start of a record that is not there
        lines.append(line)
        targets = sorted(rng.sample(range(1, len(data) + 1), k=min(5, len(data))))
        cuts = RecordCuts(targets=targets, quoted=True)
        block = rng.randint(1, 50)
        for i in range(0, len(data), block):
            cuts.feed(data[i : i + block])
        assert cuts.safe, trial
        for target, cut in zip(targets, cuts.cuts, strict=True):
            assert cut == next((s, n) for s, n in zip(starts, lines, strict=True) if s >= target), (trial, target)


def test_parquet_parts_cover_every_row_group_within_the_part_limit(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.data import file_parts

    pq.write_table(pa.table({"text": [f"row {i}" for i in range(10)]}), tmp_path / "a.parquet", row_group_size=1)
    meta = pq.read_metadata(tmp_path / "a.parquet")
    assert file_parts.parquet_parts(meta, 1) == [(g, g + 1) for g in range(10)]
    monkeypatch.setattr(file_parts, "MAX_PARTS", 3)
    assert file_parts.parquet_parts(meta, 1) == [(0, 4), (4, 8), (8, 10)]
    assert file_parts.parquet_parts(meta, 1 << 30) == [(0, 10)]

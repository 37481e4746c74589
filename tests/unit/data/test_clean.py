"""One test per bad-input case: its outcome, its count in the report, and the message when it stops."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.data.clean import clean_splits
from pipeline.data.prepare import prepare
from pipeline.data.store import read_split_arrays, read_texts
from pipeline.errors import DataValidationError
from schemas.config import DataConfig


def _report(prepared) -> dict:
    stored = json.loads((prepared.path / "cleaning_report.json").read_text())
    assert stored == prepared.manifest.cleaning.model_dump(mode="json")
    return stored


def _bad(fx, name: str) -> tuple[str, ...]:
    return (str(fx / "bad" / name),)


def test_whitespace_only_text_is_dropped_and_counted(fx, job):
    report = _report(prepare(job(source="files", paths=_bad(fx, "empty_text.csv"))))
    assert report["dropped"]["empty_text"] == 2 and report["rows_out"] == 40 and report["invalid_rows"] == 2


def test_text_with_zero_tokens_is_dropped_and_counted(fx, job):
    prepared = prepare(job(source="files", paths=_bad(fx, "zero_tokens.csv")))
    assert _report(prepared)["dropped"]["zero_tokens"] == 1
    for split in ("train", "validation", "test"):
        assert (read_split_arrays(prepared.path, split)[2] > 0).all()


def test_missing_text_and_missing_label_are_dropped_and_counted(fx, job):
    report = _report(prepare(job(source="files", paths=_bad(fx, "missing.csv"))))
    assert report["dropped"]["missing_text"] == 1 and report["dropped"]["missing_label"] == 1


def test_none_and_nan_are_missing():
    frame = pd.DataFrame({"text": ["a", None, float("nan"), "b", "c"], "label": ["x", "y", "y", None, "y"]})
    cfg = DataConfig(max_drop_fraction=1.0)
    _, _, report = clean_splits({"all": frame}, cfg, None)
    assert report.dropped["missing_text"] == 2 and report.dropped["missing_label"] == 1


def test_missing_label_column_names_file_columns_and_fix(fx, job):
    with pytest.raises(
        DataValidationError,
        match=r"label column 'label' not found in .*no_label_column\.csv.*"
        r"\['text', 'stars'\].*data\.label_column",
    ):
        prepare(job(source="files", paths=_bad(fx, "no_label_column.csv")))


def test_label_outside_configured_set_stops_with_value_and_fix(fx, job):
    with pytest.raises(DataValidationError, match=r"'neutral'.*data\.labels.*data\.labels=null.*on_unknown_label=drop"):
        prepare(job(source="files", paths=_bad(fx, "unknown_label.csv"), labels=("neg", "pos")))


def test_label_outside_configured_set_dropped_on_request(fx, job):
    cfg = job(source="files", paths=_bad(fx, "unknown_label.csv"), labels=("neg", "pos"), on_unknown_label="drop")
    assert _report(prepare(cfg))["dropped"]["unknown_label"] == 1


def test_mixed_label_types_in_json_stop_naming_the_file(fx, job):
    with pytest.raises(DataValidationError, match=r"mixed_labels\.jsonl.*mixes value types.*all strings or all"):
        prepare(job(source="files", paths=_bad(fx, "mixed_labels.jsonl")))


def test_mixed_label_types_in_a_table_stop():
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": pd.Series([1, "1", 0], dtype=object)})
    with pytest.raises(DataValidationError, match=r"mixes label types \(int 1, str '1'\)"):
        clean_splits({"all": frame}, DataConfig(), None)


def test_non_utf8_strict_names_file_and_byte_offset(fx, job):
    offset = (fx / "bad/latin1.offset").read_text()
    with pytest.raises(
        DataValidationError,
        match=rf"latin1\.csv: byte {offset} \(line 42, value 0xe9\).*"
        r"data\.encoding_errors=replace",
    ):
        prepare(job(source="files", paths=_bad(fx, "latin1.csv")))


def test_non_utf8_replace_counts_the_row(fx, job):
    prepared = prepare(job(source="files", paths=_bad(fx, "latin1.csv"), encoding_errors="replace"))
    assert _report(prepared)["counted"]["replaced_bytes"] == 1
    assert (
        prepared.manifest.splits["train"].rows
        + prepared.manifest.splits["test"].rows
        + prepared.manifest.splits["validation"].rows
        == 41
    )


def test_non_utf8_under_another_wrong_encoding_still_stops(fx, job):
    # encoding=ascii fits neither the Chinese UTF-8 rows nor the latin-1 byte: strict still stops.
    with pytest.raises(DataValidationError, match=r"latin1\.csv: byte \d+ .*not valid ascii"):
        prepare(job(source="files", paths=_bad(fx, "latin1.csv"), encoding="ascii"))


def test_malformed_csv_row_error_names_file_and_line(fx, job):
    with pytest.raises(
        DataValidationError,
        match=r"malformed\.csv: line 12: the row has 3 fields .*the header has 2; .*on_bad_csv_row=skip",
    ):
        prepare(job(source="files", paths=_bad(fx, "malformed.csv")))


def test_malformed_csv_row_error_names_the_file_among_several(fx, job):
    paths = (str(fx / "shards/part-0.csv"), str(fx / "bad/malformed.csv"), str(fx / "shards/part-1.csv"))
    with pytest.raises(DataValidationError, match=r"^\S*malformed\.csv: line 12: the row has 3 fields"):
        prepare(job(source="files", paths=paths))


def test_malformed_csv_row_skipped_and_counted(fx, job):
    report = _report(prepare(job(source="files", paths=_bad(fx, "malformed.csv"), on_bad_csv_row="skip")))
    assert report["dropped"]["bad_csv_row"] == 1 and report["rows_out"] == 40


def test_huge_document_is_cut_before_tokenizing(fx, job):
    prepared = prepare(job(source="files", paths=_bad(fx, "huge.csv"), max_chars=1000))
    assert _report(prepared)["counted"]["truncated_chars"] == 1
    longest = max(max(map(len, read_texts(prepared.path, s)[0])) for s in ("train", "validation", "test"))
    assert longest <= 1000  # the 10 MB field never reaches the tokenizer or the store
    assert prepared.manifest.length_stats_by_split["train"].max <= 1000 / 5 + 1


def test_duplicates_dropped_and_conflicting_labels_dropped(fx, job):
    report = _report(prepare(job(source="files", paths=_bad(fx, "duplicates.csv"))))
    assert report["dropped"]["duplicate"] == 3
    assert report["dropped"]["conflicting_label"] == 2  # both copies of the contested text
    assert report["rows_out"] == 39


def test_single_class_corpus_refuses_to_train(fx, job):
    with pytest.raises(DataValidationError, match=r"single class \['pos'\]"):
        prepare(job(source="files", paths=_bad(fx, "one_class.csv")))


def test_source_split_with_one_class_refuses_to_train(fx, job):
    with pytest.raises(DataValidationError, match=r"split 'test' has 10 rows and 1 class"):
        prepare(job(source="hub", name=str(fx / "hub_one_class_test")))


def test_source_split_left_with_no_rows_refuses_to_train():
    from pipeline.data.split import check_splits

    counts = {"train": {"a": 5, "b": 5}, "validation": {"a": 1, "b": 1}, "test": {}}
    with pytest.raises(DataValidationError, match=r"split 'test' has no rows"):
        check_splits(counts, {"test"})


def test_too_many_invalid_rows_stop_the_job(fx, job):
    with pytest.raises(DataValidationError, match=r"5 of 45 rows are invalid.*data\.max_drop_fraction=0\.05"):
        prepare(job(source="files", paths=_bad(fx, "many_empty.csv")))
    prepared = prepare(job(source="files", paths=_bad(fx, "many_empty.csv"), max_drop_fraction=0.2))
    assert _report(prepared)["invalid_fraction"] == pytest.approx(5 / 45, abs=1e-5)


def test_split_is_stratified_by_hash_rank_and_recorded(fx, job):
    m = prepare(job(source="files", paths=(str(fx / "formats/reviews.tsv"),))).manifest
    assert {s: i.label_counts for s, i in m.splits.items()} == {
        "train": {"neg": 16, "pos": 16},
        "validation": {"neg": 2, "pos": 2},
        "test": {"neg": 2, "pos": 2},
    }
    assert m.cleaning.label_proportions["test"] == {"neg": 0.5, "pos": 0.5}


def test_tokenizer_trains_on_a_bounded_sample(fx, job):
    full = prepare(job(source="files", paths=(str(fx / "formats/reviews.tsv"),))).manifest
    sampled = prepare(
        job(source="files", paths=(str(fx / "formats/reviews.tsv"),), tokenizer={"train_sample_rows": 10})
    ).manifest
    assert full.tokenizer_settings.sample_rows_used == 32
    assert 0 < sampled.tokenizer_settings.sample_rows_used < 32 and sampled.tokenizer_settings.train_sample_rows == 10
    assert sampled.vocab_size < full.vocab_size
    assert sampled.splits["train"].rows == full.splits["train"].rows  # the sample trains the tokenizer only


def test_labels_differing_only_in_case_or_spaces_stay_classes_with_a_warning(job, tmp_path, caplog):
    corpus = tmp_path / "labels.csv"
    spellings = ["pos", "Pos", " pos", "neg"]
    rows = [f"review number {i} {'good' if i % 4 < 3 else 'bad'},{spellings[i % 4]}" for i in range(80)]
    corpus.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="pipeline.data.prepare"):
        prepared = prepare(job(source="files", paths=(str(corpus),)))
    assert prepared.manifest.label_names == [" pos", "Pos", "neg", "pos"]  # as the data spells them
    (warning,) = [w for w in prepared.manifest.warnings if w.startswith("labels that differ")]
    assert "' pos', 'Pos', 'pos'" in warning and warning in caplog.text


def test_distinct_labels_give_no_label_warning(fx, job):
    prepared = prepare(job(source="files", paths=(str(fx / "formats/reviews.tsv"),)))
    assert not [w for w in prepared.manifest.warnings if w.startswith("labels")]


def _sst_like(folder, unlabeled_test: bool) -> str:
    """A local Hub-layout dataset as GLUE's SST-2 ships it: ClassLabel labels, the test split all -1."""
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    (folder / "data").mkdir(parents=True)
    for split, n in (("train", 60), ("validation", 20), ("test", 20)):
        rows = [{"sentence": f"{split} sentence {i} {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(n)]
        if split == "test" and unlabeled_test:
            rows = [{**r, "label": -1} for r in rows]
        Dataset.from_list(rows, features=features).to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")
    return str(folder)


@pytest.mark.parametrize("prepare_mode", ["local", pytest.param("ray", marks=pytest.mark.integration)])
def test_an_unlabeled_hub_test_split_names_the_split_and_the_fix(tmp_path, job, prepare_mode, request):
    if prepare_mode == "ray":
        request.getfixturevalue("ray_cluster")
    name = _sst_like(tmp_path / "sst", unlabeled_test=True)
    cfg = job(source="hub", name=name, text_column="sentence", prepare_mode=prepare_mode)
    with pytest.raises(DataValidationError) as e:
        prepare(cfg)
    msg = str(e.value)
    assert "every one of the 20 rows" in msg and "test-00000-of-00001.parquet" in msg
    assert "(data.test_split='test')" in msg and "set data.test_split=null" in msg
    carved = prepare(job(source="hub", name=name, text_column="sentence", test_split=None))
    assert carved.manifest.label_names == ["negative", "positive"]
    assert carved.manifest.splits["validation"].rows == 20 and carved.manifest.splits["test"].rows > 0


def test_a_file_without_a_single_label_is_named_not_counted(tmp_path, job):
    labeled = tmp_path / "labeled.csv"
    labeled.write_text("text,label\n" + "".join(f"review {i},{'pos' if i % 2 else 'neg'}\n" for i in range(200)))
    blank = tmp_path / "unlabeled.csv"
    blank.write_text("text,label\n" + "".join(f"new review {i},\n" for i in range(5)))
    with pytest.raises(DataValidationError, match=r"every one of the 5 rows of .*unlabeled\.csv has no label"):
        prepare(job(source="files", paths=(str(labeled), str(blank))))


def test_labels_with_fractions_are_named_a_score_not_mixed_types(tmp_path, job):
    scores = tmp_path / "scores.csv"
    scores.write_text("text,label\n" + "".join(f"review {i},{(i % 7) / 7 if i % 3 else 1.0}\n" for i in range(60)))
    with pytest.raises(DataValidationError) as e:
        prepare(job(source="files", paths=(str(scores),)))
    assert "holds numbers with fractions (0.14" in str(e.value) and "a score, not a class" in str(e.value)
    assert "mixes label types" not in str(e.value)


@pytest.mark.parametrize("prepare_mode", ["local", pytest.param("ray", marks=pytest.mark.integration)])
def test_an_id_column_taken_for_the_label_is_named(tmp_path, job, prepare_mode, request):
    if prepare_mode == "ray":
        request.getfixturevalue("ray_cluster")
    path = tmp_path / "ids.csv"
    path.write_text("id,text,label\n" + "".join(f"{i},review {i},{'pos' if i % 2 else 'neg'}\n" for i in range(300)))
    with pytest.raises(DataValidationError, match=r"column 'id' has 300 distinct labels over 300 rows \(1\.0 per"):
        prepare(job(source="files", paths=(str(path),), label_column="id", prepare_mode=prepare_mode))
    # Many classes with a few rows each are a corpus, not an id column: 12 classes of 10 rows.
    few = tmp_path / "few.csv"
    few.write_text("text,label\n" + "".join(f"review {i} topic {i % 12},t{i % 12}\n" for i in range(120)))
    names = prepare(job(source="files", paths=(str(few),), prepare_mode=prepare_mode)).manifest.label_names
    assert len(names) == 12

"""Bad corpora stop `jobs.run` before training with one line naming the problem and the fix;
nothing is registered and no alias moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import run as run_job

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, capsys, *overrides: str) -> tuple[int, str]:
    code = run_job.main([f"output_root={tmp_path / 'out'}", *overrides])
    return code, capsys.readouterr().err


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reviews.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _assert_nothing_registered(tmp_path: Path) -> None:
    db = tmp_path / "out" / "mlflow.db"
    if db.exists():
        from mlflow.tracking import MlflowClient

        assert MlflowClient(f"sqlite:///{db}").search_registered_models() == []
    assert not (tmp_path / "out" / "ray_results").exists()  # training never started


def test_missing_corpus_file(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, "data.source=files", f"data.paths=[{tmp_path / 'absent.csv'}]")
    assert code == 2 and "absent.csv" in err and "matches no file" in err
    _assert_nothing_registered(tmp_path)


def test_missing_label_column(tmp_path, capsys):
    path = _csv(tmp_path, "review,stars\ngood,pos\nbad,neg\n")
    code, err = _run(tmp_path, capsys, "data.source=files", f"data.paths=[{path}]", "data.text_column=review")
    assert code == 2 and "label column 'label' not found" in err and "set data.label_column" in err
    _assert_nothing_registered(tmp_path)


def test_empty_corpus(tmp_path, capsys):
    path = _csv(tmp_path, "text,label\n")
    code, err = _run(tmp_path, capsys, "data.source=files", f"data.paths=[{path}]")
    assert code == 2 and "error:" in err and "reviews.csv" in err
    _assert_nothing_registered(tmp_path)


def test_unknown_label_value(tmp_path, capsys):
    rows = "".join(f"text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40)) + "odd one,maybe\n"
    path = _csv(tmp_path, "text,label\n" + rows)
    code, err = _run(tmp_path, capsys, "data.source=files", f"data.paths=[{path}]", "data.labels=[neg, pos]")
    assert code == 2 and "'maybe'" in err and "data.labels" in err
    _assert_nothing_registered(tmp_path)


def test_single_class_corpus(tmp_path, capsys):
    path = _csv(tmp_path, "text,label\n" + "".join(f"text {i},pos\n" for i in range(40)))
    code, err = _run(tmp_path, capsys, "data.source=files", f"data.paths=[{path}]")
    assert code == 2 and "single class" in err
    _assert_nothing_registered(tmp_path)


def test_stray_quote_stops_with_one_line_naming_the_lines(tmp_path, capsys):
    rows = [f"text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40)]
    path = _csv(
        tmp_path,
        "text,label\n" + "".join(rows[:5]) + '"a stray quote,pos\nswallowed,neg\nends "here",pos\n' + "".join(rows[5:]),
    )
    code, err = _run(tmp_path, capsys, "data.source=files", f"data.paths=[{path}]")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert "reviews.csv: line 7-9: a double quote" in errors[0] and "on_bad_csv_row=skip" in errors[0]
    _assert_nothing_registered(tmp_path)


def test_broken_jsonl_line_stops_with_one_line(tmp_path, capsys):
    path = tmp_path / "reviews.jsonl"
    path.write_text(
        "".join(f'{{"text": "t {i}", "label": "{"pos" if i % 2 else "neg"}"}}\n' for i in range(20))
        + '{"text": "x", "label": "pos"} junk\n',
        encoding="utf-8",
    )
    code, err = _run(tmp_path, capsys, "data.source=files", f"data.paths=[{path}]")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "reviews.jsonl: line 21 is not valid JSON" in errors[0]
    _assert_nothing_registered(tmp_path)

"""Prepare stops before it can exhaust memory or disk, says so in one line, and leaves nothing behind
(issue 13, items 5-6)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.data.prepare import prepare
from pipeline.errors import DataValidationError, UserInputError


def _varied_csv(tmp_path: Path, n: int = 60) -> str:
    """Texts of 1..n words: any length below the longest truncates a known share of rows."""
    path = tmp_path / "varied.csv"
    body = "".join(f"{' '.join(f'w{j}' for j in range(i + 1))},{'pos' if i % 2 else 'neg'}\n" for i in range(n))
    path.write_text("text,label\n" + body, encoding="utf-8")
    return str(path)


def _leftovers(out: Path) -> list[Path]:
    data = out / "data"
    return sorted(data.iterdir()) if data.exists() else []


# -- item 5: the memory guard, max_length=auto ---------------------------------------------------------


def test_memory_guard_stops_before_encoding_naming_max_length(tmp_path, job):
    cfg = job(
        source="files", paths=(_varied_csv(tmp_path),), memory_budget_mb=0.05, tokenizer={"max_length": 1000}
    )  # 60 rows x 1000 x 4 bytes = 0.23 MiB > 0.05
    with pytest.raises(DataValidationError) as e:
        prepare(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "tokenizer.max_length=1000" in msg and "data.memory_budget_mb" in msg
    assert "60 rows" in msg
    assert _leftovers(tmp_path / "out") == []  # stopped before any shard was written
    assert (
        prepare(
            job(source="files", paths=(_varied_csv(tmp_path),), memory_budget_mb=0.05, tokenizer={"max_length": 100})
        ).manifest.max_length
        == 100
    )  # fits: runs


def test_default_budget_comes_from_available_memory():
    import psutil

    from pipeline.data.prepare import check_memory
    from schemas.config import DataConfig

    check_memory(1000, 128, DataConfig())  # 0.5 MiB: fits anywhere
    rows = int(psutil.virtual_memory().available // (100_000 * 4)) + 1  # rows x 100k ids > available memory
    with pytest.raises(DataValidationError, match=r"tokenizer\.max_length=100000.*available memory"):
        check_memory(rows, 100_000, DataConfig())


def test_auto_length_warns_when_many_training_rows_are_truncated(tmp_path, job, caplog):
    cfg = job(
        source="files", paths=(_varied_csv(tmp_path),), tokenizer={"max_length": "auto", "max_length_percentile": 50}
    )
    with caplog.at_level(logging.WARNING):
        m = prepare(cfg).manifest
    assert m.length_stats.truncated_fraction > 0.1
    assert any("truncat" in r.getMessage() and "tokenizer.max_length" in r.getMessage() for r in caplog.records)
    assert m.warnings and "truncat" in m.warnings[0]
    assert m.max_length_chosen_by.startswith("auto")
    quiet = prepare(
        job(
            output_root=str(tmp_path / "q"),
            source="files",
            paths=(_varied_csv(tmp_path),),
            tokenizer={"max_length": "auto", "max_length_percentile": 100},
        )
    ).manifest
    assert quiet.length_stats.truncated_fraction == 0 and quiet.warnings == []


def test_chosen_length_is_an_mlflow_param(tmp_path, job, sqlite_tracking_uri):
    import mlflow

    from pipeline.train.workflow import log_inputs

    cfg = job(source="files", paths=(_varied_csv(tmp_path),), tokenizer={"max_length": "auto"})
    prepared = prepare(cfg)
    mlflow.set_tracking_uri(sqlite_tracking_uri)
    with mlflow.start_run() as run:
        log_inputs(cfg, prepared)
    params = mlflow.get_run(run.info.run_id).data.params
    assert params["tokenizer.max_length"] == "auto"
    assert params["data.max_length"] == str(prepared.manifest.max_length)
    assert params["data.max_length_chosen_by"].startswith("auto: p95")


# -- item 6: disk full, staging removed at once -------------------------------------------------------


def test_disk_full_is_one_line_and_leaves_no_staging_folder(tmp_path, job, tiny_disk):
    cfg = job(
        output_root=str(tiny_disk),
        source="files",
        paths=(_varied_csv(tmp_path, 400),),
        tokenizer={"max_length": 256},
        partitions=3,
    )  # 400 x 256 x 4 bytes: ~400 KiB of ids
    with pytest.raises(UserInputError) as e:
        prepare(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "no space left" in msg.lower() and str(tiny_disk) in msg and "output_root" in msg
    assert _leftovers(tiny_disk) == []


def test_failed_prepare_removes_its_staging_folder_at_once(tmp_path, job):
    # every text but a few becomes zero tokens: found by the encode step, after shards are written
    path = tmp_path / "zero.csv"
    zero_width = "\u200b"
    path.write_text(
        "text,label\n"
        + "".join(f"{zero_width * (i + 1)},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
        + "good one,pos\nbad one,neg\n",
        encoding="utf-8",
    )
    with pytest.raises(DataValidationError, match="zero_tokens"):
        prepare(job(source="files", paths=(str(path),), partitions=3))
    assert _leftovers(tmp_path / "out") == []

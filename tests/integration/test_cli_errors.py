"""Audit: every job, driven as a user would (`python -m jobs.X`) with bad input, exits 2 with one
line on stderr and no traceback, before any Ray cluster or training starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _job(tmp_path: Path, job: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{job}", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


CASES = {
    "unknown encoding": ("train", ["data.source=files", "data.paths=[{csv}]", "data.encoding=no-such-codec"]),
    "negative data seed": ("prepare", ["data.seed=-1"]),
    "data seed above 2**32-1": ("run", [f"data.seed={2**32}"]),
    "quote in run name": ("train", ["tracking.run_name=it's"]),
    "unknown key": ("params", ["model.nope=1"]),
    "unknown flag": ("promote", ["--no-such-flag"]),
    "promote without a model": ("promote", []),
    "submit with a missing config": ("submit", ["--no-wait", "--config", "absent.yaml"]),
    "predict without a model": ("predict", ["--input", "{csv}", "--output", "out.csv"]),
    "predict on a malformed file": ("predict", ["--input", "{jsonl}", "--output", "out.csv"]),
    "predict on a missing column": ("predict", ["--input", "{csv}", "--output", "out.csv", "--text-column", "x"]),
    "predict into a folder without a model": ("predict", ["--input", "{csv}", "--output", "scored/"]),
    "predict with --workers into one file": ("predict", ["--input", "{csv}", "--output", "o.csv", "--workers", "2"]),
    "predict a folder into one file": ("predict", ["--input", ".", "--output", "out.csv"]),
    "predict into a folder from nothing": ("predict", ["--input", "absent/*.csv", "--output", "scored/"]),
    "prepare on a JSON text that is a number": ("prepare", ["data.source=files", "data.paths=[{mixed}]"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    job, args = CASES[case]
    (tmp_path / "in.csv").write_text("text,label\ngood,pos\n", encoding="utf-8")
    (tmp_path / "in.jsonl").write_text('{"text": "good"}\n{"text": \n', encoding="utf-8")
    (tmp_path / "mixed.jsonl").write_text('{"text": 1, "label": "a"}\n{"text": "b", "label": "b"}\n', encoding="utf-8")
    paths = {"csv": tmp_path / "in.csv", "jsonl": tmp_path / "in.jsonl", "mixed": tmp_path / "mixed.jsonl"}
    args = [a.format(**paths) for a in args]
    out = _job(tmp_path, job, f"output_root={tmp_path / 'out'}", *args)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert len(errors) == 1 and errors[0] == out.stderr.rstrip().splitlines()[-1], out.stderr
    assert out.stderr.strip() == errors[0], out.stderr  # nothing else: no library log lines around it
    assert not (tmp_path / "out" / "ray_results").exists()  # stopped before training

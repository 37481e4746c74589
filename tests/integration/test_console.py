"""What an operator sees: `python -m jobs.run` in a fresh process prints a few meaningful lines,
one per epoch (not one per rank), and `--help` answers fast with the config file's values."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.integration.corpus import write_corpus

EPOCHS = 3


def _job(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **env}
    environ.pop("MLFLOW_TRACKING_URI", None)
    environ.pop("RAY_ADDRESS", None)  # the job starts its own local cluster, as `make run` does
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_run_prints_one_line_per_epoch_and_at_most_30_lines(tmp_path):
    corpus = write_corpus(tmp_path / "reviews.csv", rows=600)
    out = _job(
        [
            "-m",
            "jobs.run",
            f"output_root={tmp_path}",
            "data.source=files",
            f"data.paths=[{corpus}]",
            "data.text_column=review",
            "data.label_column=sentiment",
            "data.labels=[neg, pos]",
            "tokenizer.max_length=32",
            f"train.epochs={EPOCHS}",
            "train.lr=0.01",
            "promotion.min_metric=0.5",
            "tracking.system_metrics=false",
            "ray.num_cpus=2",
        ],
        timeout=900,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) <= 30, "\n".join(lines)
    for k in range(1, EPOCHS + 1):
        hits = [line for line in lines if line.startswith(f"epoch {k}/{EPOCHS} ")]
        assert len(hits) == 1, (k, lines)  # once, from the driver: not once per rank
        assert re.search(r"train_loss \d\.\d{3}  val_loss \d\.\d{3}  val_acc \d\.\d{3}  [\d.]+k? samples/s", hits[0])
    assert "eta" in next(line for line in lines if line.startswith(f"epoch 1/{EPOCHS} "))
    assert sum(line.startswith("prepared data:") for line in lines) == 1
    assert sum(line.startswith("registered ") for line in lines) == 1
    assert sum(line.startswith("gate: v1 promoted") for line in lines) == 1
    assert "== summary ==" in lines
    assert any(line.startswith("run page") and "workflowType=machine_learning" in line for line in lines)
    noise = [line for line in lines if re.search(r"Warning|INFO|pid=|\r|Reporting training result", line)]
    assert not noise, noise

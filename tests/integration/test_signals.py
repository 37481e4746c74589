"""Item 12: SIGTERM (Ray job stop, Kubernetes) and Ctrl-C stop a real training job: its MLflow run
ends KILLED, the process exits 143 or 130 with one line on stderr. Item 11 on the same job (each job
here costs a process, a Ray cluster and an epoch): a second job with the same tracking.run_name,
started while the first trains, refuses with one line; the first keeps its run and checkpoint folder
to itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from jobs import train as train_job
from tests.conftest import REPO
from tests.integration.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _start_training(tmp_path: Path) -> subprocess.Popen:
    corpus = write_corpus(tmp_path / "reviews.csv")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    args = [
        f"output_root={tmp_path / 'out'}",
        "data.source=files",
        f"data.paths=[{corpus}]",
        "data.text_column=review",
        "data.label_column=sentiment",
        "tokenizer.max_length=32",
        "train.epochs=500",
        "train.min_steps_per_epoch=null",  # 4 steps of 128 per epoch, not 54 of 9: the first checkpoint comes sooner
        "tracking.run_name=stopped",
        "tracking.system_metrics=false",
        "ray.num_cpus=2",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.train", *args],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_for_checkpoint(tmp_path: Path, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    folder = tmp_path / "out" / "ray_results" / "stopped"
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if any(folder.glob("checkpoint_*")):
            return
        time.sleep(1)
    raise TimeoutError("training wrote no checkpoint")


def _stop(tmp_path: Path, proc: subprocess.Popen, sig: signal.Signals, code: int) -> None:
    """Send `sig` to the training driver, then check how it ended: exit `code`, one line, run KILLED."""
    os.kill(proc.pid, sig)  # the driver only, as `ray job stop` and the kubelet signal it
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == code, err[-3000:]
    last = err.rstrip().splitlines()[-1]
    assert last.startswith(f"error: stopped by {sig.name}"), err[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rnn-textcls").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]  # one run: the refused job made none


def test_ctrl_c_ends_the_run_killed(tmp_path):
    proc = _start_training(tmp_path)
    try:
        _wait_for_checkpoint(tmp_path, proc)
        _stop(tmp_path, proc, signal.SIGINT, 130)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_second_job_with_the_same_run_name_refuses_and_sigterm_ends_the_first_killed(tmp_path, capsys, monkeypatch):
    first = _start_training(tmp_path)  # tracking.run_name=stopped, 500 epochs
    try:
        _wait_for_checkpoint(tmp_path, first)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        corpus = tmp_path / "reviews.csv"  # the first job's data: a changed config would be refused first
        code = train_job.main(
            [
                f"output_root={tmp_path / 'out'}",
                "data.source=files",
                f"data.paths=[{corpus}]",
                "data.text_column=review",
                "data.label_column=sentiment",
                "tokenizer.max_length=32",
                "train.min_steps_per_epoch=null",
                "tracking.run_name=stopped",
            ]
        )
        err = capsys.readouterr().err
        assert first.poll() is None  # the first job still trains
        assert code == 2, err
        last = err.rstrip().splitlines()[-1]
        assert last.startswith("error: tracking.run_name 'stopped' is in use by a live job"), err
        _stop(tmp_path, first, signal.SIGTERM, 143)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)

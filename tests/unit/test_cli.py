"""The command line: fast `--help` with the config file's values, one console command, and a failed
job's last line (cause, MLflow run, resume command)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import mlflow
from mlflow.tracking import MlflowClient

from jobs.cli import build_parser, run_main
from pipeline.tracking import mlflow_run, tracking_store
from tests.conftest import REPO


def _job(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_help_is_fast_and_shows_the_config_files_values():
    t0 = time.perf_counter()
    out = _job(["-m", "jobs.run", "--help"], timeout=60)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert "train.epochs=8   (embedded.yaml; schema default 5)" in out.stdout  # embedded.yaml runs 8
    assert elapsed < 3.0 or os.getloadavg()[0] > 4 * (os.cpu_count() or 1), elapsed  # a loaded machine is slower
    modules = _job(
        [
            "-c",
            "import sys, jobs.run, jobs.train, jobs.promote, jobs.predict, jobs.params, jobs.prepare, jobs.submit;"
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'datasets', 'pandas') if m in sys.modules))",
        ],
        timeout=60,
    )
    assert modules.stdout.strip() == "[]", modules.stdout + modules.stderr  # imported on use, not for --help


def test_console_command_dispatches_to_the_jobs():
    out = _job(["-m", "jobs", "train", "--print-config", "train.epochs=3"], timeout=60)
    assert out.returncode == 0, out.stderr
    assert "  epochs: 3" in out.stdout.splitlines()
    bad = _job(["-m", "jobs", "fit"], timeout=60)
    assert bad.returncode == 2 and "unknown job 'fit'" in bad.stderr


def test_a_failed_job_ends_with_the_cause_the_run_and_the_resume_command(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def failing_job(cfg, args):  # fails inside the job's MLflow run, as a crashed training would
        with tracking_store(uri) as client, mlflow_run(client, cfg, "rnn-files-20260101-000000", {}):
            raise RuntimeError("worker group died\nsecond line of detail")

    argv = [f"output_root={tmp_path}", "train.epochs=2"]
    rc = run_main(build_parser("python -m jobs.train", ""), failing_job, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    run = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("rnn-textcls").experiment_id])[0]
    assert run.info.status == "FAILED"
    assert err[0] == (
        f"error: RuntimeError: worker group died; MLflow run {run.info.run_id} ended FAILED; "
        f"resume with: python -m jobs.train output_root={tmp_path} train.epochs=2 "
        "tracking.run_name=rnn-files-20260101-000000"
    )
    with tracking_store(uri):
        text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/error.txt")
    assert "second line of detail" in text and "Traceback" in text  # the whole story stays on the run


def test_the_failure_line_masks_passwords_in_the_command_and_the_cause():
    from jobs.cli import failure_line

    line = failure_line(
        "python -m jobs.run",
        ["tracking.tracking_uri=postgresql+psycopg2://mlflow:s3cret@db:5432/mlflow", "train.epochs=2"],
        RuntimeError("could not connect to postgresql://mlflow:s3cret@db:5432/mlflow"),
    )
    assert "s3cret" not in line
    assert "postgresql+psycopg2://mlflow:***@db:5432/mlflow" in line and "train.epochs=2" in line

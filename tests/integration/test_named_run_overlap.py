"""Item 11: a second job with the same tracking.run_name, started while the first trains, refuses with one
line; the first keeps its run and checkpoint folder to itself."""

from __future__ import annotations

import os
import signal

import pytest
from mlflow.tracking import MlflowClient

from jobs import train as train_job
from tests.integration.corpus import write_corpus
from tests.integration.test_signals import _start_training, _wait_for_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_second_job_with_the_same_run_name_refuses(tmp_path, capsys, monkeypatch):
    first = _start_training(tmp_path)  # tracking.run_name=stopped, 500 epochs
    try:
        _wait_for_checkpoint(tmp_path, first)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        corpus = write_corpus(tmp_path / "second.csv")
        code = train_job.main(
            [
                f"output_root={tmp_path / 'out'}",
                "data.source=files",
                f"data.paths=[{corpus}]",
                "data.text_column=review",
                "data.label_column=sentiment",
                "tokenizer.max_length=32",
                "tracking.run_name=stopped",
            ]
        )
        err = capsys.readouterr().err
        assert first.poll() is None  # the first job still trains
    finally:
        os.kill(first.pid, signal.SIGTERM)
        first.communicate(timeout=180)
    assert code == 2, err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("error: tracking.run_name 'stopped' is in use by a live job"), err
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rnn-textcls").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "KILLED"

"""Item 18: jobs started at once on a fresh sqlite store create its schema once; none crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

# Each process waits for the same instant, then opens the job's store and uses both of its halves.
_OPEN_STORE = """
import sys, time
from pipeline.tracking import tracking_store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
with tracking_store(sys.argv[1]) as client:
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)
print("ok")
"""


def test_fresh_sqlite_store_opened_by_four_jobs_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = f"{time.time() + 15:.3f}"  # after every interpreter has imported mlflow
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_STORE, uri, start],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0 and out.strip() == "ok", err[-2000:]

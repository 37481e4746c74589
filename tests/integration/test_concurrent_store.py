"""Item 18: jobs started at once on a fresh sqlite store create its schema once; none crashes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

# Each process, once it has imported MLflow, says so and waits for the other three (a barrier of files),
# then all open the job's store at once and use both of its halves.
_OPEN_STORE = """
import pathlib, sys, time
from pipeline.tracking import tracking_store
barrier = pathlib.Path(sys.argv[2])
(barrier / str(sys.argv[3])).touch()
deadline = time.monotonic() + 120
while len(list(barrier.iterdir())) < 4 and time.monotonic() < deadline:
    time.sleep(0.01)
if len(list(barrier.iterdir())) < 4:
    sys.exit("the other processes never reached the barrier")
with tracking_store(sys.argv[1]) as client:
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)
print("ok")
"""


def test_fresh_sqlite_store_opened_by_four_jobs_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    barrier = tmp_path / "ready"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_STORE, uri, str(barrier), str(i)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0 and out.strip() == "ok", err[-2000:]

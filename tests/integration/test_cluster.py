"""A fit whose driver dies mid-training (a Tune trial that ASHA stops is killed so) on pipeline.cluster's
local Ray session: pipeline.leaked_workers gives its workers' CPUs back (Ray 2.60 keeps them reserved),
or the next fits wait for them for good."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = textwrap.dedent(
    """
    import time

    import ray
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.cluster import ray_session
    from pipeline.leaked_workers import LeakedWorkerGroups
    from schemas.config import RayConfig


    def cpus():
        return ray.available_resources().get("CPU", 0.0)


    def wait(condition, seconds):
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.5)
        return condition()


    def train(_):
        time.sleep(600)


    @ray.remote(num_cpus=0)
    class Trial:  # as a Tune trial runs a fit: TorchTrainer.fit() inside an actor
        def fit(self):
            TorchTrainer(train, scaling_config=ScalingConfig(num_workers=1)).fit()


    with ray_session(RayConfig(num_cpus=2)):
        trial = Trial.remote()
        trial.fit.remote()
        print("worker started:", wait(lambda: cpus() <= 1, 90), flush=True)
        ray.kill(trial)  # ASHA's stop: the trial actor, and with it the fit's controller, die
        leaks = LeakedWorkerGroups(grace_s=3)
        leaks.drain(timeout_s=90)  # as jobs.tune does after its search (and every 5 s during it)
        print("cpus back:", wait(lambda: cpus() >= 2, 30), cpus(), len(leaks.removed), flush=True)
    """
)


def test_the_cpus_of_a_fit_whose_driver_died_come_back(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert "worker started: True" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
    assert "cpus back: True" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]

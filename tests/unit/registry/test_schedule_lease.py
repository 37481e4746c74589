"""pipeline.registry.schedule_lease against a real MLflow registry (local sqlite store): one holder per schedule,
a run name that survives a failed or crashed run, and a heartbeat that keeps a live lease from expiring."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from pipeline.registry.schedule_lease import LeaseHeld, lease_name, schedule_lease


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    # One store for the module (creating a sqlite store runs every migration); each test its own schedule.
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('lease') / 'mlflow.db'}")


def test_second_run_of_a_schedule_waits_then_exits_with_the_holder_named(client):
    with schedule_lease(client, "nightly-1", new_run_name="run-a", fingerprint="f") as lease:
        assert (lease.run_name, lease.resumed) == ("run-a", False)
        t0 = time.monotonic()
        with pytest.raises(LeaseHeld, match=r"'nightly-1' is already running .*run-a"):
            with schedule_lease(client, "nightly-1", new_run_name="run-b", fingerprint="f", wait_s=0.4, poll_s=0.1):
                pytest.fail("two holders")
        assert time.monotonic() - t0 >= 0.4
        # another schedule is independent
        with schedule_lease(client, "other-1", new_run_name="run-c", fingerprint="f", wait_s=0) as other:
            assert other.run_name == "run-c"
    # a finished run deletes its lease: the next tick is a fresh run
    with schedule_lease(client, "nightly-1", new_run_name="run-d", fingerprint="f", wait_s=0) as lease:
        assert (lease.run_name, lease.resumed) == ("run-d", False)


def test_a_failed_run_is_resumed_by_the_next_run_with_the_same_configuration(client):
    with pytest.raises(RuntimeError, match="boom"):
        with schedule_lease(client, "nightly-2", new_run_name="run-a", fingerprint="f"):
            raise RuntimeError("boom")
    assert client.get_registered_model(lease_name("nightly-2")).tags["state"] == "failed"
    # a retry with another configuration does not pick up the failed run's checkpoints
    with pytest.raises(RuntimeError):
        with schedule_lease(client, "nightly-2", new_run_name="run-x", fingerprint="g", wait_s=0) as lease:
            assert (lease.run_name, lease.resumed) == ("run-x", False)
            raise RuntimeError("fails too")
    with schedule_lease(client, "nightly-2", new_run_name="run-y", fingerprint="g", wait_s=0) as lease:
        assert (lease.run_name, lease.resumed) == ("run-x", True)


def test_a_crashed_holder_is_taken_over_after_its_ttl_and_resumed(client):
    # a holder that died without releasing: its lease simply stops being renewed
    client.create_registered_model(
        lease_name("nightly-3"),
        tags={
            "owner": "dead:1:x",
            "run_name": "run-a",
            "fingerprint": "f",
            "state": "running",
            "expires_at": f"{time.time() + 1:.0f}",
        },
    )
    with pytest.raises(LeaseHeld):
        with schedule_lease(client, "nightly-3", new_run_name="run-b", fingerprint="f", wait_s=0):
            pass
    with schedule_lease(client, "nightly-3", new_run_name="run-b", fingerprint="f", wait_s=5, poll_s=0.2) as lease:
        assert (lease.run_name, lease.resumed) == ("run-a", True)
        assert client.get_registered_model(lease.name).tags["owner"] == lease.owner


def test_heartbeat_keeps_a_live_lease(client):
    with schedule_lease(client, "nightly-4", new_run_name="run-a", fingerprint="f", ttl_s=1.5) as lease:
        time.sleep(3.5)  # more than two TTLs: without renewal the lease would have expired
        with pytest.raises(LeaseHeld):
            with schedule_lease(client, "nightly-4", new_run_name="run-b", fingerprint="f", wait_s=0):
                pass
        assert float(client.get_registered_model(lease.name).tags["expires_at"]) > time.time()

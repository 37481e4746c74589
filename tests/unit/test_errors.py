"""Errors a user can act on stop a job with one line on stderr and exit status 2, through the same
`run_main` every job uses: a missing prepared dataset and a promotion lock held too long."""

from __future__ import annotations

import signal

import pytest
from mlflow.tracking import MlflowClient

from jobs.cli import build_parser, run_main
from pipeline.data.store import load_manifest
from pipeline.registry.lock import registry_lock


@pytest.fixture
def main():
    """run_main installs a SIGTERM handler for the process: put the previous one back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield lambda job: run_main(build_parser("python -m jobs.test", "test"), job, [])
    signal.signal(signal.SIGTERM, previous)


def test_missing_prepared_data_is_a_one_line_user_error(main, tmp_path, capsys):
    code = main(lambda cfg, args: load_manifest(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert str(tmp_path) in err and "run jobs.prepare" in err


def test_a_held_promotion_lock_is_a_one_line_user_error(main, sqlite_tracking_uri, capsys):
    client = MlflowClient(sqlite_tracking_uri)
    client.search_registered_models()  # creates the store now, so its log lines are not the job's
    capsys.readouterr()

    def promote_while_locked(cfg, args):
        with registry_lock(client, "m", ttl_s=60, wait_s=0), registry_lock(client, "m", ttl_s=60, wait_s=0):
            pass

    code = main(promote_while_locked)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "m.promotion-lock" in err and "promotion.lock_ttl_s" in err

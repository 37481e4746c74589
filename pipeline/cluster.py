"""The Ray cluster a job runs on, as a context manager: join one, or start a local one and stop it after."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from pipeline import console
from schemas.config import RayConfig


@contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """ray.init replaces the driver's SIGTERM handler with sys.exit(15), which ends the job's MLflow
    run FAILED; the job's own handler (JobInterrupted: run KILLED, exit 143) is put back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextmanager
def ray_session(cfg: RayConfig) -> Iterator[None]:
    """Join the configured cluster, else RAY_ADDRESS, else start a local one in-process.

    Shuts down only what it started: a session that found Ray initialized (a test's cluster, an
    outer job) leaves it running. One cluster serves every stage of a job: a worker group costs
    seconds to start, a cluster more.
    """
    if ray.is_initialized():
        yield
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    # Quiet by default: the workers' and Ray Train controller's stdout/stderr (per-rank reports)
    # stay in the session's log files; the job prints its own epoch lines (pipeline.train.progress).
    # --verbose streams them all again. Errors still reach the driver as exceptions.
    verbose = console.verbose()
    opts = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    with _keep_signal_handlers():
        if address:
            ray.init(address=address, **opts)
        else:
            # address="local": a bare ray.init() would join the last `ray start` cluster on this machine.
            # The dashboard (on loopback) serves the State API, which Ray Train's placement-group cleaner
            # asks whether a fit's controller is still alive: without it, the CPUs of a fit whose driver
            # died (a Tune trial that ASHA stopped) stay reserved for good and the next fits never start.
            ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=True, **opts)
    try:
        yield
    finally:
        ray.shutdown()

"""The Ray cluster a job runs on, as a context manager: join one, or start a local one and stop it after."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from pipeline import console
from schemas.config import RayConfig


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
    # Quiet by default: the workers' and Ray Train controller's stdout/stderr (per-rank reports,
    # the placement-group cleaner's State-API warnings, which need the dashboard we do not start)
    # stay in the session's log files; the job prints its own epoch lines (pipeline.train.progress).
    # --verbose streams them all again. Errors still reach the driver as exceptions.
    verbose = console.verbose()
    opts = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if address:
        ray.init(address=address, **opts)
    else:
        # address="local": a bare ray.init() would join the last `ray start` cluster on this machine.
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, **opts)
    try:
        yield
    finally:
        ray.shutdown()

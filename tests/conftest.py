"""Shared fixtures: one real local Ray cluster per test session, real MLflow stores in temp dirs."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Ray Train's controller checks on its workers every 2 s (its default, meant for long jobs), so a fit
# notices its workers started, and finished, up to 2 s late, several times per fit; the suite runs
# dozens of tiny fits. Every Ray cluster and job the tests start inherits this environment (the
# controller also passes it to its workers). Measured: tests/integration/test_tune.py 142 -> 116 s.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# No Prometheus metrics from the test clusters: nothing here reads them, and Ray 2.60's metrics thread
# (OpenTelemetry's periodic collection) once crashed a freshly created Train controller with SIGSEGV in
# TemporalMetricStorage::buildMetrics (a clean-clone CI run, 2026-11-29), failing an unrelated test.
os.environ.setdefault("RAY_enable_metrics_collection", "0")


def pytest_collection_modifyitems(config, items):
    # Modules holding slow tests first. `make test` runs `pytest -n 2 --dist loadfile --no-loadscope-reorder`:
    # each module goes whole to one of two workers, in collection order, so the long ones start first and
    # the many short ones fill the gaps at the end (longest-first scheduling; with the default order a long
    # module collected last ran alone for minutes). The sort is stable: the order inside each group is kept.
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_modules)
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by every test that needs one (starting one costs seconds)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        # 3 CPUs: two 1-CPU training workers and one for Ray Data's reads when they stream. With the
        # dashboard, as pipeline.cluster starts it (Ray Train's cleanup of a dead fit needs its State API).
        ray.init(address="local", num_cpus=3, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_uri():
    """Every job sets MLflow's process-global tracking URI (and MLFLOW_TRACKING_URI) at its boundary;
    put back what was there so no test sees another test's store. Public API only."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(before)  # None unsets both the global and the variable


@pytest.fixture
def sqlite_tracking_uri(tmp_path) -> str:
    """A fresh MLflow sqlite store (the registry needs a database store)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _load_free_ports():
    import importlib.util

    spec = importlib.util.spec_from_file_location("free_ports", REPO / "infra" / "free_ports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.free_ports


_free_ports = _load_free_ports()
_handed_out: set[int] = set()


def free_port() -> int:
    """A free port for a server a test starts: outside the kernel's ephemeral range, where the Ray
    cluster of the other test worker cannot take it before the server binds it (infra/free_ports.py);
    never one this process handed out before."""
    (port,) = _free_ports(1, exclude=_handed_out)
    _handed_out.add(port)
    return port


def wait_http(url: str, timeout_s: float = 120.0, proc=None) -> None:
    """Poll `url` until it answers 200; fail early if the server process died."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def stop_process(proc, log=None, timeout_s: float = 20.0) -> None:
    """End a server a test started with start_new_session=True: its whole process group (a server's
    workers would otherwise outlive it), SIGTERM first, SIGKILL if the group is still there."""
    import signal
    import subprocess

    def signal_group(sig) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass  # the group is gone already

    signal_group(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    signal_group(signal.SIGKILL)  # children that ignored SIGTERM, or a leader that did
    proc.wait()
    if log is not None:
        log.close()


# `mlflow server` also starts a job runner (seven more Python processes that import MLflow, seconds of
# CPU each) for server-side jobs such as trace rollups; no job or test here uses them.
QUIET_MLFLOW_SERVER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextmanager
def mlflow_server_process(root: Path, artifacts_destination: str):
    """`mlflow server` on loopback over a sqlite store in `root`; yields its http:// URI, then stops the
    whole process group. The environment is inherited (S3 endpoint and credentials included), without the
    server's job runner."""
    import subprocess
    import sys

    port = free_port()
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            artifacts_destination,
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **QUIET_MLFLOW_SERVER},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc=proc)
        yield uri
    finally:
        stop_process(proc, log)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback with a sqlite backend; yields its http:// URI."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server_process(root, (root / "artifacts").as_uri()) as uri:
        yield uri


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A local S3-compatible server (moto in server mode) on loopback; yields its endpoint URL.

    Started in its own process group and stopped as a group, so nothing it spawns outlives the session.
    """
    import signal
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("s3-server")
    port = free_port()
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", proc=proc)
        yield endpoint
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, request) -> str:
    """A fresh bucket on the local S3 server, with the standard AWS variables pointing at it (restored
    after the test); yields `s3://<bucket>`."""
    import re

    import boto3

    env = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": s3_server,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    """Sorted keys under `prefix` in `bucket` (`s3://name`) on the local S3 server (the s3_bucket fixture's)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket.removeprefix("s3://"), Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

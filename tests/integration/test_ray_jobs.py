"""`jobs.run` as a Ray job on a real two-node Ray cluster on loopback, with token auth on; and the whole
job on those two nodes with nothing shared but object storage.

One cluster per module, shared by every test here (starting two nodes costs tens of seconds): a head
(`ray start --head`, dashboard/Jobs API on 127.0.0.1) and a second node joined to it (`ray start
--address=...`), 2 CPUs each (a training worker, and a CPU for Ray Data's reads when a job streams).
Each node is owned by a `ray start --block` process that this module starts and stops by pid (never
`ray stop`, which would stop every Ray cluster on the machine). Every client is a subprocess with the
cluster's token in its environment, so the token of this test never mixes with the test session's Ray.
Both nodes get the local S3 server's endpoint and credentials in their environment, as a Kubernetes
Secret would give them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import free_port
from tests.integration.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TINY = [
    "data.source=files",
    "data.text_column=review",
    "data.label_column=sentiment",
    "data.labels=[neg, pos]",
    "tokenizer.max_length=32",
    "train.epochs=2",
    "promotion.min_metric=0.0",
]


def _dashboard_up(url: str, token: str) -> bool:
    req = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the `ray start --block` owner (it stops its node), then kill what is left of its group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


BUCKET = "multinode"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    import boto3
    from ray._private.utils import get_dashboard_dependency_error

    missing = get_dashboard_dependency_error()
    if missing:
        pytest.fail(
            f"the Ray Jobs API needs ray[default] (dashboard dependencies): {missing}; "
            "install the project with ray[default,train]"
        )
    root = tmp_path_factory.mktemp("rayjobs")
    token = secrets.token_hex(32)
    gcs, dash = free_port(), free_port()
    # One temp dir per node, as on real machines: two nodes sharing one would share the unpacked
    # working_dir, and the second node's runtime-env agent deletes it under the driver's feet.
    # Short paths: Ray's unix socket paths must stay under ~107 characters.
    temp_dirs = [Path(f"/tmp/rj-{secrets.token_hex(4)}-{n}") for n in ("a", "b")]
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_DEDUP_LOGS": "0",
        # On SIGTERM a `ray start --block` node first drains for up to 30 s (so that Ray Serve can move
        # its replicas); nothing here serves, and two nodes made teardown take over a minute.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": s3_server,
    }
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    common = [
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        f"--dashboard-agent-listen-port={free_port()}",
    ]
    head_log, node_log = open(root / "head.log", "w"), open(root / "node_b.log", "w")
    head = subprocess.Popen(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            '--resources={"node_a": 1}',
            f"--temp-dir={temp_dirs[0]}",
            *common,
        ],
        env=env,
        stdout=head_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs = [head]
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 180
        while not _dashboard_up(url, token):
            assert head.poll() is None, f"ray head exited: {(root / 'head.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "ray head dashboard did not come up in 180 s"
            time.sleep(1)
        node_b = subprocess.Popen(
            [
                str(VENV_BIN / "ray"),
                "start",
                f"--address=127.0.0.1:{gcs}",
                '--resources={"node_b": 1}',
                f"--temp-dir={temp_dirs[1]}",
                *common,
            ],
            env=env,
            stdout=node_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(node_b)
        deadline = time.monotonic() + 180
        while len(_nodes(url, env)) < 2:
            assert node_b.poll() is None, f"second node exited: {(root / 'node_b.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "second Ray node did not join in 180 s"
            time.sleep(2)
        corpus = write_corpus(root / "reviews.csv", rows=600)
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_server,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.upload_file(str(corpus), BUCKET, "corpus/reviews.csv")
        yield {"url": url, "env": env, "token": token, "root": root, "corpus": corpus, "s3": s3}
    finally:
        for p in reversed(procs):
            _stop(p)
        head_log.close()
        node_log.close()
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _ray_cli(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def _nodes(url: str, env: dict) -> list[dict]:
    out = _ray_cli(["list", "nodes", "--address", url, "--format", "json", "--filter", "state=ALIVE"], env)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip().startswith("[") else []


def _submission_id(res: subprocess.CompletedProcess) -> str:
    """The submission id `jobs.submit` printed."""
    return res.stdout.split("[jobs.submit] submitted ", 1)[1].split(";", 1)[0]


def _train_workers(cluster: dict, submission_id: str) -> list[dict]:
    """The Ray Train worker actors of a submitted job (with their node ids)."""
    jobs = json.loads(
        _ray_cli(["list", "jobs", "--address", cluster["url"], "--format", "json", "--detail"], cluster["env"]).stdout
    )
    job_id = next(j["job_id"] for j in jobs if j.get("submission_id") == submission_id)
    actors = json.loads(
        _ray_cli(
            [
                "list",
                "actors",
                "--address",
                cluster["url"],
                "--format",
                "json",
                "--detail",
                "--filter",
                "class_name=RayTrainWorker",
                "--limit",
                "1000",
            ],
            cluster["env"],
        ).stdout
    )
    return [a for a in actors if a.get("job_id") == job_id]


def _tracking(out: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{out / 'mlflow.db'}")


def test_ray_job_submit_cli_spreads_training_over_both_nodes(cluster):
    """The documented `ray job submit` command, runtime_env with working_dir and excludes: 2 workers of
    1 CPU placed SPREAD land one per node (each node could hold both), reading the prepared data and
    writing checkpoints under the one output_root both nodes reach (a shared folder; the object-storage
    test below covers nodes that share none, through `jobs.submit`)."""
    out = cluster["root"] / "cli"
    runtime_env = {"working_dir": str(REPO), "excludes": [".git", ".venv", "outputs", "tests", "mlruns"]}
    res = _ray_cli(
        [
            "job",
            "submit",
            "--address",
            cluster["url"],
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--submission-id",
            "rnn-cli-1",
            "--",
            "python",
            "-m",
            "jobs.run",
            "--config",
            "jobs/configs/embedded.yaml",
            f"output_root={out}",
            *TINY,
            f"data.paths=[{cluster['corpus']}]",
            "scaling.num_workers=2",
            "scaling.cpus_per_worker=1",
            "scaling.placement_strategy=SPREAD",
            "tracking.experiment_name=cli",
        ],
        cluster["env"],
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "succeeded" in (res.stdout + res.stderr).lower()
    client = _tracking(out)
    runs = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_name == "rnn-cli-1"  # named after its submission id: resubmitting it resumes the run
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "val/accuracy")) == [0, 1]
    assert client.get_model_version_by_alias("rnn-textcls", "champion").run_id == runs[0].info.run_id
    assert list((out / "data").glob("*/manifest.json")), "prepared data is not under output_root"
    assert list((out / "ray_results").rglob("checkpoint_*")), "no checkpoint under output_root/ray_results"
    workers = _train_workers(cluster, "rnn-cli-1")
    assert len(workers) == 2 and len({a["node_id"] for a in workers}) == 2, workers


def test_jobs_submit_reports_a_failed_job(cluster):
    """A job that fails on the cluster (a data path that only exists nowhere) gives exit status 1."""
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.submit",
            "--address",
            cluster["url"],
            f"output_root={cluster['root'] / 'bad'}",
            *TINY,
            "data.paths=[/nonexistent/reviews.csv]",
            "scaling.num_workers=1",
        ],
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert "FAILED" in res.stdout and "driver exit code 2" in res.stdout


def test_jobs_api_refuses_a_wrong_token(cluster):
    env = {**cluster["env"], "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.submit",
            "--address",
            cluster["url"],
            *TINY,
            f"output_root={cluster['root'] / 'denied'}",
            f"data.paths=[{cluster['corpus']}]",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert res.returncode != 0
    assert "SUCCEEDED" not in res.stdout
    assert cluster["token"] not in res.stdout + res.stderr
    listed = _ray_cli(
        ["job", "list", "--address", cluster["url"]],
        {**cluster["env"], "RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": ""},
    )
    assert listed.returncode != 0, "the Jobs API answered a client without a token"


def test_prepare_stream_train_register_and_promote_over_two_nodes_on_object_storage(cluster, mlflow_server):
    """The whole job over two nodes that share no folder: corpus, prepared data and checkpoints on the
    local S3 server (moto), MLflow on a tracking server, workers streaming their shards through Ray Data
    (one training worker and one read CPU per node)."""
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.submit",
            "--address",
            cluster["url"],
            f"output_root=s3://{BUCKET}/job",
            *TINY,
            f"data.paths=[s3://{BUCKET}/corpus/reviews.csv]",
            f"tracking.tracking_uri={mlflow_server}",
            "tracking.experiment_name=multinode",
            "train.data_loading=stream",
            "scaling.num_workers=2",
            "scaling.cpus_per_worker=1",
            "scaling.placement_strategy=SPREAD",
        ],
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=840,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "SUCCEEDED" in res.stdout

    client = MlflowClient(mlflow_server)
    run = client.search_runs([client.get_experiment_by_name("multinode").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")) == [0, 1]
    assert client.get_model_version_by_alias("rnn-textcls", "champion").run_id == run.info.run_id

    keys = [
        o["Key"]
        for page in cluster["s3"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    ]
    assert any(k.startswith("job/data/") and k.endswith("/manifest.json") for k in keys), keys
    assert any(k.startswith("job/ray_results/") and "checkpoint_" in k for k in keys), keys

    workers = _train_workers(cluster, _submission_id(res))
    assert len(workers) == 2 and len({a["node_id"] for a in workers}) == 2, workers

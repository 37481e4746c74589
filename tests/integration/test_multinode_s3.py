"""The whole job on two Ray nodes that share no folder: corpus, prepared data and checkpoints on a
local S3 server (moto), MLflow on a tracking server, workers streaming their shards through Ray Data.

Two `ray start --block` nodes on loopback (2 CPUs each: one training worker and one CPU for Ray
Data's reads per node), each with its own temp dir, both given the S3 endpoint and credentials in
their environment, as a Kubernetes Secret would. Started and stopped by pid, as in test_ray_jobs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import free_port
from tests.integration.corpus import write_corpus
from tests.integration.test_ray_jobs import REPO, TINY, VENV_BIN, _dashboard_up, _nodes, _ray_cli, _stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "multinode"


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory, s3_server):
    import boto3

    root = tmp_path_factory.mktemp("multinode")
    token = secrets.token_hex(32)
    gcs, dash = free_port(), free_port()
    temp_dirs = [Path(f"/tmp/mn-{secrets.token_hex(4)}-{n}") for n in ("a", "b")]
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_DEDUP_LOGS": "0",
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": s3_server,
    }
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(write_corpus(root / "reviews.csv", rows=600)), BUCKET, "corpus/reviews.csv")
    common = [
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        f"--dashboard-agent-listen-port={free_port()}",
    ]
    logs = [open(root / "head.log", "w"), open(root / "node_b.log", "w")]
    procs = [
        subprocess.Popen(
            [
                str(VENV_BIN / "ray"),
                "start",
                "--head",
                f"--port={gcs}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                f"--temp-dir={temp_dirs[0]}",
                *common,
            ],
            env=env,
            stdout=logs[0],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 180
        while not _dashboard_up(url, token):
            assert procs[0].poll() is None and time.monotonic() < deadline, (root / "head.log").read_text()[-3000:]
            time.sleep(1)
        procs.append(
            subprocess.Popen(
                [str(VENV_BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}", f"--temp-dir={temp_dirs[1]}", *common],
                env=env,
                stdout=logs[1],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + 180
        while len(_nodes(url, env)) < 2:
            assert procs[1].poll() is None and time.monotonic() < deadline, (root / "node_b.log").read_text()[-3000:]
            time.sleep(2)
        yield {"url": url, "env": env, "s3": s3}
    finally:
        for p in reversed(procs):
            _stop(p)
        for f in logs:
            f.close()
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def test_prepare_stream_train_register_and_promote_over_two_nodes_on_object_storage(s3_cluster, mlflow_server):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.submit",
            "--address",
            s3_cluster["url"],
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
        env=s3_cluster["env"],
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
        for page in s3_cluster["s3"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    ]
    assert any(k.startswith("job/data/") and k.endswith("/manifest.json") for k in keys), keys
    assert any(k.startswith("job/ray_results/") and "checkpoint_" in k for k in keys), keys

    submission_id = res.stdout.split("[jobs.submit] submitted ", 1)[1].split(";", 1)[0]
    jobs = json.loads(
        _ray_cli(
            ["list", "jobs", "--address", s3_cluster["url"], "--format", "json", "--detail"], s3_cluster["env"]
        ).stdout
    )
    job_id = next(j["job_id"] for j in jobs if j.get("submission_id") == submission_id)
    actors = json.loads(
        _ray_cli(
            [
                "list",
                "actors",
                "--address",
                s3_cluster["url"],
                "--format",
                "json",
                "--detail",
                "--filter",
                "class_name=RayTrainWorker",
                "--limit",
                "1000",
            ],
            s3_cluster["env"],
        ).stdout
    )
    workers = [a for a in actors if a.get("job_id") == job_id]
    assert len(workers) == 2 and len({a["node_id"] for a in workers}) == 2, workers

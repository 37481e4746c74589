"""The local development stack (`infra/local_stack.sh`): real PostgreSQL, an MLflow server on it with basic
auth, a Ray head on loopback with token auth; `jobs.run` submitted to it as the `trainer` user, basic auth
enforced (401 without or with wrong credentials, 403 on what the admin created until
infra/mlflow_bootstrap.py grants it), and the job once more run straight against PostgreSQL with a password
in the tracking URI, to check that the password shows up nowhere.

One stack per module, started by the script and stopped by it in a `finally`. Needs Debian's
`postgresql` package (`.ci/run` installs it); skipped with the reason when its binaries are absent.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.conftest import QUIET_MLFLOW_SERVER
from tests.integration.corpus import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "local_stack.sh"
TINY = [
    "data.source=files",
    "data.text_column=review",
    "data.label_column=sentiment",
    "data.labels=[neg, pos]",
    "tokenizer.max_length=32",
    "train.epochs=2",
    "promotion.min_metric=0.0",
    "scaling.num_workers=1",
]
HAS_PG = bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _script(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export ") :].partition("=")
            out[k] = v
    return out


@contextlib.contextmanager
def mlflow_user(stack: dict, user: str):
    """MLflow client calls in this block authenticate as `user` (admin or trainer) through the environment
    variables MLflow's REST client reads."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = stack["mlflow_passwords"][user]
    try:
        yield MlflowClient(stack["info"]["MLFLOW_TRACKING_URI"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def stack():
    if not HAS_PG:
        pytest.skip("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin); .ci/run installs Debian's postgresql")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb cannot run as the postgres user")
    # Not pytest's tmp_path: it is private to root (0700), and PostgreSQL runs as the postgres user.
    stack_dir = Path(tempfile.mkdtemp(prefix="stack-", dir="/tmp"))
    stack_dir.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN")}
    env.update(STACK_DIR=str(stack_dir), PYTHON=sys.executable, RAY_NUM_CPUS="2", STACK_EXPERIMENT="stack")
    env.update(QUIET_MLFLOW_SERVER)  # the script's `mlflow server` inherits it
    try:
        started = _script(env, "start")
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        info = _read_env(stack_dir / "stack.env")
        corpus = write_corpus(stack_dir / "reviews.csv", rows=600)
        passwords = {u: (stack_dir / f"mlflow_{u}_password").read_text() for u in ("admin", "trainer")}
        yield {
            "env": env,
            "info": info,
            "dir": stack_dir,
            "corpus": corpus,
            "password": (stack_dir / "pgpass.raw").read_text().strip(),
            "mlflow_passwords": passwords,
        }
    finally:
        stopped = _script(env, "stop", timeout=180)
        info = _read_env(stack_dir / "stack.env") if (stack_dir / "stack.env").exists() else {}
        status = _script(env, "status", timeout=60)
        shutil.rmtree(stack_dir, ignore_errors=True)
        if info.get("RAY_TEMP_DIR"):
            shutil.rmtree(info["RAY_TEMP_DIR"], ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "running" not in status.stdout, status.stdout


def test_job_runs_against_postgres_backed_mlflow(stack):
    res = _script(stack["env"], "submit", *TINY, f"data.paths=[{stack['corpus']}]", "tracking.experiment_name=stack")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "SUCCEEDED" in res.stdout
    with mlflow_user(stack, "trainer") as client:
        runs = client.search_runs([client.get_experiment_by_name("stack").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert client.get_model_version_by_alias("rnn-textcls", "champion").run_id == runs[0].info.run_id
    # the registry really lives in PostgreSQL
    import psycopg2

    info = stack["info"]
    with (
        psycopg2.connect(
            host="127.0.0.1", port=int(info["PG_PORT"]), user="mlflow", dbname="mlflow", password=stack["password"]
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT count(*) FROM model_versions WHERE name = 'rnn-textcls'")
        assert cur.fetchone()[0] >= 1
    # no password reached the MLflow server's command line, log or the job's output
    for secret in (stack["password"], *stack["mlflow_passwords"].values()):
        assert secret not in res.stdout + res.stderr
        assert secret not in (stack["dir"] / "logs" / "mlflow.log").read_text()


def test_no_secret_in_params_tags_or_output(stack):
    """A tracking URI with a password (straight to PostgreSQL) and MLflow/Ray secrets in the environment:
    none of them may appear in MLflow params or tags, in what the job prints, or in Ray's logs."""
    info, pw = stack["info"], stack["password"]
    uri = f"postgresql+psycopg2://mlflow:{pw}@127.0.0.1:{info['PG_PORT']}/mlflow"
    token = (stack["dir"] / "ray_auth_token").read_text().strip()
    env = {
        **stack["env"],
        "RAY_ADDRESS": info["RAY_GCS_ADDRESS"],
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "MLFLOW_TRACKING_PASSWORD": pw,
        "MLFLOW_TRACKING_TOKEN": pw,
    }
    env.pop("PGPASSFILE", None)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.run",
            f"output_root={stack['dir'] / 'direct'}",
            *TINY,
            f"data.paths=[{stack['corpus']}]",
            f"tracking.tracking_uri={uri}",
            "tracking.experiment_name=secrets",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    printed = res.stdout + res.stderr
    assert "== summary ==" in printed
    for secret in (pw, token):
        assert secret not in printed, [ln for ln in printed.splitlines() if secret in ln][:3]
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("secrets").experiment_id])[0]
    assert run.data.params["tracking.tracking_uri"].startswith("postgresql+psycopg2://mlflow:***@")
    assert run.data.params["tokenizer.max_length"] == "32"  # masking hides secrets, not tokenizer settings
    blob = json.dumps(run.to_dictionary())
    versions = [str(dict(mv)) for mv in client.search_model_versions("name='rnn-textcls'")]
    for secret in (pw, token):
        assert secret not in blob
        assert not any(secret in v for v in versions)
    ray_logs = Path(info["RAY_TEMP_DIR"])
    leaked = [
        str(p)
        for p in ray_logs.rglob("*")
        if p.is_file() and p.suffix in (".log", ".out", ".err", ".txt") and pw in p.read_text(errors="replace")
    ]
    assert not leaked, leaked


def test_basic_auth_is_enforced(stack):
    uri = stack["info"]["MLFLOW_TRACKING_URI"]
    search = f"{uri}/api/2.0/mlflow/experiments/search"
    assert requests.get(search, params={"max_results": 1}, timeout=30).status_code == 401
    wrong = requests.get(search, params={"max_results": 1}, auth=("trainer", "not-the-password"), timeout=30)
    assert wrong.status_code == 401
    good = requests.get(
        search, params={"max_results": 1}, auth=("trainer", stack["mlflow_passwords"]["trainer"]), timeout=30
    )
    assert good.status_code == 200, good.text


def test_trainer_gets_manage_on_what_the_admin_created_first(stack):
    """The "admin first" trap: the admin creates the experiment and model, the trainer then gets 403 on runs
    and model versions, until `local_stack.sh grant` (infra/mlflow_bootstrap.py) grants it MANAGE."""
    with mlflow_user(stack, "admin") as admin:
        experiment_id = admin.create_experiment("admin-first")
        admin.create_registered_model("admin-first-model")
    with mlflow_user(stack, "trainer") as trainer:
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|403"):
            trainer.create_run(experiment_id)
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|403"):
            trainer.set_registered_model_tag("admin-first-model", "k", "v")
    res = _script(
        stack["env"], "grant", "--experiment", "admin-first", "--registered-model", "admin-first-model", timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    again = _script(
        stack["env"], "grant", "--experiment", "admin-first", "--registered-model", "admin-first-model", timeout=120
    )
    assert again.returncode == 0, again.stderr[-3000:]  # safe to repeat
    with mlflow_user(stack, "trainer") as trainer:
        run = trainer.create_run(experiment_id)
        trainer.set_terminated(run.info.run_id)
        version = trainer.create_model_version(
            "admin-first-model", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        trainer.set_registered_model_alias("admin-first-model", "champion", version.version)
        assert trainer.get_model_version_by_alias("admin-first-model", "champion").version == version.version


def test_script_refuses_to_start_twice(stack):
    res = _script(stack["env"], "start", timeout=60)
    assert res.returncode != 0 and "already running" in res.stderr

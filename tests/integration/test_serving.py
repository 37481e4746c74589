"""The champion answers raw text over HTTP (`mlflow models serve`) exactly as `jobs.predict` scores it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from jobs import predict as predict_job
from jobs.config_loader import load_config
from pipeline.tracking import tracking_store
from tests.conftest import free_port, stop_process, wait_http
from tests.model_factory import learned_state, prepare_generated, register

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REVIEWS = ["这本书的内容很好看，推荐", "我们都很失望，退货了"]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    cfg, prep = prepare_generated(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = register(uri, "served", cfg, prep, learned_state(cfg, prep))
    MlflowClient(uri).set_registered_model_alias("served", "champion", version)
    return root, uri


def test_predict_job_writes_scores_atomically(champion, tmp_path):
    root, uri = champion
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": [1, 2], "review": REVIEWS}).to_csv(src, index=False)
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    out = predict_job.run(cfg, str(src), str(tmp_path / "out.parquet"), None, "review")
    assert list(out["label"]) == ["pos", "neg"]
    stored = pd.read_parquet(tmp_path / "out.parquet")
    assert list(stored.columns) == ["id", "review", "label", "probability", "p_neg", "p_pos"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_predict_job_names_a_missing_text_column(champion, tmp_path, capsys):
    root, uri = champion
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"body": "x"}) + "\n", encoding="utf-8")
    code = predict_job.main(
        [
            "--input",
            str(src),
            "--output",
            str(tmp_path / "o.csv"),
            f"tracking.tracking_uri={uri}",
            "tracking.registered_model_name=served",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "text column 'text' not found" in err and "--text-column" in err
    assert not (tmp_path / "o.csv").exists()


def test_models_serve_answers_raw_text_like_predict(champion, tmp_path):
    root, uri = champion
    port = free_port()
    # The scoring server execs `uvicorn` from PATH: put this interpreter's bin folder first.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/served@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout_s=180, proc=proc)
        body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in REVIEWS]}}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            served = pd.DataFrame(json.load(r)["predictions"])
    finally:
        stop_process(proc, log)
    src = tmp_path / "in.parquet"
    pd.DataFrame({"text": REVIEWS}).to_parquet(src)
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    local = predict_job.run(cfg, str(src), str(tmp_path / "out.csv"), None, "text")
    assert list(served["label"]) == list(local["label"]) == ["pos", "neg"]
    assert served["probability"].round(5).tolist() == local["probability"].round(5).tolist()


# Run in a fresh interpreter with no checkout on its path (no PYTHONPATH, the editable install's
# finder removed): the model must load and score from the code it ships alone.
_BARE_LOAD = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/served@champion")
out = model.predict(pd.DataFrame({"text": json.loads(sys.argv[1])}))
import pipeline
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "schemas", "ray", "datasets", "sklearn"))
print(json.dumps({"labels": list(out["label"]), "pipeline": pipeline.__file__, "modules": mods}))
"""


def test_the_served_model_loads_from_only_what_it_ships(champion, tmp_path):
    root, uri = champion
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run(
        [sys.executable, "-c", _BARE_LOAD, json.dumps(REVIEWS)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["labels"] == ["pos", "neg"]
    assert "/artifacts/code/pipeline/" in got["pipeline"]  # the model's own copy, not the checkout
    assert not [m for m in got["modules"] if m.split(".")[0] in ("ray", "datasets", "sklearn")]
    assert "pipeline.train" not in got["modules"] and "pipeline.data.prepare" not in got["modules"]
    with tracking_store(uri):
        reqs = Path(mlflow.pyfunc.get_model_dependencies("models:/served@champion")).read_text().split()
    assert {r.split("==")[0] for r in reqs} == {
        "mlflow",
        "torch",
        "tokenizers",
        "numpy",
        "pandas",
        "pyarrow",
        "pydantic",
    }

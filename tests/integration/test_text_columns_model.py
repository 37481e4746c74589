"""A model trained on data.text_column=[title, content] scores such rows as it was trained: the served
model, jobs.predict's file path and its Ray path all join the columns as the prepare step did."""

from __future__ import annotations

import csv
import random

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from jobs import predict as predict_job
from jobs.config_loader import load_config
from pipeline.data.prepare import prepare
from pipeline.errors import UserInputError
from pipeline.tracking import tracking_store
from tests.integration.corpus import FILLER, NEGATIVE, POSITIVE
from tests.model_factory import learned_state, register

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _write(path, rows: int = 800, seed: int = 0):
    # A title of filler (empty in a third of the rows) and a body ending in the sentiment word.
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["title", "content", "sentiment"])
        for i in range(rows):
            positive = i % 2 == 0
            word = rng.choice(POSITIVE if positive else NEGATIVE)
            title = "" if i % 3 == 0 else "".join(rng.choices(FILLER, k=rng.randint(1, 6)))
            w.writerow([title, "".join(rng.choices(FILLER, k=rng.randint(0, 4))) + word, "pos" if positive else "neg"])
    return path


@pytest.fixture(scope="module")
def joined_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("joined")
    corpus = _write(root / "reviews.csv")
    cfg = load_config(
        None,
        [
            f"output_root={root}",
            "data.source=files",
            "data.text_column=[title, content]",
            "data.label_column=sentiment",
            "data.labels=[neg, pos]",
            f"data.paths=[{corpus}]",
            "tokenizer.max_length=32",
        ],
    )
    prep = prepare(cfg)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = register(uri, "joined", cfg, prep, learned_state(cfg, prep))
    MlflowClient(uri).set_registered_model_alias("joined", "champion", version)
    job_cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=joined"])
    return uri, job_cfg


ROWS = pd.DataFrame(
    {
        "id": [1, 2, 3, 4],
        "title": ["这本书", "", "我们", None],
        "content": ["好看", "很失望", "很喜欢", "退货"],
    }
)
JOINED = ["这本书 好看", "很失望", "我们 很喜欢", "退货"]


def test_the_served_model_joins_the_columns_it_was_trained_on(joined_model):
    uri, _ = joined_model
    with tracking_store(uri):
        model = mlflow.pyfunc.load_model("models:/joined@champion")
    by_columns = model.predict(ROWS)
    by_text = model.predict(pd.DataFrame({"text": JOINED}))
    assert by_columns["label"].tolist() == by_text["label"].tolist() == ["pos", "neg", "pos", "neg"]
    np.testing.assert_allclose(by_columns["p_pos"], by_text["p_pos"], atol=1e-7)
    assert model.predict({"title": ["这本书"], "content": ["好看"]})["label"].tolist() == ["pos"]
    with pytest.raises(MlflowException, match=r"or the columns \['title', 'content'\] it was trained on"):
        model.predict(pd.DataFrame({"title": ["好看"], "body": ["x"]}))
    with pytest.raises(MlflowException, match=r"1 of 2 input rows hold no text: row 1 \(missing\)"):
        model.predict(pd.DataFrame({"title": ["好看", None], "content": ["x", None]}))


def test_predict_joins_text_columns_in_the_file_and_the_ray_path(joined_model, ray_cluster, tmp_path):
    _, cfg = joined_model
    ROWS.to_csv(tmp_path / "in.csv", index=False)
    pd.DataFrame({"id": ROWS["id"], "text": JOINED}).to_csv(tmp_path / "joined.csv", index=False)
    columns = ("title", "content")
    by_columns = predict_job.run(cfg, str(tmp_path / "in.csv"), str(tmp_path / "a.parquet"), None, columns)
    by_text = predict_job.run(cfg, str(tmp_path / "joined.csv"), str(tmp_path / "b.parquet"), None, "text")
    assert by_columns["label"].tolist() == by_text["label"].tolist()
    assert list(by_columns.columns[:3]) == ["id", "title", "content"]  # the input's columns kept as written
    np.testing.assert_allclose(by_columns["p_pos"], by_text["p_pos"], atol=1e-7)

    folder = predict_job.run(cfg, str(tmp_path / "in.csv"), str(tmp_path / "scored"), None, columns, workers=1)
    stored = pd.read_parquet(tmp_path / "scored")
    assert folder.rows == 4 and stored["label"].tolist() == by_text["label"].tolist()
    np.testing.assert_allclose(stored["p_pos"], by_text["p_pos"], atol=1e-6)

    # No --text-column: 'text' where the input has it, else the columns the model was trained on.
    default = predict_job.run(cfg, str(tmp_path / "in.csv"), str(tmp_path / "e.parquet"), None, None)
    np.testing.assert_allclose(default["p_pos"], by_text["p_pos"], atol=1e-7)
    given_text = predict_job.run(cfg, str(tmp_path / "joined.csv"), str(tmp_path / "f.parquet"), None, None)
    np.testing.assert_allclose(given_text["p_pos"], by_text["p_pos"], atol=1e-7)
    predict_job.run(cfg, str(tmp_path / "in.csv"), str(tmp_path / "default"), None, None, workers=1)
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "default")["p_pos"], by_text["p_pos"], atol=1e-6)

    # Parquet of Arrow string_view columns (Polars, DuckDB): Ray Data cannot hand them to pandas as they are.
    import pyarrow as pa
    import pyarrow.parquet as pq

    views = {c: pa.array(ROWS[c].tolist(), from_pandas=True).cast(pa.string_view()) for c in columns}
    pq.write_table(pa.table(views), tmp_path / "views.parquet")
    predict_job.run(cfg, str(tmp_path / "views.parquet"), str(tmp_path / "from_views"), None, None, workers=1)
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "from_views")["p_pos"], by_text["p_pos"], atol=1e-6)

    with pytest.raises(UserInputError, match=r"text column 'body' not found in .*in\.csv; columns are"):
        predict_job.run(cfg, str(tmp_path / "in.csv"), str(tmp_path / "c.parquet"), None, ("title", "body"))
    with pytest.raises(UserInputError, match=r"text column 'body' not found in .*in\.csv; columns are"):
        predict_job.run(cfg, str(tmp_path / "in.csv"), str(tmp_path / "c"), None, ("title", "body"))
    pd.DataFrame({"title": [None], "content": [" "]}).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(UserInputError, match=r"column 'title,content': 1 of 1 input rows hold no text: row 0"):
        predict_job.run(cfg, str(tmp_path / "empty.csv"), str(tmp_path / "d.parquet"), None, columns)


def test_the_text_column_flag_takes_several_names():
    assert predict_job._text_columns_flag("title, content") == ("title", "content")
    assert predict_job._text_columns_flag("review") == "review"


def test_the_scoring_server_joins_the_columns_over_rest(joined_model, tmp_path):
    # `mlflow models serve` hands the model what MLflow parsed from JSON: a frame (dataframe_split,
    # dataframe_records) or a dict of arrays (inputs); each is joined as the prepare step joined it.
    import json
    import os
    import subprocess
    import sys
    import urllib.request

    from tests.conftest import free_port, stop_process, wait_http

    uri, _ = joined_model
    port = free_port()
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    log = open(tmp_path / "serve.log", "wb")
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/joined@champion"]
    proc = subprocess.Popen(
        [*command, "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout_s=180, proc=proc)
        with tracking_store(uri):
            expected = mlflow.pyfunc.load_model("models:/joined@champion").predict(pd.DataFrame({"text": JOINED}))
        records = ROWS[["title", "content"]].astype(object).where(ROWS[["title", "content"]].notna(), None)
        payloads = [
            {"dataframe_split": {"columns": ["title", "content"], "data": records.values.tolist()}},
            {"dataframe_records": records.to_dict(orient="records")},
            {"inputs": {"title": records["title"].tolist(), "content": records["content"].tolist()}},
        ]
        for payload in payloads:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as r:
                answer = pd.DataFrame(json.load(r)["predictions"])
            assert answer["label"].tolist() == expected["label"].tolist(), payload
            np.testing.assert_allclose(answer["p_pos"], expected["p_pos"], atol=1e-6)
    finally:
        stop_process(proc, log)

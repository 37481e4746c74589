"""The champion answers raw text over HTTP (`mlflow models serve`) exactly as `jobs.predict` scores it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from jobs import predict as predict_job
from jobs.config_loader import load_config
from pipeline.errors import UserInputError
from pipeline.registry.batch_scoring import SUMMARY
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


def test_predict_job_refuses_to_write_a_second_label_column(champion, tmp_path):
    # A labeled test set has `label`: two columns of one name would be ambiguous in CSV, refused by Parquet.
    root, uri = champion
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": REVIEWS, "label": ["pos", "neg"]}).to_csv(src, index=False)
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    with pytest.raises(
        UserInputError,
        match=r"already has the column\(s\) \['label'\], which scoring writes; pass --score-prefix pred_",
    ):
        predict_job.run(cfg, str(src), str(tmp_path / "out.parquet"), None, "text")
    assert not (tmp_path / "out.parquet").exists()
    out = predict_job.run(cfg, str(src), str(tmp_path / "out.parquet"), None, "text", prefix="pred_")
    assert list(pd.read_parquet(tmp_path / "out.parquet").columns) == [
        "text",
        "label",
        "pred_label",
        "pred_probability",
        "pred_p_neg",
        "pred_p_pos",
    ]
    assert out["pred_label"].tolist() == ["pos", "neg"]


def test_predict_job_reads_a_semicolon_csv_with_delimiter(champion, tmp_path):
    # What spreadsheet programs save in many European locales; the error names the fix.
    root, uri = champion
    src = tmp_path / "in.csv"
    src.write_text(f"id;text\n1;{REVIEWS[0]}\n2;{REVIEWS[1]}\n", encoding="utf-8")
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    with pytest.raises(
        UserInputError, match=r"columns are \['id;text'\]; the header reads as ';'-separated: pass --delimiter ';'"
    ):
        predict_job.run(cfg, str(src), str(tmp_path / "out.csv"), None, "text")
    out = predict_job.run(cfg, str(src), str(tmp_path / "out.csv"), None, "text", delimiter=";")
    assert out["id"].tolist() == ["1", "2"] and out["label"].tolist() == ["pos", "neg"]  # CSV: as written
    # `--delimiter '\t'` as typed in a shell (backslash, t) is a tab.
    src.write_text(f"id\ttext\n1\t{REVIEWS[0]}\n", encoding="utf-8")
    flags = ["--input", str(src), "--output", str(tmp_path / "tab.csv"), "--delimiter", "\\t"]
    assert predict_job.main([*flags, f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"]) == 0
    assert pd.read_csv(tmp_path / "tab.csv")["label"].tolist() == ["pos"]


def test_predict_job_scores_a_csv_without_a_header_with_column_names(champion, tmp_path):
    # A corpus read with data.column_names is scored from files of the same layout: --column-names.
    root, uri = champion
    src = tmp_path / "test.csv"
    src.write_text(f'"2","{REVIEWS[0]}"\n"1","{REVIEWS[1]}"\n', encoding="utf-8")
    flags = ["--input", str(src), "--output", str(tmp_path / "out.csv"), "--column-names", "stars, text"]
    assert predict_job.main([*flags, f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"]) == 0
    out = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert out["stars"].tolist() == ["2", "1"] and out["label"].tolist() == ["pos", "neg"]


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


def test_predict_job_reads_and_writes_object_storage(champion, s3_bucket, tmp_path):
    # A scheduled scoring job reads and writes s3:// as the training job does (here a local S3 server).
    import boto3

    root, uri = champion
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    bucket = s3_bucket.removeprefix("s3://")
    src = tmp_path / "in.tsv"
    pd.DataFrame({"id": [1, 2], "review": REVIEWS}).to_csv(src, sep="\t", index=False)
    s3.upload_file(str(src), bucket, "in/reviews.tsv")
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    out = predict_job.run(cfg, f"{s3_bucket}/in/reviews.tsv", f"{s3_bucket}/out/scored.parquet", None, "review")
    assert list(out["label"]) == ["pos", "neg"]
    s3.download_file(bucket, "out/scored.parquet", str(tmp_path / "back.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "back.parquet"), out)
    predict_job.run(cfg, str(src), str(tmp_path / "local.tsv"), None, "review")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local.tsv", sep="\t", dtype={"id": str}), out)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert keys == ["in/reviews.tsv", "out/scored.parquet"]  # nothing temporary uploaded
    with pytest.raises(UserInputError, match=r"--input s3://.*/in/absent\.csv not found"):
        predict_job.run(cfg, f"{s3_bucket}/in/absent.csv", f"{s3_bucket}/out/x.csv", None, "review")


def test_predict_job_reads_and_writes_compressed_files(champion, ray_cluster, tmp_path):
    # reviews.csv.gz, .jsonl.zst: one file in this process, a folder on Ray; a file that does not decompress is named.
    root, uri = champion
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    frame = pd.DataFrame({"id": [1, 2], "review": REVIEWS})
    frame.to_csv(tmp_path / "in.csv", index=False)
    plain = predict_job.run(cfg, str(tmp_path / "in.csv"), str(tmp_path / "plain.parquet"), None, "review")
    (tmp_path / "in").mkdir()
    frame.to_csv(tmp_path / "in" / "a.csv.gz", index=False)  # pandas compresses by the name
    with pa.CompressedOutputStream(str(tmp_path / "in" / "b.csv.zst"), "zstd") as zst:  # pandas needs zstandard
        zst.write(frame.to_csv(index=False).encode())
    for name in ("a.csv.gz", "b.csv.zst"):
        out = predict_job.run(cfg, str(tmp_path / "in" / name), str(tmp_path / f"{name}.parquet"), None, "review")
        pd.testing.assert_frame_equal(out, plain)
    # ... and an output file named so is compressed
    predict_job.run(cfg, str(tmp_path / "in.csv"), str(tmp_path / "scored.jsonl.zst"), None, "review")
    with pa.input_stream(str(tmp_path / "scored.jsonl.zst"), compression="zstd") as packed:
        back = pd.read_json(packed, lines=True, dtype={"id": str})  # CSV input: the id as written
    pd.testing.assert_frame_equal(back, plain, check_dtype=False)
    predict_job.run(cfg, str(tmp_path / "in"), str(tmp_path / "scored") + "/", None, "review")
    pd.testing.assert_frame_equal(
        _scored_folder(tmp_path / "scored").sort_values("id", kind="stable").reset_index(drop=True),
        pd.concat([plain, plain]).sort_values("id", kind="stable").reset_index(drop=True),
        check_dtype=False,
    )
    (tmp_path / "in" / "c.csv.gz").write_bytes(b"id,review\n3,not gzip\n")
    with pytest.raises(UserInputError, match=r"--input \S*/in/c\.csv\.gz: could not be decompressed as gzip \(zlib"):
        predict_job.run(cfg, str(tmp_path / "in" / "c.csv.gz"), str(tmp_path / "c.parquet"), None, "review")
    with pytest.raises(UserInputError, match=r"--input file \S*/in/c\.csv\.gz could not be read as CSV: zlib"):
        predict_job.run(cfg, str(tmp_path / "in"), str(tmp_path / "scored2") + "/", None, "review")


def _scored_folder(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder)  # as a reader would: pyarrow skips `_COMPLETE` and `_predict_summary.json`


def test_batch_scoring_on_ray_scores_a_folder_as_the_file_path_does(champion, ray_cluster, tmp_path):
    # Two files, texts a CSV reader could mangle (a quoted newline, "NA", digits), and a `label`
    # column as a labeled test set has: refused until --score-prefix names the scores apart.
    root, uri = champion
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    src = tmp_path / "in"
    src.mkdir()
    first = pd.DataFrame({"id": [1, 2, 3], "review": [REVIEWS[0], "很好\n推荐", "NA"], "label": ["pos", "pos", "neg"]})
    second = pd.DataFrame({"id": [4, 5], "review": ["123", REVIEWS[1]], "label": ["neg", "neg"]})
    first.to_csv(src / "a.csv", index=False)
    second.to_csv(src / "b.csv", index=False)
    out = tmp_path / "scored"
    with pytest.raises(UserInputError, match=r"already has the column\(s\) \['label'\].*--score-prefix pred_"):
        predict_job.run(cfg, str(src), str(out), None, "review")
    assert not out.exists()

    result = predict_job.run(cfg, str(src), str(out), None, "review", prefix="pred_", workers=1)
    assert (result.rows, result.model_version) == (5, "1")
    stored = _scored_folder(out)
    whole = pd.concat([first, second], ignore_index=True)
    whole.to_csv(tmp_path / "whole.csv", index=False)
    expected = predict_job.run(
        cfg, str(tmp_path / "whole.csv"), str(tmp_path / "whole.parquet"), None, "review", "pred_"
    )
    assert list(stored.columns) == [
        "id",
        "review",
        "label",
        "pred_label",
        "pred_probability",
        "pred_p_neg",
        "pred_p_pos",
    ]
    assert stored["review"].tolist() == whole["review"].tolist()  # input order, texts as written
    assert stored["pred_label"].tolist() == expected["pred_label"].tolist()
    np.testing.assert_allclose(stored["pred_p_pos"], expected["pred_p_pos"], atol=1e-6)
    summary = json.loads((out / "_predict_summary.json").read_text())
    assert summary["rows"] == 5 and summary["model_version"] == "1" and (out / "_COMPLETE").is_file()

    # A rerun replaces the output whole; a run that fails leaves the last output as it was.
    second.to_csv(src / "a.csv", index=False)
    assert predict_job.run(cfg, str(src / "a.csv"), str(out), None, "review", "pred_").rows == 2
    assert _scored_folder(out)["id"].tolist() == ["4", "5"]
    pd.DataFrame({"id": [6, 7], "review": ["好", " "], "label": ["pos", "neg"]}).to_csv(src / "a.csv", index=False)
    with pytest.raises(UserInputError, match=r"rows hold no text, e\.g\. \{'id': '7', 'review': ' ', .*\(empty\)"):
        predict_job.run(cfg, str(src), str(out), None, "review", "pred_")
    assert _scored_folder(out)["id"].tolist() == ["4", "5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "scored", "whole.csv", "whole.parquet"]
    # A quiet day (header-only files): an empty output with its summary, not an error.
    for name in ("a.csv", "b.csv"):
        (src / name).write_text("id,review,label\n")
    empty = predict_job.run(cfg, str(src), str(out), None, "review", "pred_")
    assert (empty.rows, empty.files) == (0, 0) and sorted(p.name for p in out.iterdir()) == ["_COMPLETE", SUMMARY]
    # The same ';' rule on Ray's reader.
    (src / "a.csv").write_text(f"id;review\n8;{REVIEWS[1]}\n", encoding="utf-8")
    (src / "b.csv").unlink()
    with pytest.raises(UserInputError, match=r"the header reads as ';'-separated: pass --delimiter ';'"):
        predict_job.run(cfg, str(src), str(out), None, "review")
    semi = predict_job.run(cfg, str(src), str(out), None, "review", delimiter=";")
    assert semi.rows == 1 and _scored_folder(out)["label"].tolist() == ["neg"]


def test_batch_scoring_job_reads_and_writes_object_storage(champion, s3_bucket, tmp_path):
    # The command a scheduled scoring job runs: its own local Ray, input and output on the object store.
    import boto3

    root, uri = champion
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    bucket = s3_bucket.removeprefix("s3://")
    for k, text in enumerate(REVIEWS):
        pd.DataFrame({"text": [text]}).to_parquet(tmp_path / f"{k}.parquet")
        s3.upload_file(str(tmp_path / f"{k}.parquet"), bucket, f"in/part-{k}.parquet")
    args = ["--input", f"{s3_bucket}/in/", "--output", f"{s3_bucket}/scored/", f"tracking.tracking_uri={uri}"]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.predict", *args, "tracking.registered_model_name=served", "ray.num_cpus=2"],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scored 2 rows with models:/served@champion (version 1)" in proc.stdout
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    parts = [k for k in keys if k.startswith("scored/") and k.endswith(".parquet")]
    assert keys == sorted(
        ["in/part-0.parquet", "in/part-1.parquet", *parts, "scored/_COMPLETE", "scored/_predict_summary.json"]
    )
    got = []
    for k in parts:
        s3.download_file(bucket, k, str(tmp_path / "part.parquet"))
        got.append(pd.read_parquet(tmp_path / "part.parquet"))
    assert pd.concat(got, ignore_index=True)["label"].tolist() == ["pos", "neg"]
    # A folder that no scoring run wrote is never replaced (here: the input's own prefix).
    args[3] = f"{s3_bucket}/in/"
    refused = subprocess.run(
        [sys.executable, "-m", "jobs.predict", *args, "tracking.registered_model_name=served"],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode == 2 and "holds files that no scoring run wrote" in refused.stderr, refused.stderr
    assert [k for k in keys if k.startswith("in/")] == ["in/part-0.parquet", "in/part-1.parquet"]
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == keys


@pytest.fixture(scope="module")
def server(champion, tmp_path_factory):
    """One `mlflow models serve` of the champion for every REST case of this module (its start is slow)."""
    root, uri = champion
    port = free_port()
    # The scoring server execs `uvicorn` from PATH: put this interpreter's bin folder first.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    log = open(tmp_path_factory.mktemp("serve-log") / "serve.log", "wb")
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
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        stop_process(proc, log)


def _post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_models_serve_answers_raw_text_like_predict(champion, server, tmp_path):
    root, uri = champion
    status, body = _post(server, {"dataframe_split": {"columns": ["text"], "data": [[t] for t in REVIEWS]}})
    assert status == 200, body
    served = pd.DataFrame(body["predictions"])
    src = tmp_path / "in.parquet"
    pd.DataFrame({"text": REVIEWS}).to_parquet(src)
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    local = predict_job.run(cfg, str(src), str(tmp_path / "out.csv"), None, "text")
    assert list(served["label"]) == list(local["label"]) == ["pos", "neg"]
    assert served["probability"].round(5).tolist() == local["probability"].round(5).tolist()


# Three texts, the first repeated: every route must answer three rows, the repeats identical.
THREE = [REVIEWS[0], REVIEWS[1], REVIEWS[0]]
PROBS = ["p_neg", "p_pos"]


def _probs(frame: pd.DataFrame) -> np.ndarray:
    return frame[PROBS].to_numpy(dtype=float)


@pytest.fixture(scope="module")
def reference(champion) -> pd.DataFrame:
    """The in-process answer to THREE as a DataFrame, which every other route must match."""
    root, uri = champion
    with tracking_store(uri):
        model = mlflow.pyfunc.load_model("models:/served@champion")
    return model, model.predict(pd.DataFrame({"text": THREE}))


def test_every_in_process_input_shape_gives_one_row_per_text(reference):
    model, ref = reference
    assert len(ref) == 3 and (_probs(ref)[0] == _probs(ref)[2]).all() and list(ref["label"]) == ["pos", "neg", "pos"]
    for given in (THREE, {"text": THREE}, np.array(THREE), pd.Series(THREE)):
        got = model.predict(given)
        assert len(got) == 3, type(given)
        np.testing.assert_allclose(_probs(got), _probs(ref), atol=1e-6, err_msg=str(type(given)))
    single = model.predict(THREE[1])
    assert len(single) == 1
    np.testing.assert_allclose(_probs(single)[0], _probs(ref)[1], atol=1e-6)


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": ["text"], "data": [[t] for t in THREE]}},
        {"dataframe_records": [{"text": t} for t in THREE]},
        {"inputs": THREE},
        {"inputs": {"text": THREE}},
    ],
    ids=["dataframe_split", "dataframe_records", "inputs-list", "inputs-dict"],
)
def test_every_rest_route_gives_the_in_process_answer(server, reference, payload):
    _, ref = reference
    status, body = _post(server, payload)
    assert status == 200, body
    got = pd.DataFrame(body["predictions"])
    assert list(got["label"]) == list(ref["label"])
    np.testing.assert_allclose(_probs(got), _probs(ref), atol=1e-6)


@pytest.mark.parametrize(
    "payload,why",
    [
        ({"dataframe_split": {"columns": ["text"], "data": [[THREE[0]], [None]]}}, "missing"),
        ({"dataframe_records": [{"text": THREE[0]}, {"text": ""}]}, "empty"),
        ({"inputs": [THREE[0], None]}, "missing"),
        ({"dataframe_split": {"columns": ["text"], "data": [[THREE[0]], [5]]}}, "int"),
    ],
    ids=["null", "empty", "inputs-null", "number"],
)
def test_rows_without_text_are_refused_the_same_way_in_process_and_over_rest(server, reference, payload, why):
    model, _ = reference
    status, body = _post(server, payload)
    assert status == 400, body
    assert "row 1 " in body["message"] and why in body["message"] and "send a non-empty string" in body["message"]
    rows = payload.get("inputs") or [r[0] for r in payload.get("dataframe_split", {}).get("data", [])]
    rows = rows or [r["text"] for r in payload["dataframe_records"]]
    with pytest.raises(MlflowException) as e:
        model.predict(pd.DataFrame({"text": rows}))
    assert "row 1 " in e.value.message and why in e.value.message


def test_predict_job_reads_na_words_as_text_in_every_format(champion, reference, tmp_path):
    root, uri = champion
    model, _ = reference
    words = ["NA", "null", "None", "NaN", "N/A", "nan"]
    expected = model.predict(words)
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    frame = pd.DataFrame({"id": range(len(words)), "text": words})
    inputs = {"in.csv": frame.to_csv, "in.jsonl": None, "in.parquet": frame.to_parquet}
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    for name, write in inputs.items():
        if write is not None:
            write(tmp_path / name, index=False)
        out = predict_job.run(cfg, str(tmp_path / name), str(tmp_path / f"out-{name}"), None, "text")
        assert list(out["text"]) == words, name
        np.testing.assert_allclose(_probs(out), _probs(expected), atol=1e-6, err_msg=name)


def test_predict_job_refuses_rows_without_text_naming_them(champion, tmp_path, capsys):
    root, uri = champion
    src = tmp_path / "in.csv"
    src.write_text(f"id,text\n1,{THREE[0]}\n2,\n3,{THREE[1]}\n", encoding="utf-8")
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
    assert code == 2 and str(src) in err and "row 1 " in err and "empty" in err, err
    assert "Traceback" not in err and not (tmp_path / "o.csv").exists()


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


def test_predict_scores_text_and_fasttext_lines_in_both_paths(champion, ray_cluster, tmp_path):
    # A model trained on train.ft.txt.bz2 scores test.ft.txt.bz2: fastText lines keep their label as a
    # column (refused until --score-prefix, as a labeled CSV's); a plain .txt is a text per line.
    import bz2

    root, uri = champion
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "tracking.registered_model_name=served"])
    (tmp_path / "in").mkdir()
    ft = tmp_path / "in" / "test.ft.txt.bz2"
    ft.write_bytes(bz2.compress(f"__label__2 {REVIEWS[0]}\n\n__label__1 {REVIEWS[1]}\r\n".encode()))
    pd.DataFrame({"label": ["2", "1"], "text": REVIEWS}).to_csv(tmp_path / "same.csv", index=False)
    expected = predict_job.run(cfg, str(tmp_path / "same.csv"), str(tmp_path / "same.parquet"), None, None, "pred_")
    with pytest.raises(UserInputError, match=r"already has the column\(s\) \['label'\].*--score-prefix pred_"):
        predict_job.run(cfg, str(ft), str(tmp_path / "ft.parquet"), None, None)
    one = predict_job.run(cfg, str(ft), str(tmp_path / "ft.parquet"), None, None, "pred_")
    many = predict_job.run(cfg, str(tmp_path / "in" / "*.txt.bz2"), str(tmp_path / "ft"), None, None, "pred_")
    stored = pd.read_parquet(tmp_path / "ft")
    assert one["label"].tolist() == stored["label"].tolist() == ["2", "1"] and many.rows == 2
    assert one["pred_label"].tolist() == stored["pred_label"].tolist() == expected["pred_label"].tolist()
    np.testing.assert_allclose(stored["pred_p_pos"], expected["pred_p_pos"], atol=1e-6)

    plain = tmp_path / "plain.txt"
    plain.write_text(f"{REVIEWS[0]}\n\n{REVIEWS[1]}\n", encoding="utf-8")
    scored = predict_job.run(cfg, str(plain), str(tmp_path / "plain.csv"), None, None)
    assert list(scored.columns[:2]) == ["text", "label"] and scored["text"].tolist() == REVIEWS
    assert scored["label"].tolist() == expected["pred_label"].tolist()
    (tmp_path / "two.txt").write_text("__label__1 fine\n\n__label__1 __label__2 both\n", encoding="utf-8")
    for output in ("two.csv", "two"):
        with pytest.raises(UserInputError, match=r"two\.txt: line 3 has more than one label"):
            predict_job.run(cfg, str(tmp_path / "two.txt"), str(tmp_path / output), None, None, "pred_")

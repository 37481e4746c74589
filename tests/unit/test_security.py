"""Secrets stay out of MLflow params/tags, printed output and Ray job submissions; config paths stay
inside output_root. Each test goes through the code the jobs use (no reimplementation here)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import mlflow
import pytest

from jobs import submit
from jobs.config_loader import load_config
from jobs.run import RunSummary
from pipeline.errors import UserInputError
from pipeline.registry.promotion import Decision
from pipeline.tracking import flatten, log_params, mask_secrets, tracking_store
from pipeline.train.workflow import TrainOutcome

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    "key,value",
    [
        ("tracking.tracking_uri", f"postgresql://mlflow:{SECRET}@db:5432/mlflow"),
        ("tracking.tracking_uri", f"postgresql+psycopg2://mlflow:{SECRET}@127.0.0.1/mlflow"),
        ("tracking.tracking_uri", f"https://trainer:{SECRET}@mlflow.example.com"),
        ("data.paths", f"['s3://key:{SECRET}@bucket/reviews.csv']"),
        ("MLFLOW_TRACKING_PASSWORD", SECRET),
        ("MLFLOW_TRACKING_TOKEN", SECRET),
        ("RAY_AUTH_TOKEN", SECRET),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("db_password", SECRET),
        ("openai_api_key", SECRET),
    ],
)
def test_mask_secrets_hides_the_secret(key, value):
    assert SECRET not in str(mask_secrets(key, value))


@pytest.mark.parametrize(
    "key,value",
    [
        ("tokenizer.max_length", 32),
        ("tokenizer.kind", "wordlevel"),
        ("tokenizer_digest", "ab12"),
        ("tracking.tracking_uri", "http://127.0.0.1:5000"),
        ("data.paths", "['/data/reviews.csv']"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ],
)
def test_mask_secrets_keeps_ordinary_values(key, value):
    assert mask_secrets(key, value) == value


def test_logged_params_hold_no_secret(tmp_path):
    """What the workflow logs (flatten(cfg) through log_params) into a real MLflow store."""
    uri = f"postgresql://mlflow:{SECRET}@db.internal:5432/mlflow"
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", f"output_root={tmp_path}"])
    with tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}") as client:  # puts the previous URI back
        with mlflow.start_run() as run:
            log_params(flatten(cfg))
        params = client.get_run(run.info.run_id).data.params
    assert not [k for k, v in params.items() if SECRET in v]
    assert params["tracking.tracking_uri"] == "postgresql://mlflow:***@db.internal:5432/mlflow"
    assert params["tokenizer.max_length"] == str(cfg.tokenizer.max_length)


def test_printed_summary_holds_no_secret():
    """The summary `jobs.run` prints at the end names the tracking URI."""
    outcome = TrainOutcome("r1", "run", "models:/m/1", "m", "1", {"accuracy": 0.9, "f1": 0.9}, 10, [])
    decision = Decision("1", True, "first version", {"accuracy": 0.9}, None, None)
    summary = RunSummary(outcome, decision, f"postgresql://mlflow:{SECRET}@db:5432/mlflow", 1.0)
    text = summary.text()
    assert SECRET not in text and "postgresql://mlflow:***@db:5432/mlflow" in text


# -- paths from config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "output_root=../outside",
        "output_root=outputs/../../etc",
        "tracking.run_name=../../escape",
        "tracking.run_name=a/b",
        "tracking.run_name=/abs",
    ],
)
def test_config_paths_cannot_leave_output_root(override):
    with pytest.raises(UserInputError):
        load_config(None, [override])


# -- jobs.submit: what goes to the Jobs API ----------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    return submit.build_parser().parse_args(list(argv))


def test_submission_runtime_env_and_entrypoint():
    sub = submit.build_submission(
        _args("--env", "MY_SETTING", "output_root=/mnt/shared/rnn", "train.epochs=2", "data.labels=[neg, pos]"),
        environ={"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MY_SETTING": "x"},
    )
    env = sub["runtime_env"]
    assert env["working_dir"] == str(REPO)
    assert {".git", ".venv", "outputs"} <= set(env["excludes"])
    assert env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MY_SETTING": "x"}
    assert sub["entrypoint"] == (
        "python -m jobs.run --config jobs/configs/embedded.yaml "
        "output_root=/mnt/shared/rnn train.epochs=2 'data.labels=[neg, pos]'"
    )
    shown = submit.describe(sub)
    assert "MLFLOW_TRACKING_URI" in shown and "http://mlflow:5000" not in shown


def test_working_dir_upload_stays_small():
    """What Ray would upload (its own packaging, with our excludes): code, not venvs or stores."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    files: list[Path] = []
    excludes = _get_excludes(REPO, submit.WORKING_DIR_EXCLUDES)
    _dir_travel(REPO, [excludes], lambda p: files.append(p) if p.is_file() else None, include_gitignore=True)
    rel = {p.relative_to(REPO).as_posix() for p in files}
    assert {"jobs/run.py", "pipeline/tracking.py", "schemas/config.py", "pyproject.toml"} <= rel
    assert not [r for r in rel if r.startswith((".venv/", "outputs/", ".git/"))]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20


@pytest.mark.parametrize(
    "environ,argv",
    [
        ({"MLFLOW_TRACKING_URI": f"postgresql://u:{SECRET}@db/mlflow"}, []),
        ({"MLFLOW_TRACKING_PASSWORD": SECRET}, ["--env", "MLFLOW_TRACKING_PASSWORD"]),
        ({}, [f"tracking.tracking_uri=postgresql://u:{SECRET}@db/mlflow"]),
    ],
)
def test_submission_refuses_secrets(environ, argv, capsys):
    with pytest.raises(UserInputError) as e:
        submit.build_submission(_args("output_root=/mnt/shared/rnn", *argv), environ=environ)
    assert SECRET not in str(e.value)


def test_submission_needs_an_absolute_output_root():
    with pytest.raises(UserInputError, match="output_root"):
        submit.build_submission(_args("output_root=outputs"), environ={})


def test_submit_main_reports_user_errors_without_contacting_ray(capsys):
    assert submit.main(["--address", "http://127.0.0.1:9", "no_such.key=1"]) == 2
    assert "no_such" in capsys.readouterr().err


def test_submit_rejects_a_working_dir_without_the_job(tmp_path):
    with pytest.raises(UserInputError, match="jobs/run.py"):
        submit.build_submission(_args("--working-dir", str(tmp_path)), environ={})
    shutil.rmtree(tmp_path, ignore_errors=True)

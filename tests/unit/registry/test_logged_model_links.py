"""Issue 13 item 17: a logged model's page shows the held-out scores at the final step, names the test
dataset they were measured on, and links the registered version (a real sqlite store; the logged model is
created directly, without a trained pyfunc, since the links are what is tested)."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
from mlflow.entities import LoggedModelStatus

from pipeline.registry.versions import register_version
from pipeline.tracking import ensure_experiment, log_held_out_metrics, tracking_store


def test_the_logged_model_names_its_test_dataset_and_its_registered_version(tmp_path):
    with tracking_store(f"sqlite:///{tmp_path / 'm.db'}") as client:
        experiment_id = ensure_experiment(client, "links", str(tmp_path))
        with mlflow.start_run(experiment_id=experiment_id) as run:
            test = mlflow.data.from_pandas(
                pd.DataFrame({"text": ["好看", "失望"], "label": ["pos", "neg"]}),
                source="https://example.com/reviews/test.csv",
                targets="label",
                name="files-test",
                digest="0123456789abcdef",
            )
            mlflow.log_input(test, context="test")
            model = client.create_logged_model(experiment_id, name="model", source_run_id=run.info.run_id)
            client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
            log_held_out_metrics(
                client, run.info.run_id, model.model_id, {"accuracy": 0.8, "f1": 0.75}, 2, ("files-test", test.digest)
            )
            mv = register_version(client, "links-model", f"models:/{model.model_id}", run.info.run_id, {}, "")
        logged = client.get_logged_model(model.model_id)
        history = client.get_metric_history(run.info.run_id, "test_accuracy")
    by_key = {m.key: m for m in logged.metrics}
    assert set(by_key) == {"test_accuracy", "test_f1"}
    assert {(m.step, m.dataset_name, m.dataset_digest) for m in logged.metrics} == {(2, "files-test", test.digest)}
    assert by_key["test_accuracy"].value == 0.8
    assert [(m.step, m.value) for m in history] == [(2, 0.8)]  # on the run too, once
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "links-model", "version": str(mv.version)}]

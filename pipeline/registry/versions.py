"""Register a logged model as a version, idempotently.

A version is registered only after its model is fully logged; a rerun of a job that was killed
after registering finds the version by run id instead of registering a duplicate; a version
whose registration fails is deleted so no half-registered version is left behind.
"""

from __future__ import annotations

import json
import time

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS


def find_version_by_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    hits = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    ready = [v for v in hits if v.status == "READY"]
    return max(ready, key=lambda v: int(v.version)) if ready else None


def register_version(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    description: str,
    timeout_s: float = 300,
) -> ModelVersion:
    """Register `model_uri` as a new version of `name` (or return the one this run already has).

    A local store resolves a logged model (`models:/m-...`) through MLflow's tracking URI, which
    the job set to the client's store at its boundary (pipeline.tracking.tracking_store).
    """
    existing = find_version_by_run(client, name, run_id)
    if existing is not None:
        return existing
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
    # A logged model's URI is models:/<model_id>; a tracking server wants that id passed too.
    model_id = model_uri.split("/", 1)[1] if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(
        name, model_uri, run_id=run_id, tags=tags, description=description, model_id=model_id
    )
    try:
        _wait_ready(client, mv, timeout_s)
    except BaseException:
        client.delete_model_version(name, mv.version)  # never leave a half-registered version
        raise
    if model_id:
        _link_logged_model(client, model_id, mv)
    return client.get_model_version(name, mv.version)


def _link_logged_model(client: MlflowClient, model_id: str, mv: ModelVersion) -> None:
    """Record the version on the logged model, as mlflow.register_model does: without this tag the
    logged model's page says "Not registered"."""
    tags = client.get_logged_model(model_id).tags
    linked = json.loads(tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    entry = {"name": mv.name, "version": str(mv.version)}
    if entry not in linked:
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*linked, entry])})


def _wait_ready(client: MlflowClient, mv: ModelVersion, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while mv.status == "PENDING_REGISTRATION":
        if time.monotonic() > deadline:
            raise TimeoutError(f"model version {mv.name}/{mv.version} still pending after {timeout_s}s")
        time.sleep(0.5)
        mv = client.get_model_version(mv.name, mv.version)
    if mv.status != "READY":
        raise RuntimeError(f"model version {mv.name}/{mv.version} ended {mv.status}: {mv.status_message}")

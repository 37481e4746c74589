"""Log the raw-text pyfunc model and register it, idempotently.

A version is registered only after its model is fully logged; a rerun of a job that was killed
after registering finds the version by run id instead of registering a duplicate; a version
whose registration fails is deleted so no half-registered version is left behind.
"""

from __future__ import annotations

import json
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from pipeline.serving.raw_text_model import SPEC, TOKENIZER, WEIGHTS, model_spec
from pipeline.tracking import tracking_uri_scope
from schemas.config import ModelConfig
from schemas.features import Manifest
from schemas.signature import TEXT_COLUMN, model_signature

_ROOT = Path(__file__).resolve().parent.parent
MODEL_ENTRY = _ROOT / "pipeline" / "serving" / "model_entry.py"
MODEL_NAME_IN_RUN = "model"


def _requirements() -> list[str]:
    # Exact pins of what the pyfunc imports, so `mlflow models serve` rebuilds the same env.
    pkgs = ("mlflow", "tokenizers", "pandas", "numpy", "pydantic", "pyyaml", "datasets", "scikit-learn")
    reqs = [f"{p}=={version(p)}" for p in pkgs]
    return [f"torch=={torch.__version__.split('+')[0]}", *reqs]


def log_raw_text_model(
    state_dict: dict[str, Any], manifest: Manifest, tokenizer_file: Path, model_cfg: ModelConfig,
    example_texts: list[str],
) -> mlflow.models.model.ModelInfo:
    """Log the pyfunc into the active run. Returns MLflow's ModelInfo (its model_uri)."""
    with tempfile.TemporaryDirectory(prefix="rnn-model-") as tmp:
        weights = Path(tmp) / "weights.pt"
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, weights)
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps(model_spec(manifest, model_cfg), indent=2, ensure_ascii=False))
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(MODEL_ENTRY),
            artifacts={WEIGHTS: str(weights), TOKENIZER: str(tokenizer_file), SPEC: str(spec)},
            code_paths=[str(_ROOT / "pipeline"), str(_ROOT / "schemas")],
            signature=model_signature(list(manifest.label_names)),
            input_example=pd.DataFrame({TEXT_COLUMN: example_texts}),
            pip_requirements=_requirements(),
        )


def find_version_by_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    hits = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    ready = [v for v in hits if v.status == "READY"]
    return max(ready, key=lambda v: int(v.version)) if ready else None


def register_version(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str,
    timeout_s: float = 300,
) -> ModelVersion:
    """Register `model_uri` as a new version of `name` (or return the one this run already has)."""
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
    # The store resolves a logged model through MLflow's current tracking URI: make it the client's.
    with tracking_uri_scope(client.tracking_uri):
        mv = client.create_model_version(name, model_uri, run_id=run_id, tags=tags, description=description,
                                         model_id=model_id)
    try:
        deadline = time.monotonic() + timeout_s
        while mv.status == "PENDING_REGISTRATION":
            if time.monotonic() > deadline:
                raise TimeoutError(f"model version {name}/{mv.version} still pending after {timeout_s}s")
            time.sleep(0.5)
            mv = client.get_model_version(name, mv.version)
        if mv.status != "READY":
            raise RuntimeError(f"model version {name}/{mv.version} ended {mv.status}: {mv.status_message}")
    except BaseException:
        client.delete_model_version(name, mv.version)  # never leave a half-registered version
        raise
    return mv

"""The served model's contract: raw text in; the label and its probability out."""

from __future__ import annotations

from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

TEXT_COLUMN = "text"


def model_signature(label_names: list[str]) -> ModelSignature:
    outputs = [ColSpec("string", "label"), ColSpec("double", "probability")]
    outputs += [ColSpec("double", f"p_{name}") for name in label_names]
    return ModelSignature(inputs=Schema([ColSpec("string", TEXT_COLUMN)]), outputs=Schema(outputs))

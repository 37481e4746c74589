"""The served model's contract: raw text in; the label and its probability out."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.models.signature import ModelSignature

TEXT_COLUMN = "text"


def model_signature(label_names: list[str]) -> ModelSignature:
    # MLflow imported on use: the CLI reads TEXT_COLUMN from here and must start fast.
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    outputs = [ColSpec("string", "label"), ColSpec("double", "probability")]
    outputs += [ColSpec("double", f"p_{name}") for name in label_names]
    return ModelSignature(inputs=Schema([ColSpec("string", TEXT_COLUMN)]), outputs=Schema(outputs))

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
    # No input schema on purpose: MLflow enforces one before the model sees its input, and a
    # `text: string` column makes a plain list fail and a dict of lists arrive as ONE row holding the
    # list. The model reads every shape itself (raw_text_model.input_texts) and refuses non-text rows.
    return ModelSignature(outputs=Schema(outputs))

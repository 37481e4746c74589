"""The registered model: a pyfunc that scores RAW text with the training-time tokenizer and padding.

It holds no pickled object: the weights are a state dict loaded with `weights_only=True`, the
architecture and padding rules are JSON, the tokenizer is its own JSON file, and the class is
logged as "model from code" (`model_entry.py`), so loading runs only this project's module.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from tokenizers import Tokenizer

from pipeline.data.encode import encode_texts
from pipeline.evaluation.scoring import predict_proba
from pipeline.model import build_model
from schemas.config import ModelConfig
from schemas.signature import TEXT_COLUMN

WEIGHTS = "weights"
TOKENIZER = "tokenizer"
SPEC = "spec"


def model_spec(manifest, model_cfg: ModelConfig) -> dict[str, Any]:
    """Everything besides weights and tokenizer needed to rebuild the model and its input rules."""
    return {
        "model": model_cfg.model_dump(mode="json"),
        "vocab_size": manifest.vocab_size,
        "pad_id": manifest.pad_id,
        "label_names": list(manifest.label_names),
        "max_length": manifest.max_length,
        "padding_side": manifest.padding_side,
        "truncation_side": manifest.truncation_side,
        "max_chars": manifest.max_chars,
    }


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        col = TEXT_COLUMN if TEXT_COLUMN in model_input.columns else model_input.columns[0]
        values = model_input[col]
    elif isinstance(model_input, dict):
        values = model_input.get(TEXT_COLUMN, [])
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        values = model_input
    return ["" if v is None else str(v) for v in list(values)]


class RawTextClassifier(PythonModel):
    def load_context(self, context) -> None:
        with open(context.artifacts[SPEC], encoding="utf-8") as f:
            self.spec = json.load(f)
        self.tokenizer = Tokenizer.from_file(context.artifacts[TOKENIZER])
        self.model = build_model(
            self.spec["vocab_size"],
            self.spec["pad_id"],
            len(self.spec["label_names"]),
            ModelConfig.model_validate(self.spec["model"]),
        )
        state = torch.load(context.artifacts[WEIGHTS], map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()

    def predict_proba(self, texts: list[str], batch_size: int = 512) -> np.ndarray:
        s = self.spec
        ids, _ = encode_texts(
            texts,
            self.tokenizer,
            s["max_length"],
            s["pad_id"],
            s["padding_side"],
            s["truncation_side"],
            s.get("max_chars"),
        )
        return predict_proba(self.model, ids, batch_size)

    # Type-hinted: MLflow validates the input against the hint (and stops warning that it cannot).
    # A list of strings or a dict is still accepted: MLflow converts it to a DataFrame first.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        proba = self.predict_proba(_texts(model_input))
        names = self.spec["label_names"]
        best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
        out = {"label": [names[i] for i in best], "probability": proba[np.arange(len(best)), best].astype(float)}
        for j, name in enumerate(names):
            out[f"p_{name}"] = proba[:, j].astype(float)
        return pd.DataFrame(out)

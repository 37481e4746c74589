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
from mlflow.exceptions import MlflowException
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
        # Trained on several columns joined (data.text_column=[title, content]): rows that hold those columns
        # and no 'text' are joined the same way. Absent for one text column (and in older versions' specs).
        **(
            {"text_columns": list(manifest.source.text_column)} if isinstance(manifest.source.text_column, list) else {}
        ),
    }


_SHOWN = 5  # bad rows named in the one-line error; the rest are counted


def _column(model_input: Any, text_columns: list[str] | None = None) -> Any:
    """The text values of any shape MLflow hands over (no input schema: it converts nothing); a model
    trained on several `text_columns` joins them when the input holds them and no 'text'."""
    if isinstance(model_input, pd.DataFrame | dict):
        keys = list(model_input.columns if isinstance(model_input, pd.DataFrame) else model_input.keys())
        if TEXT_COLUMN not in keys and text_columns and all(c in keys for c in text_columns):
            return _joined(model_input, text_columns)
        # The 'text' column; else a lone column (a plain list becomes MLflow's column 0).
        key = TEXT_COLUMN if TEXT_COLUMN in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            kind = "column" if isinstance(model_input, pd.DataFrame) else "key"
            also = f", or the columns {text_columns} it was trained on" if text_columns else ""
            raise MlflowException.invalid_parameter_value(
                f"input has no {TEXT_COLUMN!r} {kind} (it has {keys}); send the texts as a {TEXT_COLUMN!r} "
                f"column (dataframe_split/dataframe_records){also}, a list (inputs) or a DataFrame with one column"
            )
        model_input = model_input[key]
    if isinstance(model_input, np.ndarray) and model_input.ndim == 2 and model_input.shape[1] == 1:
        return model_input[:, 0]  # `inputs: [["a"], ["b"]]`
    if isinstance(model_input, list | tuple | pd.Series) or (isinstance(model_input, np.ndarray) and model_input.ndim):
        return model_input
    if isinstance(model_input, np.ndarray):
        return [model_input.item()]  # a 0-d array: one value
    return [model_input]  # one value: a string is one text, anything else one row that is not text


def _joined(model_input: pd.DataFrame | dict, text_columns: list[str]) -> list:
    from pipeline.data.text_columns import frame_texts
    from pipeline.errors import DataValidationError

    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    else:  # each column read as a lone text column is: {"title": "x", ...} one row, lists a row per item
        values = {c: list(_column(model_input[c])) for c in text_columns}
        if len({len(v) for v in values.values()}) > 1:
            sizes = ", ".join(f"{c}: {len(v)}" for c, v in values.items())
            raise MlflowException.invalid_parameter_value(
                f"input columns {list(text_columns)} hold different numbers of rows ({sizes}); send one value per row "
                "in each"
            )
        frame = pd.DataFrame(values)
    try:
        return frame_texts(frame, tuple(text_columns), "input", None)
    except DataValidationError as e:
        raise MlflowException.invalid_parameter_value(str(e)) from None


def why_not_text(value: Any) -> str | None:
    if isinstance(value, str | np.str_):
        return None if value.strip() else "empty"
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and np.isnan(value)):
        return "missing"
    return f"{type(value).__name__}, not a string"


def input_texts(model_input: Any, text_columns: list[str] | None = None) -> list[str]:
    """One text per input row. A row that is missing (None/NaN), empty or not a string is never
    scored (str(None) would be scored as the word "None"): the whole input is refused naming the rows.

    Raises MlflowException (INVALID_PARAMETER_VALUE: HTTP 400 from the scoring server).
    """
    values = list(_column(model_input, text_columns))
    bad = [(i, why) for i, v in enumerate(values) if (why := why_not_text(v))]
    if bad:
        shown = ", ".join(f"row {i} ({why})" for i, why in bad[:_SHOWN])
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise MlflowException.invalid_parameter_value(
            f"{len(bad)} of {len(values)} input rows hold no text: {shown}{more} (0-based); send a non-empty string "
            "for every row, or drop those rows"
        )
    return [str(v) for v in values]


class RawTextClassifier(PythonModel):
    def load_context(self, context) -> None:
        with open(context.artifacts[SPEC], encoding="utf-8") as f:
            self.spec = json.load(f)
        self.tokenizer = Tokenizer.from_file(context.artifacts[TOKENIZER])
        self.model = build_model(
            self.spec["vocab_size"],
            self.spec["pad_id"],
            len(self.spec["label_names"]),
            # Versions logged before model.ngram_weighting existed averaged their n-grams (its first version).
            ModelConfig.model_validate({"ngram_weighting": "mean", **self.spec["model"]}),
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

    # The signature declares no input schema: MLflow's enforcement would turn a list into a frame
    # without a 'text' column and a dict of lists into ONE row holding the list. Every shape comes
    # here unconverted and `input_texts` reads it. (The hint only stops MLflow warning about none.)
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        proba = self.predict_proba(input_texts(model_input, self.spec.get("text_columns")))
        names = self.spec["label_names"]
        best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
        out = {"label": [names[i] for i in best], "probability": proba[np.arange(len(best)), best].astype(float)}
        for j, name in enumerate(names):
            out[f"p_{name}"] = proba[:, j].astype(float)
        return pd.DataFrame(out)

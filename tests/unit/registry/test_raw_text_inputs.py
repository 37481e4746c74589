"""What the served model reads as its texts, whatever shape MLflow hands it (DataFrame from
`dataframe_split`/`dataframe_records`, arrays or dicts of arrays from `inputs`, lists, dicts and
strings in process): one text per input row, and rows that hold no text are refused by index."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from pipeline.registry.raw_text_model import input_texts

TEXTS = ["好看", "失望", "好看"]


@pytest.mark.parametrize(
    "given",
    [
        pd.DataFrame({"text": TEXTS}),
        pd.DataFrame({"id": [1, 2, 3], "text": TEXTS}),  # extra columns are carried, not scored
        pd.DataFrame({0: TEXTS}),  # MLflow's frame of a plain list
        TEXTS,
        tuple(TEXTS),
        np.array(TEXTS),
        np.array(TEXTS, dtype=object),
        np.array([[t] for t in TEXTS]),  # `inputs: [["a"], ["b"]]`
        pd.Series(TEXTS),
        {"text": TEXTS},
        {"text": np.array(TEXTS)},
        {"text": pd.Series(TEXTS)},
    ],
    ids=lambda g: type(g).__name__,
)
def test_every_input_shape_gives_one_text_per_row(given):
    assert input_texts(given) == TEXTS


def test_a_single_string_is_one_text():
    assert input_texts("好看") == ["好看"] and input_texts({"text": "好看"}) == ["好看"]
    assert input_texts(np.array("好看")) == ["好看"]


@pytest.mark.parametrize(
    "given,row,why",
    [
        (["好看", None], 1, "missing"),
        (["好看", math.nan], 1, "missing"),
        (pd.DataFrame({"text": ["好看", None, "失望"]}), 1, "missing"),
        (pd.DataFrame({"text": ["好看", "失望", np.nan]}), 2, "missing"),
        (["", "好看"], 0, "empty"),
        (["好看", "   "], 1, "empty"),
        (["好看", 5], 1, "int"),
        (["好看", 1.5], 1, "float"),
        (["好看", ["a", "b"]], 1, "list"),
        (pd.DataFrame({"text": [["a", "b", "c"]]}), 0, "list"),  # MLflow's frame of {"text": [...]}
        (np.array([1, 2]), 0, "int"),
        ({"text": ["好看", None]}, 1, "missing"),
        ({"text": 5}, 0, "int"),
        (5, 0, "int"),
        (None, 0, "missing"),
        (pd.Series(["好看", None], dtype="string"), 1, "missing"),  # pandas' pd.NA
    ],
)
def test_rows_without_text_are_refused_by_index(given, row, why):
    with pytest.raises(MlflowException) as e:
        input_texts(given)
    msg = e.value.message
    assert "\n" not in msg and f"row {row} " in msg and why in msg, msg
    assert "send a non-empty string" in msg  # the fix
    assert e.value.get_http_status_code() == 400  # what the scoring server answers


def test_an_input_without_a_text_column_names_the_columns():
    with pytest.raises(MlflowException, match=r"no 'text' column.*\['id', 'review'\]"):
        input_texts(pd.DataFrame({"id": [1], "review": ["好看"]}))
    with pytest.raises(MlflowException, match=r"no 'text' key.*\['a', 'b'\]"):
        input_texts({"a": ["x"], "b": ["y"]})


def test_many_bad_rows_are_counted_and_a_few_shown():
    with pytest.raises(MlflowException) as e:
        input_texts([None] * 50 + ["好看"])
    assert "50 of 51 input rows" in e.value.message and "row 4 " in e.value.message and "row 49 " not in e.value.message


def test_a_model_trained_on_several_text_columns_joins_them():
    # data.text_column=[title, content]: the spec's text_columns, joined as the prepare step joined them.
    columns = ["title", "content"]
    frame = pd.DataFrame({"title": ["Great CD", None, " "], "content": ["loved it", "meh", "ok"]})
    assert input_texts(frame, columns) == ["Great CD loved it", "meh", "ok"]
    assert input_texts({"title": ["a"], "content": ["b"], "id": [1]}, columns) == ["a b"]
    # REST `inputs` as MLflow hands them over: one row of scalars, or arrays (0-d for a scalar).
    assert input_texts({"title": "a", "content": "b"}, columns) == ["a b"]
    assert input_texts({"title": np.array("a"), "content": np.array("b")}, columns) == ["a b"]
    assert input_texts({"title": np.array(["a", None], dtype=object), "content": np.array(["b", "c"])}, columns) == [
        "a b",
        "c",
    ]
    with pytest.raises(MlflowException, match=r"hold different numbers of rows \(title: 2, content: 1\)"):
        input_texts({"title": ["a", "b"], "content": ["c"]}, columns)
    assert input_texts(pd.DataFrame({"text": ["as sent"], "title": ["x"], "content": ["y"]}), columns) == ["as sent"]
    with pytest.raises(MlflowException, match=r"input: column 'content' holds int64 values \(e\.g\. 5\), not text"):
        input_texts(pd.DataFrame({"title": ["a"], "content": [5]}), columns)
    with pytest.raises(MlflowException, match=r"column 'content' mixes int, str values, not text only"):
        input_texts({"title": ["a", "b"], "content": ["x", 5]}, columns)

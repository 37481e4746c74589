"""Encode texts to fixed-length id rows: the tokenizer does the text work in Rust, numpy pads.

Padding is LEFT by default: the seed model reads the RNN output at the last time step, which
must be the last real token, not padding. The true length of each row is stored too, so models
that gather at `length - 1` or pack sequences can use it.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer


def pad_ids(
    ids: list[list[int]], max_length: int, pad_id: int, padding_side: str, truncation_side: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lists of ids -> (int32 [n, max_length] matrix, kept lengths, original lengths), vectorized.

    No per-row numpy call: rows are flattened once, then scattered with index arithmetic.
    """
    n = len(ids)
    orig = np.fromiter(map(len, ids), dtype=np.int64, count=n)
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(orig.sum()))
    kept = np.minimum(orig, max_length)
    out = np.full((n, max_length), pad_id, dtype=np.int32)
    if n == 0 or kept.sum() == 0:
        return out, kept.astype(np.int32), orig.astype(np.int32)
    starts = np.concatenate(([0], np.cumsum(orig)[:-1]))
    # Which source tokens survive truncation: the last `kept` of each row, or the first.
    src_start = starts + (orig - kept) if truncation_side == "left" else starts
    rows = np.repeat(np.arange(n), kept)
    within = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
    src = np.repeat(src_start, kept) + within
    col = within + np.repeat(max_length - kept, kept) if padding_side == "left" else within
    out[rows, col] = flat[src]
    return out, kept.astype(np.int32), orig.astype(np.int32)


def encode_batch(
    batch: dict[str, list[Any]],
    tokenizer: Tokenizer,
    max_length: int,
    pad_id: int,
    padding_side: str,
    truncation_side: str,
) -> dict[str, Any]:
    """`Dataset.map(batched=True)` function: adds input_ids, length and n_tokens."""
    encodings = tokenizer.encode_batch(batch["text"], add_special_tokens=False)
    ids = [e.ids for e in encodings]
    matrix, kept, orig = pad_ids(ids, max_length, pad_id, padding_side, truncation_side)
    return {"input_ids": matrix, "length": kept, "n_tokens": orig}


def encode_table(
    batch: pa.Table,
    tokenizer: Tokenizer,
    max_length: int,
    pad_id: int,
    padding_side: str,
    truncation_side: str,
) -> pa.Table:
    """Arrow in, Arrow out (`Dataset.with_format("arrow").map(batched=True)`): no per-row Python object.

    The id matrix becomes a fixed_size_list<int32> column without a copy (it is what
    `schemas.features.encoded_features` declares, so `datasets` has nothing to cast).
    """
    enc = encode_batch(
        {"text": batch.column("text").to_pylist()}, tokenizer, max_length, pad_id, padding_side, truncation_side
    )
    new = {
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(enc["input_ids"].reshape(-1)), max_length),
        "length": pa.array(enc["length"]),
        "n_tokens": pa.array(enc["n_tokens"]),
    }
    # Return the input columns too: with `features=` set, `datasets` takes the returned table as the row.
    out = batch.drop_columns([c for c in new if c in batch.column_names])
    for name, column in new.items():
        out = out.append_column(name, column)
    return out


def cut_text(text: str, max_chars: int, truncation_side: str) -> str:
    """Bound one text to max_chars characters, cut on the tokenizer's truncation side. The one rule
    for cleaning (training data) and for prediction, so both cut the same way."""
    if len(text) <= max_chars:
        return text
    return text[-max_chars:] if truncation_side == "left" else text[:max_chars]


def cut_chars(texts: list[str], max_chars: int | None, truncation_side: str) -> list[str]:
    """Bound each text to max_chars characters before tokenizing (data.max_chars)."""
    if max_chars is None:
        return texts
    return [cut_text(t, max_chars, truncation_side) for t in texts]


def encode_texts(
    texts: list[str],
    tokenizer: Tokenizer,
    max_length: int,
    pad_id: int,
    padding_side: str,
    truncation_side: str,
    max_chars: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw text -> (ids, lengths) with exactly the training-time rules (used at prediction time)."""
    texts = cut_chars(texts, max_chars, truncation_side)
    out = encode_batch({"text": texts}, tokenizer, max_length, pad_id, padding_side, truncation_side)
    return out["input_ids"], out["length"]

"""Document frequencies for the n-gram path's 'idf' weighting (model.ngram_weighting), counted on the
driver before training from the stored training split.

Why: the baseline's TF-IDF weighs a rare n-gram above "the"; the bags' binary L2 value weighs them all
alike. The same binary bags scaled by idf, paired on the same splits (best.yaml with the character bag,
one seed each): French book reviews +2.3 points (mean of 4 splits, all 4 higher), `uncertainty` +-0
(4 splits), long English reviews +-0 (+3.3 and -3.3), one split each of the embedded corpus +0.5,
English sentences -0.3, Dutch book reviews -1.3. So jobs.tune searches it rather than best.yaml using it.

The counts use the model's own hashing (`distinct_grams` of each bag), so training, evaluation and
serving weigh the same buckets. A huge training split is not read whole: shards are taken in a seeded
random order until `model.ngram_idf_rows` rows are counted, which estimates every bucket's frequency
but the rarest; buckets no counted row holds then get the largest idf (a rare n-gram), not 0, which is
what they get only when every training row was counted (the vectorizer would have no such feature).
The result is a buffer of each bag, saved with the weights: workers and serving never count.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.data.store import StorePath, read_file_columns, split_files, table_arrays
from pipeline.model import bags, build_model, set_vocabulary
from schemas.config import JobConfig
from schemas.features import Manifest

CHUNK_ROWS = 1024  # rows hashed at once: a character bag holds seq x 48 grams per row


def count_rows(model: nn.Module, ids: np.ndarray, counts: dict[str, torch.Tensor]) -> None:
    """Add, for each of `model`'s bags, the number of rows of `ids` holding each bucket."""
    named = bags(model)
    if not named or not len(ids):
        return
    # In length order, so each chunk is cut to its own longest row (the bags drop shared padding).
    pad = next(iter(named.values())).pad_id
    ids = ids[np.argsort((ids != pad).sum(axis=1), kind="stable")]
    for start in range(0, len(ids), CHUNK_ROWS):
        chunk = torch.from_numpy(np.array(ids[start : start + CHUNK_ROWS], dtype=np.int64))  # a writable copy
        for name, bag in named.items():
            grams = bag.distinct_grams(chunk).flatten()  # `buckets` marks no gram: counted past the end
            counts[name] += torch.bincount(grams, minlength=bag.buckets + 1)[: bag.buckets]


def document_frequencies(
    data_path: StorePath, manifest: Manifest, cfg: JobConfig, vocabulary: list[str] | None
) -> dict[str, dict]:
    """{bag name: {"idf": float32 [buckets]}} for `cfg.model`'s bags, from the training split (up to
    model.ngram_idf_rows rows, whole shards in a seeded order). Empty without an 'idf' weighting."""
    if cfg.model.ngram_weighting != "idf":
        return {}
    model = build_model(manifest.vocab_size, manifest.pad_id, 2, cfg.model)  # the bags' grams: any head
    set_vocabulary(model, vocabulary)
    named = bags(model)
    if not named:
        return {}
    counts = {name: torch.zeros(bag.buckets, dtype=torch.int64) for name, bag in named.items()}
    files = split_files(data_path, "train")
    order = np.random.default_rng(cfg.train.seed).permutation(len(files))
    rows = 0
    for i in order:
        ids = table_arrays(read_file_columns(files[i], ["input_ids", "label", "length"]))[0]
        count_rows(model, ids, counts)
        rows += len(ids)
        if rows >= cfg.model.ngram_idf_rows:
            break
    complete = rows == manifest.splits["train"].rows
    out = {}
    for name, bag in named.items():
        bag.set_document_frequencies(counts[name] if complete else _unseen_as_rarest(counts[name]), rows)
        out[name] = {"idf": bag.idf.numpy().copy()}
    return out


def _unseen_as_rarest(df: torch.Tensor) -> torch.Tensor:
    """A sample's counts with its unseen buckets counted once: the largest idf the sample can give."""
    return torch.where(df > 0, df, torch.ones_like(df))

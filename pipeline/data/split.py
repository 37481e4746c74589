"""Seeded train/validation/test split by hash rank: exact stratification without a global sort.

Every unique text carries h, a 64-bit SipHash-2-4 of its UTF-8 bytes keyed by `data.seed`
(`pandas.util.hash_array`). Within each label, rows are ranked by h; the lowest ranks go to test,
the next to validation, the rest to train, in exactly the configured fractions per label (as a
stratified split does). No table of texts is ever gathered:
- the shuffle's partitions are ranges of h (top bits), so "rank by h" is "count the label's rows
  in earlier partitions (the driver sums the reduce tasks' counts) + rank inside the partition";
- duplicates are removed before the split, so no test text is a training text;
- the same corpus and seed give the same split whatever the number of partitions or machines.
A source's own validation/test split is kept as it is. data.max_rows keeps a seeded Bernoulli
subsample of each split afterwards (approximately stratified; achieved proportions are in the
manifest's cleaning report).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import DataValidationError
from schemas.config import DataConfig

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "validation", "test")
_U32 = float(1 << 32)


def text_hash(texts: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """uint64 per text: SipHash-2-4 keyed by the seed (stable across runs, processes and machines)."""
    values = texts.to_numpy(zero_copy_only=False) if len(texts) else np.array([], dtype=object)
    return pd.util.hash_array(values.astype(object, copy=False), hash_key=f"{seed % 10**16:016d}", categorize=False)


def partition_of(h: np.ndarray, partitions: int) -> np.ndarray:
    """Range partition on the top 32 bits: partition p holds smaller hashes than p+1, so partitions
    concatenated in order are sorted by hash, whatever their number."""
    return ((h >> np.uint64(32)) * np.uint64(partitions) >> np.uint64(32)).astype(np.int64)


def uniform(h: np.ndarray, salt: int = 0) -> np.ndarray:
    """A float in [0, 1) per hash; different salts give independent draws (splitmix64 finalizer)."""
    with np.errstate(over="ignore"):
        z = h + np.uint64((0x9E3779B97F4A7C15 * (salt + 1)) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)).astype(np.float64) / _U32


def _carve(n: int, share: float) -> int:
    # At least one row of each label that can spare it, so every split sees every class.
    return min(max(int(round(n * share)), 1 if n >= 3 and share > 0 else 0), n)


def plan_split(
    pool: dict[str, int], has_validation: bool, has_test: bool, cfg: DataConfig
) -> dict[str, tuple[int, int]]:
    """Rows of each label carved from the training pool: label -> (to test, to validation)."""
    test_share = 0.0 if has_test else cfg.test_fraction
    val_share = 0.0 if has_validation else cfg.validation_fraction
    if has_test and not has_validation:
        val_share = cfg.validation_fraction  # of the source's training split
    elif has_validation and not has_test:
        test_share = cfg.test_fraction / (1.0 - cfg.validation_fraction)
    out = {}
    for label, n in pool.items():
        n_test = _carve(n, test_share)
        out[label] = (n_test, _carve(n - n_test, val_share / (1.0 - test_share)) if n > n_test else 0)
    return out


def split_codes(
    labels: pa.Array, prio: np.ndarray, quota: dict[str, tuple[int, int]], offset: dict[str, int]
) -> np.ndarray:
    """Split code per row of one partition (rows sorted by h). `offset[label]`: the label's pool rows
    in earlier partitions. A source's own test/validation rows (prio 0/1) stay where they are."""
    codes = np.where(prio == 0, TEST, np.where(prio == 1, VALIDATION, TRAIN)).astype(np.int8)
    pool = prio == 2
    names = list(quota)
    index = pc.index_in(labels, value_set=pa.array(names, pa.string())).to_numpy(zero_copy_only=False)
    for i, label in enumerate(names):
        rows = np.flatnonzero(pool & (index == i))
        rank = offset.get(label, 0) + np.arange(len(rows))
        n_test, n_val = quota[label]
        codes[rows] = np.where(rank < n_test, TEST, np.where(rank < n_test + n_val, VALIDATION, TRAIN))
    return codes


def check_splits(label_counts: dict[str, dict[str, int]], given: set[str]) -> None:
    """Refuse to train on an empty split or a split with a single class. Raises DataValidationError."""
    for name in SPLIT_NAMES:
        counts = label_counts.get(name, {})
        rows, classes = sum(counts.values()), sum(1 for c in counts.values() if c)
        if rows == 0 and name in given:
            raise DataValidationError(
                f"the source's split {name!r} has no rows left after cleaning; check that split's files"
            )
        if rows == 0 or classes < 2:
            raise DataValidationError(
                f"split {name!r} has {rows} rows and {classes} class(es); training needs at least two classes "
                "in every split: add data or change data.validation_fraction/test_fraction"
            )

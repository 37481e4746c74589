"""Reproducible, stratified train/validation/test split (seeded)."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.errors import DataValidationError
from schemas.config import DataConfig


def _carve(frame: pd.DataFrame, fraction: float, seed: int, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts = frame["label"].value_counts()
    if (counts < 2).any():
        raise DataValidationError(
            f"cannot carve a stratified {what} split: label id(s) {counts[counts < 2].index.tolist()} have "
            "fewer than 2 rows; add rows of that class or remove it from data.labels"
        )
    n_out = max(int(round(len(frame) * fraction)), len(counts))
    if n_out >= len(frame):
        raise DataValidationError(f"{len(frame)} rows are too few for a {what} split of {fraction}; add data")
    rest, carved = train_test_split(frame, test_size=n_out, random_state=seed, stratify=frame["label"])
    return rest.reset_index(drop=True), carved.reset_index(drop=True)


def subsample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A stratified random subset of n rows (all rows if there are fewer)."""
    if n >= len(frame):
        return frame
    keep, _ = train_test_split(frame, train_size=n, random_state=seed, stratify=frame["label"])
    return keep.reset_index(drop=True)


def split_corpus(splits: dict[str, pd.DataFrame], cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """-> {'train', 'validation', 'test'}. A source's own validation/test splits are kept as they are.

    Raises DataValidationError when a split would have no rows or a single class: the job refuses
    to train on it.
    """
    has_test, has_val = "test" in splits, "validation" in splits
    for name, frame in splits.items():
        if len(frame) == 0:
            raise DataValidationError(
                f"the source's split {name!r} has no rows left after cleaning; check that split's files"
            )
    train = splits["all"] if "all" in splits else splits["train"]
    given = {k: splits[k] for k in ("validation", "test") if k in splits}
    if cfg.max_rows:
        total = len(train) + sum(len(f) for f in given.values())
        train = subsample(train, max(int(cfg.max_rows * len(train) / total), 2), cfg.seed)
        given = {k: subsample(f, max(int(cfg.max_rows * len(f) / total), 2), cfg.seed)
                 for k, f in given.items()}
    if has_test:
        test = given["test"]
    else:
        share = cfg.test_fraction / (1.0 if not has_val else 1.0 - cfg.validation_fraction)
        train, test = _carve(train, share, cfg.seed, "test")
    if has_val:
        validation = given["validation"]
    else:
        carved = 0.0 if has_test else cfg.test_fraction
        share = cfg.validation_fraction / (1.0 - carved)
        train, validation = _carve(train, share, cfg.seed + 1, "validation")
    out = {"train": train, "validation": validation, "test": test}
    for name, frame in out.items():
        n_classes = frame["label"].nunique()
        if len(frame) == 0 or n_classes < 2:
            raise DataValidationError(
                f"split {name!r} has {len(frame)} rows and {n_classes} class(es); training needs at least "
                "two classes in every split: add data or change data.validation_fraction/test_fraction"
            )
    return out

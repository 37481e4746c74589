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
            f"cannot carve a stratified {what} split: label id(s) {counts[counts < 2].index.tolist()} have fewer "
            "than 2 rows; add rows of that class or remove it from data.labels"
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
    """-> {'train', 'validation', 'test'}. A source's own test split is kept as it is."""
    if "test" in splits:
        train, test = splits["train"], splits["test"]
        if cfg.max_rows:
            share = len(train) / (len(train) + len(test))
            train = subsample(train, max(int(cfg.max_rows * share), 2), cfg.seed)
            test = subsample(test, max(cfg.max_rows - len(train), 2), cfg.seed)
    else:
        frame = splits["all"] if "all" in splits else splits["train"]
        if cfg.max_rows:
            frame = subsample(frame, cfg.max_rows, cfg.seed)
        train, test = _carve(frame, cfg.test_fraction, cfg.seed, "test")
    val_share = cfg.validation_fraction / (1.0 - (0.0 if "test" in splits else cfg.test_fraction))
    train, validation = _carve(train, val_share, cfg.seed + 1, "validation")
    out = {"train": train, "validation": validation, "test": test}
    for name, frame in out.items():
        n_classes = frame["label"].nunique()
        if len(frame) == 0 or n_classes < 2:
            raise DataValidationError(
                f"split {name!r} has {len(frame)} rows and {n_classes} class(es); training needs both classes in "
                "every split: add data or change data.validation_fraction/test_fraction"
            )
    return out

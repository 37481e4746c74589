"""The TF-IDF + logistic regression baseline: deterministic, C chosen on validation, beats chance."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline.baseline import fit_baseline
from schemas.config import BaselineConfig

GOOD = ["great", "loved", "wonderful", "superb", "enjoyable"]
BAD = ["awful", "boring", "terrible", "dull", "wasted"]
FILLER = "the movie plot acting was and it a very this film story".split()


def _corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        words = rng.choices(FILLER, k=rng.randint(3, 8)) + [rng.choice(GOOD if y else BAD)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(y)
    return texts, np.array(labels)


def _splits() -> tuple[dict, dict]:
    texts, labels = {}, {}
    for split, n, seed in (("train", 200, 0), ("validation", 40, 1), ("test", 60, 2)):
        texts[split], labels[split] = _corpus(n, seed)
    return texts, labels


def test_beats_chance_on_a_separable_corpus_and_reports_per_row_predictions():
    texts, labels = _splits()
    result = fit_baseline(texts, labels, BaselineConfig(c_values=(0.01, 1.0, 10.0)))
    assert result.test_metrics["accuracy"] >= 0.9
    assert result.test_pred.shape == (60,) and result.test_correct.dtype == bool
    assert result.test_correct.mean() == pytest.approx(result.test_metrics["accuracy"])
    assert result.c in (0.01, 1.0, 10.0)
    assert result.validation_accuracy >= 0.9
    metrics = result.metrics()
    assert metrics["baseline.test_accuracy"] == result.test_metrics["accuracy"] and "baseline.c" in metrics


def test_two_fits_give_the_same_predictions():
    texts, labels = _splits()
    cfg = BaselineConfig()
    first, second = fit_baseline(texts, labels, cfg), fit_baseline(texts, labels, cfg)
    assert first.c == second.c
    np.testing.assert_array_equal(first.test_pred, second.test_pred)
    assert first.test_metrics == second.test_metrics


def test_features_and_c_are_the_best_of_the_grid_on_validation():
    texts, labels = _splits()
    noisy = labels["validation"].copy()
    noisy[::3] = 1 - noisy[::3]  # a noisy validation split: the grid values score differently
    labels = {**labels, "validation": noisy}
    grid = (1e-3, 0.3, 3.0, 30.0)
    single = {c: fit_baseline(texts, labels, BaselineConfig(c_values=(c,))) for c in grid}
    chosen = fit_baseline(texts, labels, BaselineConfig(c_values=grid))
    best = max(r.validation_accuracy for r in single.values())
    assert chosen.validation_accuracy == best
    assert chosen.c in [c for c, r in single.items() if r.validation_accuracy == best]
    assert chosen.features in ("char", "word+char")


def test_three_classes_are_fitted_and_scored_over_every_class():
    # liblinear fits two classes only (scikit-learn 1.9 raises on more): three take the softmax model.
    rng = random.Random(3)
    words = (GOOD, BAD, ["maybe", "perhaps", "possibly", "unclear", "unsure"])
    texts, labels = {}, {}
    for split, n in (("train", 240), ("validation", 60), ("test", 90)):
        ys = [i % 3 for i in range(n)]
        texts[split] = [" ".join(rng.choices(FILLER, k=4) + [rng.choice(words[y])]) for y in ys]
        labels[split] = np.array(ys)
    first, second = (fit_baseline(texts, labels, BaselineConfig(c_values=(1.0, 10.0))) for _ in range(2))
    assert first.test_metrics["accuracy"] >= 0.9
    assert set(first.test_pred) == {0, 1, 2}
    np.testing.assert_array_equal(first.test_pred, second.test_pred)


def test_a_single_class_training_split_is_refused():
    texts, labels = _splits()
    with pytest.raises(ValueError, match="two classes"):
        fit_baseline(texts, {**labels, "train": np.zeros(200, dtype=int)}, BaselineConfig())

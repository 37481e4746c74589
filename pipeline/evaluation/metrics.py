"""Test metrics shared by training and promotion, so both judge a model the same way."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score


def classification_metrics(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """accuracy, precision, recall, f1 (binary: of class 1; macro otherwise), roc_auc (binary)."""
    labels = np.asarray(labels)
    if len(labels) == 0 or not np.isfinite(proba).all():
        return {k: math.nan for k in ("accuracy", "precision", "recall", "f1", "roc_auc")}
    pred = proba.argmax(axis=1)
    binary = proba.shape[1] == 2
    avg = "binary" if binary else "macro"
    metrics = {
        "accuracy": float(accuracy_score(labels, pred)),
        "precision": float(precision_score(labels, pred, average=avg, zero_division=0)),
        "recall": float(recall_score(labels, pred, average=avg, zero_division=0)),
        "f1": float(f1_score(labels, pred, average=avg, zero_division=0)),
    }
    if binary and len(np.unique(labels)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(labels, proba[:, 1]))
    return metrics

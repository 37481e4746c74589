"""Scoring and metrics shared by training, promotion and prediction, so all three agree."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from torch import nn


def logits_to_proba(logits: torch.Tensor) -> torch.Tensor:
    """Binary (one logit) -> [n, 2] via sigmoid; multi-class -> softmax."""
    logits = logits.float()
    if logits.dim() == 1:
        p1 = torch.sigmoid(logits)
        return torch.stack([1 - p1, p1], dim=-1)
    return torch.softmax(logits, dim=-1)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.dim() == 1:
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


@torch.no_grad()
def predict_proba(model: nn.Module, ids: np.ndarray, batch_size: int = 512,
                  device: str = "cpu") -> np.ndarray:
    """[n, L] int ids -> [n, classes] probabilities (in the rows' order), in eval mode, in batches.

    Rows are scored in order of length, so a model with trim_padding sees batches of similar
    lengths (like its bucketed training batches); other models give the same result in any order.
    """
    order = length_order(ids, getattr(model, "pad_id", None))
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(ids), batch_size):
        rows = order[start : start + batch_size]
        batch = torch.from_numpy(np.ascontiguousarray(ids[rows])).long().to(device)
        out.append(logits_to_proba(model(batch)).cpu().numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, 2), dtype=np.float32)
    scored = np.concatenate(out)
    proba = np.empty_like(scored)
    proba[order] = scored
    return proba


def length_order(ids: np.ndarray, pad_id: int | None) -> np.ndarray:
    """Row indices sorted by real length (stable); the identity when pad_id is unknown."""
    if pad_id is None or len(ids) == 0:
        return np.arange(len(ids))
    return np.argsort((np.asarray(ids) != pad_id).sum(axis=1), kind="stable")


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

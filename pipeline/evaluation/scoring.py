"""Logits to probabilities and losses, shared by training, evaluation and serving, so all agree.

Serving imports this module: it needs torch and numpy only."""

from __future__ import annotations

import numpy as np
import torch
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
def predict_proba(model: nn.Module, ids: np.ndarray, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
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

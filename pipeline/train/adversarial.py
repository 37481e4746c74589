"""Adversarial training on the embeddings (Miyato, Dai and Goodfellow, "Adversarial Training Methods for
Semi-Supervised Text Classification", ICLR 2017), for train.adversarial_epsilon.

Each training step also trains on its batch with every row's token embeddings moved by epsilon (L2 norm
over the row) along the gradient of the loss: the worst nearby input to first order. The clean pass
runs as usual; its backward leaves the gradient on the embeddings (kept by a forward hook), and a second
pass with the perturbation added backpropagates into the same .grad before the optimizer step. Under DDP
both backward passes all-reduce, so every rank still holds the same gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pipeline.evaluation.scoring import loss_fn


class EmbeddingPerturbation:
    """train.adversarial_epsilon: a forward hook on the model's token embedding that keeps the clean
    pass's embeddings (for their gradient) and adds the adversarial perturbation on the second pass.
    Forward passes without autograd (validation, serving: torch.no_grad) pass through untouched."""

    def __init__(self, embedding: nn.Module, epsilon: float):
        self.epsilon = epsilon
        self.delta: torch.Tensor | None = None
        self.clean: torch.Tensor | None = None
        embedding.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor | None:
        if self.delta is not None:
            return out + self.delta
        if out.requires_grad:  # a training pass: keep its embeddings for their gradient
            out.retain_grad()
            self.clean = out
        return None

    def perturbation(self, grad: torch.Tensor) -> torch.Tensor:
        """epsilon times each row's embedding gradient scaled to unit L2 norm: the step of that length
        that raises the row's loss most (to first order)."""
        g = grad.detach().float()
        norm = g.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (g.dim() - 1)))
        return self.epsilon * g / norm

    def backward_adversarial(self, model: nn.Module, amp: Callable[[], Any], x: torch.Tensor, y: torch.Tensor) -> None:
        """After the clean pass's backward: the loss of `x` with its embeddings moved along the normalized
        gradient, backpropagated into the same .grad (DDP all-reduces each backward; the sums add up)."""
        clean, self.clean = self.clean, None
        if clean is None or clean.grad is None:
            return
        self.delta = self.perturbation(clean.grad).to(clean.dtype)
        try:
            with amp():
                logits = model(x)
            loss_fn(logits, y).backward()
        finally:
            self.delta = None

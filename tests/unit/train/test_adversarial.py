"""Adversarial training on the embeddings: the perturbation, the second backward pass, and a loop that
still learns with it (the 2-worker DDP path runs in tests/integration/test_tune.py's --register run)."""

from __future__ import annotations

import contextlib

import torch

from pipeline.evaluation.scoring import loss_fn
from pipeline.model import build_model
from pipeline.train.adversarial import EmbeddingPerturbation
from pipeline.train.loop import WorkerContext, train_worker
from schemas.config import JobConfig

from .conftest import PAD, train_data


def test_the_adversarial_step_raises_the_loss_and_adds_its_gradient(corpus):
    torch.manual_seed(0)
    model = build_model(16, PAD, 2, JobConfig.model_validate({"model": {"cell": "gru"}}).model)
    perturb = EmbeddingPerturbation(model.embedding, epsilon=0.5)
    x, y = torch.from_numpy(corpus[0][0][:32]).long(), torch.from_numpy(corpus[0][1][:32])
    clean_loss = loss_fn(model(x), y)
    clean_loss.backward()
    clean_grads = [p.grad.clone() for p in model.parameters()]
    delta = perturb.perturbation(perturb.clean.grad)
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((32,), 0.5))  # epsilon per row
    perturb.delta = delta
    with torch.no_grad():
        assert float(loss_fn(model(x), y)) > float(clean_loss)  # the direction that raises the loss
    perturb.delta = None
    with torch.no_grad():  # the hook is inert outside the adversarial pass (validation, serving)
        torch.testing.assert_close(loss_fn(model(x), y), clean_loss.detach())
    loss_fn(model(x), y).backward()  # the loop's order: clean pass and backward, then the adversarial pass
    before = [p.grad.clone() for p in model.parameters()]
    perturb.backward_adversarial(model, contextlib.nullcontext, x, y)
    assert perturb.delta is None and perturb.clean is None
    added = [p.grad - b for p, b in zip(model.parameters(), before, strict=True)]
    assert all(torch.isfinite(a).all() for a in added)
    assert any(not torch.allclose(a, c) for a, c in zip(added, clean_grads, strict=True))  # not the clean one


def test_adversarial_training_still_learns_word_order(corpus):
    cfg = JobConfig.model_validate(
        {"model": {"cell": "gru"}, "train": {"epochs": 3, "batch_size": 64, "lr": 0.01, "adversarial_epsilon": 1.0}}
    )
    torch.set_num_threads(1)
    reports = []
    train_worker(
        cfg, train_data(*corpus), WorkerContext(0, 1, torch.device("cpu")), lambda m, s: reports.append((m, s))
    )
    assert reports[-1][0]["val_accuracy"] > 0.9, [m["val_accuracy"] for m, _ in reports]

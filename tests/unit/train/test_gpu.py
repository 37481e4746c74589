"""The training loop on a CUDA GPU (skipped without one; run on a GPU machine with `pytest -m gpu`):
bf16 autocast with the data resident on the device, and every option the search can pick at once
(adversarial pass, EMA, word dropout, the n-gram path, max-mean pooling), which the CPU tests cover
only without autocast."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.model import build_model
from pipeline.train.loop import WorkerContext, train_worker
from schemas.config import JobConfig

from .conftest import PAD, train_data

pytestmark = pytest.mark.gpu


def test_seed_model_gives_the_same_logits_on_gpu_and_cpu(corpus):
    torch.manual_seed(0)
    model = build_model(16, PAD, 2, JobConfig().model).eval()
    x = torch.from_numpy(corpus[1][0][:64]).long()
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)  # fp32, no autocast outside the loop


@pytest.mark.parametrize("data_on_device", [True, False])
def test_every_searched_option_learns_under_autocast(corpus, data_on_device):
    cfg = JobConfig.model_validate(
        {
            "model": {
                "cell": "gru",
                "bidirectional": True,
                "pooling": "max-mean",
                "word_dropout": 0.1,
                "embedding_dropout": 0.1,
                "ngram_buckets": 4096,
            },
            "train": {
                "epochs": 4,
                "batch_size": 64,
                "lr": 0.01,
                "amp": True,
                "data_on_device": data_on_device,
                "adversarial_epsilon": 1.0,
                "ema_decay": 0.9,
            },
        }
    )
    reports = []
    cuda = torch.device("cuda")
    train_worker(
        cfg,
        train_data(*corpus),
        WorkerContext(0, 1, cuda),
        lambda m, s: reports.append((m, s)),
        wrap_model=lambda m: m.to(cuda),  # Ray's prepare_model places it under Ray Train
    )
    metrics = [m for m, _ in reports]
    assert all(math.isfinite(m["train_loss"]) and math.isfinite(m["val_loss"]) for m in metrics), metrics
    assert metrics[-1]["val_accuracy"] > 0.9, [m["val_accuracy"] for m in metrics]
    state = reports[-1][1]  # the checkpoint holds float32 weights on the CPU (autocast leaves parameters alone)
    for weights in (state.model, state.ema):
        assert all(t.device.type == "cpu" for t in weights.values())
        assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())

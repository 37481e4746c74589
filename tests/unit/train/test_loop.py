"""The training core in plain PyTorch (no Ray): sharding, batching, early stopping, resume,
determinism, and the word-order task that separates an RNN from averaged embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.evaluate import classification_metrics, predict_proba
from pipeline.model import build_model
from pipeline.train.loop import (
    WorkerContext,
    _restore_rng,
    build_scheduler,
    plan_batches,
    shard_indices,
    train_worker,
)
from pipeline.train.trainer import choose_state
from schemas.config import JobConfig, TrainConfig

from .conftest import PAD, train_data, word_order_corpus

CPU = WorkerContext(0, 1, torch.device("cpu"))
TIMING = {"samples_per_s", "epoch_s"}


def _cfg(**train) -> JobConfig:
    model = train.pop("model", {})
    return JobConfig.model_validate({"model": model, "train": {"batch_size": 64, "lr": 0.01, **train}})


def _train(cfg: JobConfig, data, resume=None) -> list[tuple[dict, dict]]:
    torch.set_num_threads(1)
    reports = []
    train_worker(cfg, data, CPU, lambda m, s: reports.append((m, s)), resume=resume)
    return reports


def _strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


@pytest.fixture(scope="module")
def corpus():
    return word_order_corpus(600, 0), word_order_corpus(200, 1)


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (1, 2), (0, 2), (64, 2)])
def test_every_rank_gets_the_same_number_of_rows_and_all_rows_are_covered(n, world):
    shards = [shard_indices(n, r, world, seed=1, epoch=3) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    assert set(np.concatenate(shards).tolist()) == set(range(n))
    assert np.array_equal(shards[0], shard_indices(n, 0, world, seed=1, epoch=3))  # seeded


@pytest.mark.parametrize("bucketing", [False, True])
def test_batch_plans_cover_each_row_once_with_the_same_batch_count(bucketing):
    lengths = np.random.default_rng(0).integers(0, 100, 1000)
    order, batches = plan_batches(lengths, 64, bucketing, 4, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(1000)) and len(batches) == -(-1000 // 64)
    covered = np.concatenate([order[s:e] for s, e, _ in sorted(batches)])
    assert np.array_equal(np.sort(covered), np.arange(1000))
    for s, e, w in batches:
        assert w >= max(lengths[order[s:e]].max(), 1)
    if bucketing:  # trimming pays: far fewer padded steps than full width
        assert sum((e - s) * w for s, e, w in batches) < 0.7 * 1000 * lengths.max()
    assert plan_batches(np.zeros(0, np.int32), 8, bucketing, 2, np.random.default_rng(0))[1] == []


def test_a_recurrent_model_learns_word_order_and_mean_embeddings_cannot(corpus):
    """The seed's argument: same words, different order ("我让你" vs "你让我")."""
    test_ids, test_y = word_order_corpus(500, 2)
    accuracy = {}
    for cell in ("gru", "mean-embedding"):
        cfg = _cfg(epochs=3, model={"cell": cell})
        state = _train(cfg, train_data(*corpus))[-1][1]
        model = build_model(16, PAD, 2, cfg.model)
        model.load_state_dict(state["model"])
        accuracy[cell] = classification_metrics(test_y, predict_proba(model, test_ids))["accuracy"]
    assert accuracy["gru"] > 0.95, accuracy
    assert accuracy["mean-embedding"] < 0.6, accuracy


def test_two_runs_with_one_seed_give_identical_metrics_and_weights(corpus):
    cfg = _cfg(epochs=2, bucketing=True, model={"cell": "lstm", "dropout": 0.2, "pooling": "packed"})
    a, b = _train(cfg, train_data(*corpus)), _train(cfg, train_data(*corpus))
    assert [_strip(m) for m, _ in a] == [_strip(m) for m, _ in b]
    for k, v in a[-1][1]["model"].items():
        assert torch.equal(v, b[-1][1]["model"][k]), k


def test_resuming_from_a_checkpoint_continues_exactly_where_it_stopped(corpus):
    cfg = _cfg(epochs=3, model={"dropout": 0.3}, lr_schedule="cosine")
    straight = _train(cfg, train_data(*corpus))
    resumed = _train(cfg, train_data(*corpus), resume=straight[0][1])
    assert [m["epoch"] for m, _ in resumed] == [1, 2]  # the checkpointed epoch is not redone
    assert [_strip(m) for m, _ in resumed] == [_strip(m) for m, _ in straight[1:]]
    assert [h["epoch"] for h in resumed[-1][1]["history"]] == [0, 1, 2]


def test_early_stopping_stops_on_every_rank_and_ships_the_best_weights(corpus):
    # An improvement of 2.0 in accuracy is impossible: only the first epoch counts as best.
    cfg = _cfg(epochs=6, early_stopping_patience=2, early_stopping_metric="val_accuracy",
               early_stopping_min_delta=2.0)
    reports = _train(cfg, train_data(*corpus))
    assert [m["epoch"] for m, _ in reports] == [0, 1, 2]
    last = reports[-1][1]
    assert last["stopped"] and last["best_epoch"] == 0
    chosen = choose_state(last, early_stopping=True)
    for k, v in reports[0][1]["model"].items():
        assert torch.equal(chosen["model"][k], v) and torch.equal(chosen["last_model"][k], last["model"][k])
    assert _train(cfg, train_data(*corpus), resume=last) == []  # a finished run does not restart


def test_empty_training_and_validation_shards_still_report_every_epoch():
    empty = (np.zeros((0, 10), np.int32), np.zeros(0, np.int64))
    reports = _train(_cfg(epochs=2), train_data(empty, empty))
    assert [m["epoch"] for m, _ in reports] == [0, 1]
    assert reports[-1][0]["train_loss"] == 0.0 and reports[-1][0]["val_accuracy"] == 0.0


def test_last_pooling_refuses_right_padding(corpus):
    with pytest.raises(ValueError, match="padding_side=left or pooling=gather"):
        _train(_cfg(epochs=1), train_data(*corpus, padding_side="right"))


def test_lr_schedules():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cos = build_scheduler(opt, TrainConfig(epochs=2, lr_schedule="cosine", lr_warmup_fraction=0.25,
                                           lr_min_factor=0.1), steps_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        cos.step()
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] < lrs[2]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    plateau = build_scheduler(opt, TrainConfig(lr_schedule="plateau", lr_decay_factor=0.5), steps_per_epoch=4)
    for loss in (1.0, 0.5, 0.6):
        plateau.step(loss)
    assert opt.param_groups[0]["lr"] == 0.5


def test_each_rank_restores_its_own_rng_state():
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(torch.get_rng_state())
    expected = torch.rand(3)  # what rank 1 (seed 2) draws next
    torch.manual_seed(0)
    _restore_rng({"cpu": torch.stack(states)}, WorkerContext(1, 2, torch.device("cpu")))
    assert torch.equal(torch.rand(3), expected)
    _restore_rng({"cpu": torch.stack(states)}, WorkerContext(1, 3, torch.device("cpu")))  # other world: kept

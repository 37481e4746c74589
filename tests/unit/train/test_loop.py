"""The training core in plain PyTorch (no Ray): sharding, batching, early stopping, resume,
determinism, and the word-order task that separates an RNN from averaged embeddings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.errors import UserInputError
from pipeline.evaluation.metrics import classification_metrics
from pipeline.evaluation.scoring import predict_proba
from pipeline.model import build_model
from pipeline.train.loop import (
    EarlyStopping,
    WorkerContext,
    _restore_rng,
    build_optimizer,
    build_scheduler,
    plan_batches,
    shard_indices,
    train_worker,
)
from pipeline.train.state import TrainState, load_checkpoint, save_checkpoint_dir
from pipeline.train.trainer import choose_weights
from schemas.config import JobConfig, TrainConfig

from .conftest import PAD, train_data, word_order_corpus

CPU = WorkerContext(0, 1, torch.device("cpu"))
TIMING = {"samples_per_s", "epoch_s"}


def _cfg(**train) -> JobConfig:
    model = train.pop("model", {})
    return JobConfig.model_validate({"model": model, "train": {"batch_size": 64, "lr": 0.01, **train}})


def _train(cfg: JobConfig, data, resume=None) -> list[tuple[dict, TrainState]]:
    torch.set_num_threads(1)
    reports = []
    train_worker(cfg, data, CPU, lambda m, s: reports.append((m, s)), resume=resume)
    return reports


def _strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


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
        model.load_state_dict(state.model)
        accuracy[cell] = classification_metrics(test_y, predict_proba(model, test_ids))["accuracy"]
    assert accuracy["gru"] > 0.95, accuracy
    assert accuracy["mean-embedding"] < 0.6, accuracy


def test_two_runs_with_one_seed_give_identical_metrics_and_weights(corpus):
    cfg = _cfg(epochs=2, bucketing=True, model={"cell": "lstm", "dropout": 0.2, "pooling": "packed"})
    a, b = _train(cfg, train_data(*corpus)), _train(cfg, train_data(*corpus))
    assert [_strip(m) for m, _ in a] == [_strip(m) for m, _ in b]
    for k, v in a[-1][1].model.items():
        assert torch.equal(v, b[-1][1].model[k]), k


def test_resuming_from_a_checkpoint_continues_exactly_where_it_stopped(corpus):
    cfg = _cfg(epochs=3, model={"dropout": 0.3}, lr_schedule="cosine")
    straight = _train(cfg, train_data(*corpus))
    on_disk = load_checkpoint(save_checkpoint_dir(straight[0][1]))  # through torch.save/load(weights_only)
    resumed = _train(cfg, train_data(*corpus), resume=on_disk)
    assert [m["epoch"] for m, _ in resumed] == [1, 2]  # the checkpointed epoch is not redone
    assert [_strip(m) for m, _ in resumed] == [_strip(m) for m, _ in straight[1:]]
    assert [h["epoch"] for h in resumed[-1][1].history] == [0, 1, 2]
    for k, v in straight[-1][1].model.items():
        assert torch.equal(resumed[-1][1].model[k], v), k


def test_early_stopping_stops_on_every_rank_and_ships_the_best_weights(corpus):
    # An improvement of 2.0 in accuracy is impossible: only the first epoch counts as best.
    cfg = _cfg(epochs=6, early_stopping_patience=2, early_stopping_metric="val_accuracy", early_stopping_min_delta=2.0)
    reports = _train(cfg, train_data(*corpus))
    assert [m["epoch"] for m, _ in reports] == [0, 1, 2]
    last = reports[-1][1]
    assert last.early_stopping.stopped and last.early_stopping.best_epoch == 0
    assert [s.early_stopping.bad_epochs for _, s in reports] == [0, 1, 2]
    weights, epoch = choose_weights(last, early_stopping=True)
    assert epoch == 0
    for k, v in reports[0][1].model.items():
        assert torch.equal(weights[k], v) and not torch.equal(last.model[k], v)
    weights, epoch = choose_weights(last, early_stopping=False)
    assert weights is last.model and epoch == 2
    assert _train(cfg, train_data(*corpus), resume=last) == []  # a finished run does not restart


def test_ema_weights_are_validated_kept_shipped_and_resumed(corpus):
    cfg = _cfg(epochs=3, ema_decay=0.9, model={"cell": "gru", "dropout": 0.2}, lr_schedule="cosine")
    straight = _train(cfg, train_data(*corpus))
    last = straight[-1][1]
    averaged = last.averaged_model
    assert set(averaged) == set(last.model)
    assert any(not torch.equal(averaged[k], last.model[k]) for k in averaged)  # an average, not the weights
    weights, _ = choose_weights(last, early_stopping=False)
    assert all(torch.equal(weights[k], v) for k, v in averaged.items())  # the validated weights ship
    model = build_model(16, PAD, 2, cfg.model)
    model.load_state_dict(averaged)
    val_ids, val_y = corpus[1]
    accuracy = classification_metrics(val_y, predict_proba(model, val_ids))["accuracy"]
    assert straight[-1][0]["val_accuracy"] == pytest.approx(accuracy)  # validation scored the average
    # The average's state (its step count included) is in the checkpoint: a resumed run matches.
    resumed = _train(cfg, train_data(*corpus), resume=load_checkpoint(save_checkpoint_dir(straight[0][1])))
    assert [_strip(m) for m, _ in resumed] == [_strip(m) for m, _ in straight[1:]]
    for k, v in averaged.items():
        assert torch.equal(resumed[-1][1].averaged_model[k], v), k
    assert _train(_cfg(epochs=1), train_data(*corpus))[-1][1].ema is None  # off by default


@pytest.mark.parametrize(
    "metric,values,best,stopped_at",
    [
        ("val_loss", [1.0, 0.95, 0.91, 0.92, 0.905], 2, 4),  # 0.905 is lower than 0.91, but by under 0.01
        ("val_accuracy", [0.5, float("nan"), 0.6, 0.605, 0.609], 2, 4),  # NaN is never an improvement
    ],
)
def test_early_stopping_counts_epochs_without_a_large_enough_improvement(metric, values, best, stopped_at):
    stopper = EarlyStopping(
        TrainConfig(early_stopping_patience=2, early_stopping_metric=metric, early_stopping_min_delta=0.01)
    )
    model = torch.nn.Linear(1, 1)
    for epoch, value in enumerate(values):
        state = stopper.step(value, epoch, model)
        if state.stopped:
            break
    assert (state.best_epoch, epoch) == (best, stopped_at)
    assert set(state.best_model) == {"weight", "bias"}
    resumed = EarlyStopping(
        TrainConfig(early_stopping_patience=2, early_stopping_metric=metric, early_stopping_min_delta=0.01), state
    )
    assert resumed.state is state and resumed.step(float("nan"), 5, model).bad_epochs == 3  # it keeps counting


def test_without_patience_the_best_epoch_is_tracked_but_no_weights_are_kept_and_it_never_stops():
    stopper = EarlyStopping(TrainConfig(early_stopping_metric="val_loss"))
    for epoch, value in enumerate([1.0, 0.5, 0.7, 0.8, 0.9]):
        state = stopper.step(value, epoch, torch.nn.Linear(1, 1))
    assert (state.best_epoch, state.bad_epochs, state.stopped, state.best_model) == (1, 3, False, None)


def test_a_checkpoint_of_another_format_is_refused_with_the_fix(tmp_path):
    torch.save({"model": {}, "epoch": 0}, tmp_path / "checkpoint.pt")  # the untyped layout of format 1
    with pytest.raises(UserInputError, match="checkpoint format 1.*start a new run"):
        load_checkpoint(str(tmp_path))


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
    cos = build_scheduler(
        opt, TrainConfig(epochs=2, lr_schedule="cosine", lr_warmup_fraction=0.25, lr_min_factor=0.1), steps_per_epoch=4
    )
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


def test_the_ngram_path_trains_at_its_own_lr_through_the_schedule():
    model = build_model(50, PAD, 2, JobConfig.model_validate({"model": {"ngram_buckets": 64}}).model)
    tc = TrainConfig(lr=0.002, ngram_lr_factor=30, epochs=2, lr_schedule="cosine")
    opt = build_optimizer(model, tc)
    rest, path = opt.param_groups
    assert path["params"] == [model.ngrams.weight] and len(rest["params"]) == len(list(model.parameters())) - 1
    assert (rest["lr"], path["lr"]) == (0.002, pytest.approx(0.06))
    cos = build_scheduler(opt, tc, steps_per_epoch=4)
    for _ in range(5):
        opt.step()
        cos.step()
    assert 0 < rest["lr"] < 0.002 and path["lr"] == pytest.approx(30 * rest["lr"])
    plain = build_optimizer(build_model(50, PAD, 2, JobConfig().model), tc)  # the seed model: one group
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["lr"] == 0.002
    both = build_model(
        50, PAD, 2, JobConfig.model_validate({"model": {"ngram_buckets": 64, "ngram_char_buckets": 32}}).model
    )
    _, path = build_optimizer(both, tc).param_groups  # the character bag is part of the path
    assert path["params"] == [both.ngrams.weight, both.ngram_chars.weight] and path["lr"] == pytest.approx(0.06)


def test_resuming_a_checkpoint_whose_optimizer_groups_differ_is_refused_with_the_fix(corpus):
    cfg = _cfg(epochs=2, model={"ngram_buckets": 64})
    state = _train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})}), train_data(*corpus))
    old = state[0][1]
    one_group = {**old.optimizer, "param_groups": [{**old.optimizer["param_groups"][0], "params": list(range(8))}]}
    with pytest.raises(UserInputError, match="1 optimizer parameter group.*start a new run"):
        _train(cfg, train_data(*corpus), resume=replace(old, optimizer=one_group))


def test_each_rank_restores_its_own_rng_state():
    with torch.random.fork_rng():  # the process's generator is left as it was
        states = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            states.append(torch.get_rng_state())
        expected = torch.rand(3)  # what rank 1 (seed 2) draws next
        torch.manual_seed(0)
        _restore_rng({"cpu": torch.stack(states)}, WorkerContext(1, 2, torch.device("cpu")))
        assert torch.equal(torch.rand(3), expected)

        # Saved under 2 ranks, resumed under 3: the freshly seeded generator is kept, not a saved row.
        torch.manual_seed(0)
        fresh = torch.get_rng_state()
        _restore_rng({"cpu": torch.stack(states)}, WorkerContext(1, 3, torch.device("cpu")))
        assert torch.equal(torch.get_rng_state(), fresh)
        assert not any(torch.equal(torch.get_rng_state(), s) for s in states)


def test_the_char_path_takes_its_grams_from_the_vocabulary_and_keeps_them_in_the_checkpoint(corpus):
    cfg = _cfg(epochs=1, model={"ngram_char_buckets": 128})
    tokens = ["", ""] + [f"w{i}" for i in range(2, 16)]
    reports = []
    torch.set_num_threads(1)
    train_worker(cfg, train_data(*corpus), CPU, lambda m, s: reports.append((m, s)), vocabulary=tokens)
    table = reports[-1][1].model["ngram_chars.token_grams"]
    assert (table[:2] == 128).all() and (table[2:, 0] < 128).all()  # specials: no grams; words: theirs
    assert reports[-1][1].model["ngram_chars.weight"].abs().sum() > 0  # it trained
    with pytest.raises(ValueError, match="needs the tokenizer's vocabulary"):
        _train(cfg, train_data(*corpus))


def test_idf_weighting_trains_with_the_drivers_idf_and_refuses_to_train_without_it(corpus):
    cfg = _cfg(epochs=1, model={"ngram_buckets": 64, "ngram_weighting": "idf"})
    idf = {"ngrams": {"idf": np.linspace(0.0, 3.0, 64, dtype=np.float32)}}
    reports = []
    torch.set_num_threads(1)
    train_worker(cfg, train_data(*corpus), CPU, lambda m, s: reports.append((m, s)), idf=idf)
    torch.testing.assert_close(reports[-1][1].model["ngrams.idf"], torch.as_tensor(idf["ngrams"]["idf"]))
    with pytest.raises(ValueError, match="needs the bags' document frequencies"):  # not a silent 'binary'
        _train(cfg, train_data(*corpus))

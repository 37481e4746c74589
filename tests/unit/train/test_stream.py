"""The streaming input path: how a window becomes batches (no Ray), which path `auto` picks, and a
real two-worker Ray Train fit fed by Ray Data (equal steps on every rank, each validation row scored
once, a model that learns)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.data.store import load_manifest
from pipeline.train.loop import ray_report, train_loop_per_worker
from pipeline.train.stream import _Started, choose_loading, collate_window, window_batches
from pipeline.train.trainer import fit
from schemas.config import JobConfig, TrainConfig

from .conftest import PAD, word_order_corpus, write_prepared


@pytest.mark.parametrize("bucketing", [False, True])
def test_a_window_becomes_batches_that_cover_each_row_once(bucketing):
    ids, y = word_order_corpus(70, 0)
    lengths = (ids != PAD).sum(1).astype(np.int32)
    ids[np.arange(70), -1] = np.arange(70) + 100  # a row id in the last column (left padding keeps it)
    table = pa.table(
        {
            "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1)), ids.shape[1]),
            "label": pa.array(y),
            "length": pa.array(lengths),
        }
    )
    cfg = TrainConfig(batch_size=16, bucketing=bucketing, bucket_chunk_batches=8)
    window = collate_window(table, bucketing)
    batches = list(window_batches(window, cfg, np.random.default_rng(0), left_padded=True))
    assert len(batches) == 5  # ceil(70 / 16) either way: every rank with as many rows takes as many steps
    seen = np.concatenate([x[:, -1].numpy() for x, _ in batches]) - 100
    assert sorted(seen) == list(range(70))
    for x, labels in batches:
        rows = x[:, -1].numpy() - 100
        assert torch.equal(labels, torch.from_numpy(y[rows]))
        assert x.dtype == torch.int64
        if bucketing:  # trimmed to the batch's longest row, dropping only shared padding
            assert x.shape[1] == lengths[rows].max()
        else:
            assert x.shape[1] == ids.shape[1]
    if bucketing:  # rows of similar length share a batch: far less padding than the window's order
        assert sum(x.numel() for x, _ in batches) < 0.8 * ids.size


def test_auto_streams_only_a_training_split_larger_than_the_threshold(tmp_path):
    ids, y = word_order_corpus(1000, 0)  # 1000 rows x 10 ids x 4 bytes = 0.038 MiB in memory
    manifest = load_manifest(write_prepared(tmp_path, {"train": (ids, y)}))
    assert choose_loading(TrainConfig(stream_threshold_mb=0.05), manifest) == "memory"
    assert choose_loading(TrainConfig(stream_threshold_mb=0.03), manifest) == "stream"
    assert choose_loading(TrainConfig(data_loading="memory", stream_threshold_mb=0.03), manifest) == "memory"
    assert choose_loading(TrainConfig(data_loading="stream"), manifest) == "stream"


def _counting_loop(folder: Path):
    """The project's loop, with each rank recording its training steps and validation rows per epoch
    in `folder` (a closure: Ray pickles it by value)."""

    def loop(loop_config: dict[str, Any]) -> None:
        import ray.train

        import pipeline.train.loop as loop_module

        rank = ray.train.get_context().get_world_rank()
        counts = {"steps": [], "val_rows": [], "reports": 0}
        train_step, evaluate = loop_module._train_step, loop_module.evaluate_shard

        def counted_step(run, x, y):
            counts["steps"][-1] += 1
            return train_step(run, x, y)

        def counted_eval(model, batches, ctx, amp):
            rows = []

            def tap():
                for x, y in batches:
                    rows.append(len(y))
                    yield x, y

            out = evaluate(model, tap(), ctx, amp)
            counts["val_rows"].append(sum(rows))
            counts["steps"].append(0)
            return out

        def report(metrics, state):
            counts["reports"] += 1
            ray_report(metrics, state)

        loop_module._train_step, loop_module.evaluate_shard = counted_step, counted_eval
        counts["steps"].append(0)
        try:
            train_loop_per_worker(loop_config, report=report)
        finally:
            loop_module._train_step, loop_module.evaluate_shard = train_step, evaluate
        counts["steps"].pop()  # opened by the last validation, never used
        (folder / f"rank{rank}.json").write_text(json.dumps(counts))

    return loop


@pytest.mark.integration
@pytest.mark.slow
def test_streaming_fit_gives_every_rank_equal_steps_scores_each_validation_row_once_and_learns(
    ray_cluster, tmp_path, sqlite_tracking_uri
):
    # 301 training rows over 2 ranks: the equal split gives each 150 (one row dropped), i.e.
    # 10 batches of 16 in windows of 4 batches; 37 validation rows in batches of 8 split 3/2.
    splits = {
        "train": word_order_corpus(301, 0),
        "validation": word_order_corpus(37, 1),
        "test": word_order_corpus(5, 2),
    }
    data = write_prepared(tmp_path / "data", splits)
    cfg = JobConfig.model_validate(
        {
            "output_root": str(tmp_path / "out"),
            "model": {"cell": "gru", "hidden_dim": 16, "embedding_dim": 8, "head_dim": 16, "trim_padding": True},
            "train": {
                "epochs": 2,  # two: the per-epoch reshuffle still gives equal steps; each epoch costs seconds
                "batch_size": 16,
                "eval_batch_size": 8,
                "lr": 0.02,
                "data_loading": "stream",
                "bucketing": True,
                "bucket_chunk_batches": 4,
                "stream_shuffle_buffer_rows": 64,
            },
            "scaling": {"num_workers": 2},
        }
    )
    client = MlflowClient(sqlite_tracking_uri)
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    counts = tmp_path / "counts"
    counts.mkdir()
    result = fit(cfg, data, "stream-a", sqlite_tracking_uri, run_id, train_loop=_counting_loop(counts))
    ranks = [json.loads((counts / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == [10] * 2
    assert ranks[0]["reports"] == ranks[1]["reports"] == 2
    assert [a + b for a, b in zip(ranks[0]["val_rows"], ranks[1]["val_rows"], strict=True)] == [37] * 2
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/loss")) == [0, 1]
    assert result.history[-1]["val_accuracy"] > 0.8  # word order is learnt from streamed batches


@pytest.mark.parametrize("bucketing", [False, True])
def test_a_window_is_permuted_by_its_epoch_generator_and_keeps_every_row(bucketing):
    ids, y = word_order_corpus(200, 0)
    ids[np.arange(200), -1] = np.arange(200) + 100  # a row id in the last column
    table = pa.table(
        {
            "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1)), ids.shape[1]),
            "label": pa.array(y),
            "length": pa.array((ids != PAD).sum(1).astype(np.int32)),
        }
    )

    def rows(seed):
        window = collate_window(table, bucketing, np.random.default_rng(seed))
        assert torch.equal(window["label"], torch.from_numpy(y[window["ids"][:, -1].numpy() - 100]))
        return window["ids"][:, -1].numpy() - 100

    assert sorted(rows(1)) == list(range(200))
    assert list(rows(1)) == list(rows(1))  # seeded: the same epoch and rank give the same order
    assert list(rows(1)) != list(rows(2))  # another epoch, another order (ties in length too)


def test_a_started_iterator_yields_its_first_item_then_the_rest_and_reraises_in_the_consumer():
    def items(fail_at=None):
        for i in range(4):
            if i == fail_at:
                raise RuntimeError(f"read failed at {i}")
            yield i

    assert list(_Started(items(), background=True)) == [0, 1, 2, 3]
    assert list(_Started(iter([]), background=True)) == []
    with pytest.raises(RuntimeError, match="read failed at 0"):
        list(_Started(items(fail_at=0), background=True))  # raised in the reading thread, seen here
    gen = items()
    started = _Started(gen, background=True)
    started.close()  # the loop stopped early: the reader is closed, nothing more is read
    assert list(gen) == []

"""Ray Train end to end on tiny data (real local cluster, real MLflow store): a worker killed
mid-run, the resumed run, a rerun of the same name, and shards smaller than a batch; and the check
that stops a config the data cannot serve before Ray starts."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.data.store import load_manifest
from pipeline.errors import UserInputError
from pipeline.train.idf import document_frequencies
from pipeline.train.trainer import fit
from schemas.config import JobConfig
from tests.faults import kill_rank_once

from .conftest import word_order_corpus, write_prepared


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_last_checkpoint_and_a_rerun_does_not_start_over(
    ray_cluster, tmp_path, sqlite_tracking_uri
):
    # Streaming workers (train.data_loading=stream), the loading with the most to get right on a
    # restart (each rank's shard is read again from the store, and the epoch resumed); the in-memory
    # loading restarts through the same checkpoint and the same Ray Train restart (one run here costs
    # about two minutes of the suite). 24 training rows and batch_size 64: fewer batches (1) than
    # workers (2); the 3 validation rows are one batch, which rank 0 scores.
    splits = {"train": word_order_corpus(24, 0), "validation": word_order_corpus(3, 1), "test": word_order_corpus(3, 2)}
    data = write_prepared(tmp_path / "data", splits)
    cfg = JobConfig.model_validate(
        {
            "output_root": str(tmp_path / "out"),
            # idf: the driver counts the bags' document frequencies, streaming workers get them in the config
            "model": {"cell": "gru", "hidden_dim": 8, "embedding_dim": 4, "head_dim": 8}
            | {"ngram_buckets": 512, "ngram_weighting": "idf"},
            "train": {"epochs": 2, "batch_size": 64, "max_failures": 1, "data_loading": "stream"},
            "scaling": {"num_workers": 2},
        }
    )
    client = MlflowClient(sqlite_tracking_uri)
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    marker = tmp_path / "killed"
    result = fit(
        cfg, data, "job-a", sqlite_tracking_uri, run_id, train_loop=kill_rank_once(rank=1, after_epoch=0, marker=marker)
    )
    assert marker.read_text() == "rank 1 killed after epoch 0\n"  # rank 1 did die, once
    assert [h["epoch"] for h in result.history] == [0, 1]  # epoch 0 from before the kill, 1 after it
    assert result.metrics["epoch"] == 1 and result.best_epoch == result.state.epoch == 1
    steps = sorted(m.step for m in client.get_metric_history(run_id, "val/loss"))
    assert steps == [0, 1]  # the same MLflow run, each epoch logged once
    assert all(isinstance(v, torch.Tensor) for v in result.model.values())
    assert result.model is result.state.model  # no early stopping: the last epoch's weights ship
    idf = document_frequencies(data, load_manifest(data), cfg, None)["ngrams"]["idf"]
    torch.testing.assert_close(result.model["ngrams.idf"], torch.as_tensor(idf))  # the restarted group's too
    assert (idf == 0).any() and (idf > 1).any()

    again = fit(cfg, data, "job-a", sqlite_tracking_uri, run_id)  # same name, same storage: resumes
    assert [h["epoch"] for h in again.history] == [0, 1]
    for k, v in result.model.items():
        assert torch.equal(again.model[k], v)
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/loss")) == [0, 1]


def test_a_config_the_data_cannot_serve_stops_before_ray(tmp_path):
    data = write_prepared(tmp_path / "data", {"train": word_order_corpus(4, 0)}, padding_side="right")
    with pytest.raises(UserInputError, match="pooling=last"):
        fit(JobConfig(output_root=str(tmp_path / "out")), data, "x", None, None)


@pytest.mark.integration
@pytest.mark.slow
def test_a_rerun_skips_a_corrupt_newest_checkpoint_and_refuses_when_none_loads(ray_cluster, tmp_path):
    splits = {"train": word_order_corpus(24, 0), "validation": word_order_corpus(3, 1), "test": word_order_corpus(3, 2)}
    data = write_prepared(tmp_path / "data", splits)

    def cfg(epochs: int) -> JobConfig:
        return JobConfig.model_validate(
            {
                "output_root": str(tmp_path / "out"),
                "model": {"cell": "gru", "hidden_dim": 8, "embedding_dim": 4, "head_dim": 8},
                "train": {"epochs": epochs, "batch_size": 64},
                "scaling": {"num_workers": 2},
            }
        )

    fit(cfg(2), data, "torn", None, None)
    kept = sorted((tmp_path / "out" / "ray_results" / "torn").glob("checkpoint_*/"))
    assert len(kept) == 2
    (kept[-1] / "checkpoint.pt").write_bytes(b"torn write")
    resumed = fit(cfg(3), data, "torn", None, None)  # resumes from epoch 0's checkpoint, redoes epoch 1
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]

    for folder in (tmp_path / "out" / "ray_results" / "torn").glob("checkpoint_*/"):
        (folder / "checkpoint.pt").write_bytes(b"torn write")
    with pytest.raises(UserInputError, match=r"no usable checkpoint in .*torn.*tracking\.run_name"):
        fit(cfg(4), data, "torn", None, None)

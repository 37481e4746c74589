"""jobs.tune's pieces that need no cluster: samples -> configs, data variants, concurrency, the YAML."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from jobs.config_loader import CONFIG_DIR, load_config
from pipeline.errors import UserInputError
from pipeline.trials import SPACE_KEYS, TrialRow, apply_sample, rank_trials, trial_config, trial_score
from pipeline.tune import (
    check_space,
    config_yaml,
    data_variants,
    max_concurrent,
    param_space,
    start_point,
    write_config,
)
from schemas.config import SearchSpace

TUNE = CONFIG_DIR / "tune.yaml"
SAMPLE = {
    "cell": "lstm",
    "bidirectional": True,
    "pooling": "mean",
    "embedding_dim": 32,
    "hidden_dim": 96,
    "dropout": 0.2,
    "embedding_dropout": 0.1,
    "word_dropout": 0.3,
    "ngram_buckets": 4096,
    "ngram_char_buckets": 2048,
    "ngram_weighting": "idf",
    "ngram_lr_factor": 30.0,
    "encoder_max_length": 128,
    "lr": 0.002,
    "batch_size": 64,
    "ema_decay": 0.99,
    "adversarial_epsilon": 1.0,
    "tokenizer_kind": "english",
    "max_length": 256,
}


def test_every_space_field_sets_a_config_key():
    assert set(SPACE_KEYS) == set(SearchSpace.model_fields)
    assert set(param_space(SearchSpace())) == set(SPACE_KEYS)


def test_a_sample_sets_the_config_and_trials_run_on_their_own_workers():
    base = load_config(TUNE)
    cfg = apply_sample(base, SAMPLE)
    assert (cfg.model.cell, cfg.model.bidirectional, cfg.model.pooling, cfg.tokenizer.kind) == (
        "lstm",
        True,
        "mean",
        "english",
    )
    assert (cfg.train.lr, cfg.train.batch_size, cfg.tokenizer.max_length) == (0.002, 64, 256)
    assert cfg.train.ema_decay == 0.99 and apply_sample(base, {"ema_decay": None}).train.ema_decay is None
    assert cfg.train.adversarial_epsilon == 1.0 and cfg.model.word_dropout == 0.3
    assert (cfg.model.ngram_buckets, cfg.train.ngram_lr_factor, cfg.model.encoder_max_length) == (4096, 30.0, 128)
    assert cfg.model.ngram_char_buckets == 2048 and cfg.model.ngram_weighting == "idf"
    assert cfg.scaling.num_workers == base.scaling.num_workers == 2
    assert trial_config(base, SAMPLE).scaling.num_workers == base.tune.workers_per_trial == 1


def test_data_is_prepared_once_per_tokenizer_setting():
    cfg = load_config(TUNE, ["tune.space.tokenizer_kind=[english, bpe]", "tune.space.max_length=[auto, 128, auto]"])
    assert data_variants(cfg) == [("english", "auto"), ("english", 128), ("bpe", "auto"), ("bpe", 128)]


def test_concurrency_fits_the_cluster():
    cfg = load_config(TUNE)
    assert max_concurrent(cfg, {"CPU": 2.0}) == 2  # 1-worker trials on 2 cores
    assert max_concurrent(cfg, {"CPU": 1.0}) == 1
    assert max_concurrent(load_config(TUNE, ["tune.workers_per_trial=2"]), {"CPU": 8.0}) == 4
    assert max_concurrent(load_config(TUNE, ["tune.max_concurrent_trials=3"]), {"CPU": 64.0}) == 3
    assert max_concurrent(load_config(TUNE, ["scaling.use_gpu=true"]), {"CPU": 64.0, "GPU": 2.0}) == 2


def test_a_space_value_the_config_refuses_is_named_before_any_trial():
    cfg = load_config(TUNE, ["model.trim_padding=false", "model.pooling=packed", "tune.space.pooling=[packed, max]"])
    with pytest.raises(UserInputError, match=r"tune.space.pooling: value 'max' gives an invalid model.pooling"):
        check_space(cfg)
    check_space(load_config(TUNE))  # the shipped space is valid


def test_the_written_config_loads_as_a_job_config(tmp_path):
    best = apply_sample(load_config(TUNE), SAMPLE)
    header = "Found by a test.\nRun:  python -m jobs.run --config x"
    path = write_config(config_yaml(best, header), tmp_path / "best-found.yaml")
    text = path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["best-found.yaml"]  # written whole: no temporary file left
    assert text.startswith("# Found by a test.\n# Run:  python -m jobs.run") and "tune:" not in text
    loaded = load_config(path)
    assert loaded.model_dump(exclude={"tune"}) == best.model_dump(exclude={"tune"})


def test_the_first_trial_is_the_job_configs_own_values_where_the_space_holds_them():
    cfg = load_config(TUNE)
    point = start_point(cfg)
    best = load_config(CONFIG_DIR / "best.yaml")
    own = {
        "tokenizer_kind": "english",
        "max_length": "auto",
        "ngram_char_buckets": 262144,
        "ngram_weighting": "idf",
        "encoder_max_length": 256,
    }
    for name, key in SPACE_KEYS.items():  # tune.yaml starts from best.yaml's model and training, but for `own`
        section, field = key.split(".")
        assert point[name] == own.get(name, getattr(getattr(best, section), field)), name
    narrowed = load_config(TUNE, ["tune.space.lr=[0.001, 0.002]", "tune.space.hidden_dim=[96]"])
    assert "lr" not in start_point(narrowed) and start_point(narrowed)["hidden_dim"] == 96  # lr left to the draw
    apply_sample(cfg, point)  # a valid config


def _epochs(acc: list[float], loss: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(len(acc)), "val_accuracy": acc, "val_loss": loss})


def test_a_trial_scores_its_best_epoch_and_that_epochs_validation_loss():
    # Epochs 1 and 3 share the best accuracy: the tie-break is the lower of their two losses.
    df = _epochs([0.70, 0.84, 0.80, 0.84], [0.60, 0.41, 0.45, 0.38])
    assert trial_score(df, "val_accuracy", "max") == (0.84, 0.38, 4)
    # A loss-driven search needs no tie-break; a trial that reported nothing has no score.
    assert trial_score(df, "val_loss", "min")[:2] == (0.38, pytest.approx(math.nan, nan_ok=True))
    assert math.isnan(trial_score(None, "val_accuracy", "max")[0])
    assert trial_score(_epochs([], []), "val_accuracy", "max")[2] == 0


def test_accuracy_ties_go_to_the_lower_validation_loss_and_failures_rank_last():
    def row(tid: str, best: float, loss: float) -> TrialRow:
        return TrialRow(tid, None, {}, best, 3, "finished", loss)

    rows = [
        row("failed", math.nan, math.nan),
        row("tied-worse-loss", 0.88, 0.40),
        row("lower", 0.86, 0.20),
        row("tied-better-loss", 0.88, 0.31),
        row("tied-no-loss", 0.88, math.nan),
    ]
    ranked = [t.trial_id for t in rank_trials(rows, "max")]
    assert ranked == ["tied-better-loss", "tied-worse-loss", "tied-no-loss", "lower", "failed"]
    assert [t.trial_id for t in rank_trials(rows[:3], "min")] == ["lower", "tied-worse-loss", "failed"]

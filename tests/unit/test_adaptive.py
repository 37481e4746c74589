"""Defaults that adapt to the corpus: enough optimizer steps per epoch, a warning on truncation."""

from __future__ import annotations

from jobs.config_loader import CONFIG_DIR, load_config
from pipeline.adaptive import MIN_BATCH, adapt_to_corpus, effective_batch_size, steps_per_epoch, truncation_warning
from schemas.features import LengthStats, Manifest, SplitInfo


def _manifest(train_rows: int, truncated: float = 0.0, max_length: int = 128) -> Manifest:
    split = SplitInfo(rows=train_rows, label_counts={}, digest="x", file="train.parquet")
    stats = LengthStats(p50=90.0, p95=400.0, max=2000.0, truncated_fraction=truncated)
    return Manifest.model_construct(
        splits={"train": split}, max_length=max_length, truncation_side="left", length_stats=stats
    )


def test_the_issue_corpus_gets_enough_steps():
    # 1,200 rows, batch 128, 2 workers: 5 steps per epoch (the issue); at least 50 after adapting
    assert steps_per_epoch(1200, 2, 128) == 5
    batch = effective_batch_size(1200, 2, 128, 50)
    assert batch == 12 and steps_per_epoch(1200, 2, batch) >= 50


def test_large_corpora_and_the_seed_config_are_unchanged():
    seed = load_config(CONFIG_DIR / "embedded.yaml")
    # the embedded corpus after deduplication: 13,891 training rows, 2 workers -> 55 steps of 128
    adapted, notes = adapt_to_corpus(seed, _manifest(13_891))
    assert adapted == seed and notes == []
    assert effective_batch_size(13_891, 2, 128, None) == 128


def test_tiny_corpora_stop_at_the_smallest_batch():
    assert effective_batch_size(100, 2, 128, 50) == MIN_BATCH


def test_adapting_says_what_it_changed():
    cfg = load_config(CONFIG_DIR / "embedded.yaml")
    adapted, notes = adapt_to_corpus(cfg, _manifest(1200, truncated=0.3))
    assert adapted.train.batch_size == 12 and cfg.train.batch_size == 128
    assert "train.batch_size 128 -> 12" in notes[0] and "5 optimizer steps" in notes[0]
    assert "30.0% of training rows are longer than max_length=128" in notes[1]


def test_truncation_warns_only_beyond_the_auto_share():
    assert truncation_warning(_manifest(1000, truncated=0.05)) is None
    assert "tokenizer.max_length=auto" in truncation_warning(_manifest(1000, truncated=0.18))

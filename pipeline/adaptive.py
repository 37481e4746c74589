"""Settings that adapt to the corpus once it is prepared: enough optimizer steps, honest lengths.

A config written for one corpus can starve another: batch 128 on 2 workers gives a 1,200-row
corpus 5 optimizer steps per epoch, and early stopping then fires before the model has learned
anything (training loss still 0.68). `adapt_to_corpus` shrinks the batch until every epoch makes
`train.min_steps_per_epoch` steps (never below MIN_BATCH rows), so that patience, which counts
validation checks (one per epoch), counts checks at least that many steps apart. It leaves a
config whose epochs are long enough unchanged (the seed's 13,891 rows on 2 workers make 55
steps of 128), and says what it changed, for the run's log and description.
"""

from __future__ import annotations

import logging

from schemas.config import JobConfig
from schemas.features import Manifest

log = logging.getLogger(__name__)

MIN_BATCH = 8  # below this, per-step noise and Python overhead outweigh the extra steps
TRUNCATION_WARN_FRACTION = 0.05  # max_length=auto keeps 95% whole by default; more than that is news


def steps_per_epoch(n_rows: int, num_workers: int, batch_size: int) -> int:
    """Optimizer steps of one epoch: every rank gets ceil(n / workers) rows (see loop.shard_indices)."""
    per_rank = -(-n_rows // num_workers) if n_rows else 0
    return -(-per_rank // batch_size)


def effective_batch_size(n_rows: int, num_workers: int, batch_size: int, min_steps: int | None) -> int:
    """The configured batch size, or the largest one (>= MIN_BATCH) that gives `min_steps` steps."""
    if not min_steps or steps_per_epoch(n_rows, num_workers, batch_size) >= min_steps:
        return batch_size
    per_rank = -(-n_rows // num_workers)
    return max(min(batch_size, per_rank // min_steps), MIN_BATCH)


def truncation_warning(manifest: Manifest) -> str | None:
    """A sentence when many training rows lose tokens to max_length, else None."""
    stats = manifest.length_stats
    frac = stats.truncated_fraction
    if frac <= TRUNCATION_WARN_FRACTION:
        return None
    end = "start" if manifest.truncation_side == "left" else "end"
    return (
        f"{100 * frac:.1f}% of training rows are longer than max_length={manifest.max_length} tokens and lose "
        f"their {end} (median {stats.p50:.0f}, p95 {stats.p95:.0f}, longest {stats.max:.0f}); set "
        "tokenizer.max_length=auto (a percentile, up to tokenizer.max_length_limit) or a larger number"
    )


def adapt_to_corpus(cfg: JobConfig, manifest: Manifest) -> tuple[JobConfig, list[str]]:
    """(config to train with, notes on what was adapted or should be). Logs each note."""
    notes = []
    n_train = manifest.splits["train"].rows
    tc = cfg.train
    batch = effective_batch_size(n_train, cfg.scaling.num_workers, tc.batch_size, tc.min_steps_per_epoch)
    if batch != tc.batch_size:
        before = steps_per_epoch(n_train, cfg.scaling.num_workers, tc.batch_size)
        after = steps_per_epoch(n_train, cfg.scaling.num_workers, batch)
        notes.append(
            f"train.batch_size {tc.batch_size} -> {batch}: {n_train:,} training rows on "
            f"{cfg.scaling.num_workers} worker(s) made {before} optimizer steps per epoch, now {after} "
            f"(train.min_steps_per_epoch={tc.min_steps_per_epoch})"
        )
        cfg = cfg.model_copy(update={"train": tc.model_copy(update={"batch_size": batch})})
    warning = truncation_warning(manifest)
    if warning:
        notes.append(warning)
    for note in notes:
        log.warning(note)
    return cfg, notes

"""The data stage: source -> clean -> split -> tokenizer -> encode -> store (or reuse the stored result).

The driver plans and merges; the stages in `pipeline.data.stages` do the work, inline for small
corpora or as Ray tasks for large ones (data.prepare_mode), with the same functions and the same
result. What the driver holds never grows with the corpus: the list of input shards, per-shard
counts, and the tokenizer's bounded training sample (streamed one partition at a time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import NamedTuple

import numpy as np
from tokenizers import Tokenizer

from pipeline.cluster import ray_session
from pipeline.data.clean import (
    CleanReport,
    check_drop_fraction,
    check_label_kinds,
    check_unknown,
    label_warnings,
    name_labels,
    quote_warnings,
)
from pipeline.data.sources import Plan, digest_of, plan_units, with_cuts
from pipeline.data.split import check_splits, plan_split
from pipeline.data.stages import (
    EncodeSettings,
    SplitPart,
    SplitPlan,
    encode_partition,
    fingerprint,
    map_unit,
    reduce_partition,
    runner_for,
    sample_partition,
    tokenizer_settings,
)
from pipeline.data.store import (
    StorePath,
    data_dir,
    discard,
    is_complete,
    json_bytes,
    load_manifest,
    new_staging_dir,
    publish,
    remove_stale_staging,
    write_file,
)
from pipeline.data.tokenizer import PAD_TOKEN, UNK_TOKEN, tokenizer_digest, train_tokenizer
from pipeline.errors import DataValidationError
from schemas.config import DataConfig, JobConfig, TokenizerConfig
from schemas.features import (
    ID_BYTES,
    SPLITS,
    CleaningReport,
    InputFile,
    LengthStats,
    Manifest,
    SourceInfo,
    SplitInfo,
    TokenizerSettings,
    ids_mib,
)

log = logging.getLogger(__name__)

# Bump when the stored format or any stage's behaviour changes: old caches then stop matching.
PIPELINE_VERSION = "3"  # 3: hash split, shuffle dedup, sampled tokenizer, sharded splits
PARTITION_BYTES = 8 << 20  # data.partitions unset: one hash partition per 8 MiB of raw input
# Where and in how many tasks it runs does not change the result.
_NOT_IN_KEY = {"paths", "prepare_mode", "ray_min_input_mb", "split_file_mb"}


@dataclass(frozen=True)
class PreparedData:
    path: StorePath  # a local Path, or a str URL when output_root is shared storage (s3://...)
    manifest: Manifest
    reused: bool


def cache_key(input_digest: str, cfg: JobConfig) -> str:
    """Content digest of the raw inputs + every data and tokenizer setting + the pipeline version."""
    data = cfg.data.model_dump(mode="json", exclude=_NOT_IN_KEY)  # the content digest stands for the paths
    payload = {
        "pipeline": PIPELINE_VERSION,
        "inputs": input_digest,
        "data": data,
        "tokenizer": cfg.tokenizer.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def choose_mode(cfg: JobConfig, input_bytes: int) -> str:
    """data.prepare_mode, with 'auto' decided by the raw input size."""
    if cfg.data.prepare_mode != "auto":
        return cfg.data.prepare_mode
    return "ray" if input_bytes >= cfg.data.ray_min_input_mb * (1 << 20) else "local"


def choose_partitions(cfg: JobConfig, input_bytes: int) -> int:
    """data.partitions, or one per PARTITION_BYTES of input: a function of the input, never of the mode."""
    return cfg.data.partitions or max(1, min(1024, math.ceil(input_bytes / PARTITION_BYTES)))


def _percentiles(values: np.ndarray, counts: np.ndarray, qs: list[float]) -> list[float]:
    """np.percentile's linear interpolation, computed from (value, count) pairs instead of every row."""
    n = int(counts.sum())
    cum = np.cumsum(counts)

    def at(k: int) -> float:
        return float(values[np.searchsorted(cum, k, side="right")])

    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(at(lo) + (pos - lo) * (at(hi) - at(lo)))
    return out


def length_stats(parts: list[SplitPart], max_length: int) -> LengthStats:
    """Token-count percentiles of a whole split, merged exactly from the partitions' histograms."""
    merged: Counter = Counter()
    for part in parts:
        merged.update(dict(zip(part.n_tokens[0].tolist(), part.n_tokens[1].tolist(), strict=True)))
    zero = sum(p.zero_tokens for p in parts)
    if not merged:
        return LengthStats(zero_token_rows=zero)
    values = np.array(sorted(merged), dtype=np.int64)
    counts = np.array([merged[v] for v in values], dtype=np.int64)
    p50, p90, p95, p99 = _percentiles(values, counts, [50, 90, 95, 99])
    truncated = float(counts[values > max_length].sum() / counts.sum())
    return LengthStats(
        p50=p50, p90=p90, p95=p95, p99=p99, max=float(values[-1]), truncated_fraction=truncated, zero_token_rows=zero
    )


def choose_max_length(tokenizer: Tokenizer, sample: list, tk: TokenizerConfig) -> tuple[int, str]:
    """tokenizer.max_length, or for 'auto' the smallest length covering the configured percentile of the
    tokenizer's training sample (the whole training split when it is smaller than train_sample_rows)."""
    if tk.max_length != "auto":
        return int(tk.max_length), "config"
    counts = np.concatenate(
        [
            np.fromiter(
                (len(e.ids) for e in tokenizer.encode_batch(texts.to_pylist(), add_special_tokens=False)),
                dtype=np.int64,
                count=len(texts),
            )
            for texts in sample
        ]
        + [np.zeros(0, np.int64)]
    )
    counts = counts[counts > 0]
    covered = int(math.ceil(np.percentile(counts, tk.max_length_percentile, method="higher"))) if len(counts) else 1
    chosen = min(max(covered, 1), tk.max_length_limit)
    return (
        chosen,
        f"auto: p{tk.max_length_percentile:g} of the tokenizer sample = {covered}, limit {tk.max_length_limit}",
    )


def _clean(runner, plan: Plan, cfg: JobConfig, partitions: int):
    """map + reduce -> (refs to each partition's unique rows, their label counts, merged report, label names)."""
    d = cfg.data
    maps = [
        runner.submit(
            map_unit,
            u,
            d,
            plan.fmt,
            partitions,
            cfg.tokenizer.truncation_side,
            runner.put(plan.tables[u.index]) if u.index in plan.tables else None,
            num_returns=partitions + 1,
        )
        for u in plan.units
    ]
    report, unknown, kinds, where = CleanReport(), Counter(), {}, {}
    for stats in runner.get([m[0] for m in maps]):  # small: counts only; a bad shard raises here
        report.merge(stats.report)
        unknown.update(stats.unknown)
        for kind, value in stats.kinds.items():
            kinds.setdefault(kind, value)
            where.setdefault(kind, stats.where[kind])
    integer_labels = check_label_kinds(kinds, d, where if len(kinds) > 1 else None)
    check_unknown(unknown, d, report)
    reduced = [runner.submit(reduce_partition, *[m[p + 1] for m in maps], num_returns=2) for p in range(partitions)]
    del maps
    counts = []
    for stats in runner.get([r[1] for r in reduced]):
        report.merge(stats.report)
        counts.append(stats.label_counts)
    check_drop_fraction(report, d)
    found = {label for c in counts for by_label in c.values() for label, n in by_label.items() if n}
    rows = sum(n for c in counts for by_label in c.values() for n in by_label.values())
    names = name_labels(found, integer_labels, d, plan.label_names, report, rows)
    return [r[0] for r in reduced], counts, report, names


def _plan_splits(counts: list[dict[str, Counter]], plan: Plan, cfg: JobConfig) -> tuple[list[SplitPlan], int, int]:
    """Per partition: the quota of each label for test/validation and its rank offset (see split.py);
    and the training rows and all rows expected after data.max_rows."""
    given = {u.split for u in plan.units}
    pool = sum((c["pool"] for c in counts), Counter())
    quota = plan_split(dict(pool), "validation" in given, "test" in given, cfg.data)
    by_split = {
        "test": sum((c["test"] for c in counts), Counter()),
        "validation": sum((c["validation"] for c in counts), Counter()),
        "train": Counter(),
    }
    for label, n in pool.items():
        n_test, n_val = quota[label]
        by_split["test"][label] += n_test
        by_split["validation"][label] += n_val
        by_split["train"][label] += n - n_test - n_val
    check_splits(by_split, given & {"validation", "test"})
    total = sum(sum(c.values()) for c in by_split.values())
    keep = min(1.0, cfg.data.max_rows / total) if cfg.data.max_rows else 1.0
    plans, offset = [], Counter()
    for c in counts:
        plans.append(SplitPlan(quota, dict(offset), keep))
        offset.update(c["pool"])
    return plans, int(sum(by_split["train"].values()) * keep), math.ceil(total * keep)


TRUNCATED_WARN_FRACTION = 0.1  # warn when more training rows than this are cut by max_length


def check_memory(rows: int, max_length: int, d: DataConfig) -> None:
    """Stop before encoding when rows x max_length int32 ids exceed data.memory_budget_mb (default: half the
    available memory; each training worker holds its whole split). Raises DataValidationError."""
    import psutil

    need = ids_mib(rows, max_length)
    if d.memory_budget_mb is not None:
        budget, what = d.memory_budget_mb, f"data.memory_budget_mb={d.memory_budget_mb:g}"
    else:
        budget = psutil.virtual_memory().available / 2 / (1 << 20)
        what = "half the available memory; set data.memory_budget_mb to change it"
    if need > budget:
        raise DataValidationError(
            f"encoding {rows} rows at tokenizer.max_length={max_length} needs about {need:,.1f} MiB "
            f"({rows} x {max_length} x {ID_BYTES} bytes), above the budget of {budget:,.1f} MiB "
            f"({what}); lower tokenizer.max_length (or set it to 'auto'), or set data.max_rows"
        )


def truncation_warnings(train: LengthStats, max_length: int, chosen_by: str) -> list[str]:
    """A warning (for the log and the manifest) when max_length cuts many training rows."""
    if train.truncated_fraction <= TRUNCATED_WARN_FRACTION:
        return []
    text = (
        f"{train.truncated_fraction:.1%} of training rows are truncated at tokenizer.max_length={max_length} "
        f"({chosen_by}; p95 {train.p95:g}, p99 {train.p99:g} tokens): raise tokenizer.max_length or "
        "tokenizer.max_length_percentile if the cut text matters"
    )
    return [text]


class TrainedTokenizer(NamedTuple):
    tokenizer: Tokenizer
    max_length: int
    chosen_by: str
    sample_rows: int  # training rows it was trained on


def _train_tokenizer(runner, kept: list, plans: list[SplitPlan], n_train: int, tk: TokenizerConfig) -> TrainedTokenizer:
    """Train on a seeded sample of about tokenizer.train_sample_rows training rows, streamed partition by
    partition into `train_from_iterator`: the driver holds one partition's sample at a time."""
    fraction = min(1.0, tk.train_sample_rows / max(n_train, 1))
    refs = [runner.submit(sample_partition, k, p, fraction) for k, p in zip(kept, plans, strict=True)]
    used = 0

    def texts():
        nonlocal used
        for ref in refs:
            sample = runner.get(ref)
            used += len(sample)
            yield from sample.to_pylist()

    tokenizer = train_tokenizer(texts(), tk)
    max_length, chosen_by = choose_max_length(tokenizer, (runner.get(r) for r in refs), tk)
    return TrainedTokenizer(tokenizer, max_length, chosen_by, used)


def content_digest(tokenizer_digest: str, infos: dict[str, SplitInfo]) -> str:
    """A prepared dataset's content: its tokenizer and the rows of every split (Manifest.content_digest)."""
    return hashlib.sha256(json.dumps([tokenizer_digest] + [infos[x].digest for x in SPLITS]).encode()).hexdigest()


def split_info(parts: list[SplitPart], names: tuple[str, ...]) -> SplitInfo:
    shards = [s for p in parts for s in p.shards]
    counts = sum((p.label_counts for p in parts), np.zeros(len(names), np.int64))
    digest = hashlib.sha256(json.dumps([s.digest for s in shards]).encode()).hexdigest()
    return SplitInfo(
        rows=sum(s.rows for s in shards),
        label_counts={n: int(c) for n, c in zip(names, counts, strict=True)},
        digest=digest,
        shards=shards,
    )


def _finish_report(report: CleanReport, infos: dict[str, SplitInfo], encoded: list[dict[str, SplitPart]]) -> None:
    report.dropped["zero_tokens"] += sum(p.zero_tokens for e in encoded for p in e.values())
    report.rows_out = sum(i.rows for i in infos.values())
    report.rows_per_split = {s: i.rows for s, i in infos.items()}
    report.label_proportions = {
        s: {k: round(v / i.rows, 4) if i.rows else 0.0 for k, v in i.label_counts.items()} for s, i in infos.items()
    }


@dataclass(frozen=True)
class _Run:
    """What one preparation has decided before it writes: the key, the inputs, how it runs."""

    key: str
    inputs: list[dict]
    input_digest: str
    final: StorePath
    mode: str
    partitions: int


def _encode_and_store(
    runner,
    cfg: JobConfig,
    run: _Run,
    kept: list,
    plans: list[SplitPlan],
    trained: TrainedTokenizer,
    names: tuple[str, ...],
    report: CleanReport,
    staging: StorePath,
) -> Manifest:
    """encode tasks write the shards; the driver checks the merged counts, then writes the small files."""
    tokenizer, max_length, chosen_by, sample_used = trained
    tk = cfg.tokenizer
    tok_digest = tokenizer_digest(tokenizer)
    settings = EncodeSettings(
        names,
        max_length,
        tokenizer.token_to_id(PAD_TOKEN),
        tk.padding_side,
        tk.truncation_side,
        int(cfg.data.shard_mb * (1 << 20)),
        tok_digest,
    )
    tok_ref = runner.put(tokenizer)
    refs = [
        runner.submit(encode_partition, i, k, p, tok_ref, settings, staging)
        for i, (k, p) in enumerate(zip(kept, plans, strict=True))
    ]
    try:
        encoded = runner.get(refs)
    except BaseException:
        runner.settle(refs)  # no task may still write when the caller removes the staging folder
        raise
    infos = {s: split_info([e[s] for e in encoded], names) for s in SPLITS}
    _finish_report(report, infos, encoded)
    check_drop_fraction(report, cfg.data)
    check_splits({s: Counter(i.label_counts) for s, i in infos.items()}, set())
    stats = {s: length_stats([e[s] for e in encoded], max_length) for s in SPLITS}
    warnings = [
        *label_warnings(names),
        *quote_warnings(report),
        *truncation_warnings(stats["train"], max_length, chosen_by),
    ]
    for text in warnings:  # in the log now, in the manifest for later
        log.warning(text)
    cleaning = report.to_model()
    write_file(staging, "tokenizer.json", tokenizer.to_str().encode("utf-8"))
    write_file(staging, "cleaning_report.json", json_bytes(cleaning.model_dump(mode="json")))
    manifest = _manifest(cfg, run, names, tokenizer, settings, chosen_by, infos, stats, cleaning, sample_used, warnings)
    write_file(staging, "manifest.json", json_bytes(manifest.model_dump(mode="json")))
    return manifest


def prepare(cfg: JobConfig, force: bool = False) -> PreparedData:
    """Prepare the corpus under `<output_root>/data/<key>` or reuse a complete earlier result.

    Raises UserInputError / DataValidationError (bad config or corpus) before anything is published.
    """
    plan = plan_units(cfg.data)
    mode = choose_mode(cfg, plan.input_bytes)
    # Ray mode joins the job's cluster (ray.address / RAY_ADDRESS) or starts a local one for this call.
    with ray_session(cfg.ray) if mode == "ray" else nullcontext():
        return _prepare(cfg, plan, mode, force)


def _prepare(cfg: JobConfig, plan: Plan, mode: str, force: bool) -> PreparedData:
    runner = runner_for(mode)
    lineage, cuts = fingerprint(runner, plan.units, cfg.data, plan.fmt)
    inputs = plan.lineage + lineage
    plan = with_cuts(plan, cuts)
    key = cache_key(digest_of(inputs), cfg)
    run = _Run(
        key, inputs, digest_of(inputs), data_dir(cfg.output_root, key), mode, choose_partitions(cfg, plan.input_bytes)
    )
    if not force and is_complete(run.final):
        log.info("reusing prepared data %s", run.final)
        return PreparedData(run.final, load_manifest(run.final), reused=True)
    remove_stale_staging(run.final)

    t0 = time.perf_counter()
    kept, counts, report, names = _clean(runner, plan, cfg, run.partitions)
    plans, n_train, n_rows = _plan_splits(counts, plan, cfg)
    trained = _train_tokenizer(runner, kept, plans, n_train, cfg.tokenizer)
    check_memory(n_rows, trained.max_length, cfg.data)
    staging = new_staging_dir(run.final)
    try:
        manifest = _encode_and_store(runner, cfg, run, kept, plans, trained, names, report, staging)
        publish(staging, run.final)
    except BaseException:  # an error, disk full, Ctrl-C: remove what this run wrote now, not in 6 hours
        discard(staging)
        raise
    log.info(
        "prepared %s in %.1fs (%s, %d partitions): %s",
        run.final,
        time.perf_counter() - t0,
        mode,
        run.partitions,
        {s: i.rows for s, i in manifest.splits.items()},
    )
    return PreparedData(run.final, manifest, reused=False)


def _manifest(
    cfg: JobConfig,
    run: _Run,
    names: tuple[str, ...],
    tokenizer: Tokenizer,
    s: EncodeSettings,
    chosen_by: str,
    infos: dict[str, SplitInfo],
    stats: dict[str, LengthStats],
    cleaning: CleaningReport,
    sample_used: int,
    warnings: list[str],
) -> Manifest:
    d, tk = cfg.data, cfg.tokenizer
    content = content_digest(s.tokenizer_digest, infos)
    return Manifest(
        cache_key=run.key,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=SourceInfo(
            kind=d.source,
            name=d.name,
            config_name=d.config_name,
            revision=d.revision,
            paths=list(d.paths),
            text_column=d.text_column if isinstance(d.text_column, str) else list(d.text_column),
            label_column=d.label_column,
        ),
        inputs=[InputFile(**i) for i in run.inputs],
        input_digest=run.input_digest,
        label_names=list(names),
        vocab_size=tokenizer.get_vocab_size(),
        pad_id=s.pad_id,
        unk_id=tokenizer.token_to_id(UNK_TOKEN),
        max_length=s.max_length,
        padding_side=tk.padding_side,
        truncation_side=tk.truncation_side,
        tokenizer_file="tokenizer.json",
        tokenizer_digest=s.tokenizer_digest,
        splits=infos,
        length_stats=stats["train"],
        cleaning=cleaning,
        content_digest=content,
        versions={p: version(p) for p in ("datasets", "tokenizers", "pyarrow", "pandas")},
        pipeline_version=PIPELINE_VERSION,
        tokenizer_settings=TokenizerSettings(**tokenizer_settings(tk), sample_rows_used=sample_used),
        max_length_chosen_by=chosen_by,
        length_stats_by_split=stats,
        max_chars=d.max_chars,
        uri=str(run.final),
        prepare_mode=run.mode,
        partitions=run.partitions,
        warnings=warnings,
    )

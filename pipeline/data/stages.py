"""The prepare stages as pure functions over Arrow tables, and the two ways of running them.

    fingerprint   per input shard: sha256 of its bytes (the cache key), encoding check
    map           per input shard: load -> row checks -> hash each text -> cut into P partitions
    reduce        per partition: every copy of a text meets here -> duplicates, conflicts, split
    sample        per partition: a seeded sample of the training rows for the tokenizer
    encode        per partition: tokenize, left-pad, write Parquet shards of each split

`LocalRunner` calls them inline in the driver (small corpora: no cluster, no serialization);
`RayRunner` submits the very same functions as Ray tasks: the map task returns its P partitions
as separate objects (`num_returns`) and reduce task p receives the p-th object of every map
task, which is Ray's own hash-partitioned shuffle; no data passes through the driver. Each
function takes its inputs explicitly (config, tokenizer) and touches no global state.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset
from tokenizers import Tokenizer

from pipeline.data.clean import CheckedRows, CleanReport, check_rows, dedup_partition
from pipeline.data.encode import encode_table
from pipeline.data.sources import Unit, fingerprint_unit, load_unit
from pipeline.data.split import SPLIT_NAMES, TRAIN, partition_of, split_codes, text_hash, uniform
from pipeline.data.store import StorePath, write_file
from pipeline.errors import UserInputError
from schemas.config import DataConfig, TokenizerConfig
from schemas.features import ShardInfo, encoded_features

SUBSAMPLE_SALT, TOKENIZER_SAMPLE_SALT = 1, 2


# -- map ---------------------------------------------------------------------------------------------


@dataclass
class MapStats:
    report: CleanReport
    unknown: Counter
    kinds: dict[str, object]
    where: dict[str, str]  # label kind -> the input it was first seen in


def map_unit(
    unit: Unit, cfg: DataConfig, fmt: str, partitions: int, truncation_side: str, table: pa.Table | None = None
) -> tuple[Any, ...]:
    """One input shard -> (MapStats, partition 0, ..., partition P-1), each partition (text, label, prio, h).
    A shard of several files (small ones, grouped by plan_units) is read and checked file by file, so that
    every message and count names its file."""
    files = [unit] if unit.kind != "file" or len(unit.uris) == 1 else [replace(unit, uris=(u,)) for u in unit.uris]
    stats = MapStats(CleanReport(), Counter(), {}, {})
    tables = []
    for one in files:
        loaded, dropped, examples = load_unit(one, cfg, fmt, table)
        checked: CheckedRows = check_rows(loaded, cfg, one.split, truncation_side, one.where)
        checked.report.dropped.update(dropped)
        checked.report.examples.update(examples)
        checked.report.rows_in += sum(dropped.values())
        stats.report.merge(checked.report)
        stats.unknown.update(checked.unknown)
        for kind, value in checked.kinds.items():
            stats.kinds.setdefault(kind, value)
            stats.where.setdefault(kind, one.where)
        tables.append(checked.table)
    rows = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    h = text_hash(rows.column("text"), cfg.seed)
    rows = rows.append_column("h", pa.array(h, pa.uint64()))
    part = partition_of(h, partitions)
    order = np.argsort(part, kind="stable")
    ends = np.cumsum(np.bincount(part, minlength=partitions))
    starts = np.concatenate(([0], ends[:-1]))
    # `take` gives each partition its own buffers: a slice would carry (and serialize) the whole table.
    return (stats, *[rows.take(pa.array(order[s:e])) for s, e in zip(starts, ends, strict=True)])


# -- reduce ---------------------------------------------------------------------------------------


@dataclass
class ReduceStats:
    report: CleanReport
    label_counts: dict[str, Counter] = field(default_factory=dict)  # source split (test/validation/pool) -> label


def reduce_partition(*parts: pa.Table) -> tuple[pa.Table, ReduceStats]:
    """Every copy of the partition's texts -> unique rows sorted by (h, text), and counts per label."""
    rows = pa.concat_tables(parts)
    kept, report = dedup_partition(rows)
    stats = ReduceStats(report)
    prio = kept.column("prio").to_numpy()
    for code, name in ((0, "test"), (1, "validation"), (2, "pool")):
        counts = pc.value_counts(kept.column("label").filter(pa.array(prio == code))).to_pylist()
        stats.label_counts[name] = Counter({c["values"]: c["counts"] for c in counts})
    return kept, stats


# -- split + sample ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitPlan:
    quota: dict[str, tuple[int, int]]  # label -> pool rows carved to (test, validation)
    offset: dict[str, int]  # label -> pool rows in earlier partitions
    keep_fraction: float  # data.max_rows subsample


def with_splits(kept: pa.Table, plan: SplitPlan) -> tuple[pa.Table, np.ndarray]:
    """The partition's rows after the subsample, and their split codes."""
    codes = split_codes(kept.column("label"), kept.column("prio").to_numpy(), plan.quota, plan.offset)
    if plan.keep_fraction < 1.0:
        keep = uniform(kept.column("h").to_numpy(), SUBSAMPLE_SALT) < plan.keep_fraction
        kept, codes = kept.filter(pa.array(keep)), codes[keep]
    return kept, codes


def sample_partition(kept: pa.Table, plan: SplitPlan, sample_fraction: float) -> pa.Array:
    """Texts of the partition's training rows drawn with probability `sample_fraction` (seeded by the hash)."""
    kept, codes = with_splits(kept, plan)
    train = kept.filter(pa.array(codes == TRAIN))
    if sample_fraction < 1.0:
        train = train.filter(pa.array(uniform(train.column("h").to_numpy(), TOKENIZER_SAMPLE_SALT) < sample_fraction))
    return train.column("text").combine_chunks()


# -- encode ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeSettings:
    label_names: tuple[str, ...]
    max_length: int
    pad_id: int
    padding_side: str
    truncation_side: str
    shard_bytes: int
    tokenizer_digest: str


@dataclass
class SplitPart:
    shards: list[ShardInfo] = field(default_factory=list)
    label_counts: np.ndarray | None = None
    n_tokens: tuple[np.ndarray, np.ndarray] | None = None  # (distinct token counts, rows with each)
    zero_tokens: int = 0


def encode_rows(table: pa.Table, tokenizer: Tokenizer, s: EncodeSettings, name: str) -> pa.Table:
    """(text, label id) rows -> the stored Arrow table, through `Dataset.map` with Arrow batches."""
    if table.num_rows == 0:  # `map` over no rows returns no new columns
        return (
            encoded_features(s.max_length)
            .arrow_schema.empty_table()
            .select(["text", "label", "input_ids", "length", "n_tokens"])
        )
    ds = (
        Dataset(table)
        .with_format("arrow")
        .map(
            encode_table,
            batched=True,
            batch_size=4096,
            fn_kwargs={
                "tokenizer": tokenizer,
                "max_length": s.max_length,
                "pad_id": s.pad_id,
                "padding_side": s.padding_side,
                "truncation_side": s.truncation_side,
            },
            features=encoded_features(s.max_length),
            new_fingerprint=f"encode-{name}-{s.tokenizer_digest[:16]}-{s.max_length}-{s.padding_side}"
            f"-{s.truncation_side}-{table.num_rows}",  # skip hashing the tokenizer object
        )
    )
    return ds.data.table.select(["text", "label", "input_ids", "length", "n_tokens"])


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def encode_partition(
    index: int, kept: pa.Table, plan: SplitPlan, tokenizer: Tokenizer, s: EncodeSettings, staging: StorePath
) -> dict[str, SplitPart]:
    """Encode one partition's rows and write each split's Parquet shards (`<split>/part-<p>-<k>.parquet`).

    Rows whose text becomes zero tokens are dropped here and counted (`zero_tokens`). A shard's digest
    is the sha256 of its Parquet bytes: the same rows and versions give the same file, byte for byte.
    """
    kept, split = with_splits(kept, plan)
    ids = pc.index_in(kept.column("label"), value_set=pa.array(list(s.label_names), pa.string()))
    rows = pa.table({"text": kept.column("text"), "label": pc.cast(ids, pa.int64())})
    out: dict[str, SplitPart] = {}
    for code, name in enumerate(SPLIT_NAMES):
        table = encode_rows(rows.filter(pa.array(split == code)), tokenizer, s, f"{name}-{index}")
        n_tokens = table.column("n_tokens").to_numpy()
        part = SplitPart(zero_tokens=int((n_tokens == 0).sum()))
        if part.zero_tokens:
            table = table.filter(pa.array(n_tokens > 0))
            n_tokens = n_tokens[n_tokens > 0]
        part.n_tokens = np.unique(n_tokens, return_counts=True)
        part.label_counts = np.bincount(table.column("label").to_numpy(), minlength=len(s.label_names))
        per_row = max(table.nbytes // max(table.num_rows, 1), 1)
        rows_per_shard = max(int(s.shard_bytes // per_row), 1)
        for k, start in enumerate(range(0, table.num_rows, rows_per_shard)):
            shard = table.slice(start, rows_per_shard)
            data = parquet_bytes(shard)
            file = f"{name}/part-{index:05d}-{k:03d}.parquet"
            write_file(staging, file, data)
            part.shards.append(ShardInfo(file=file, rows=shard.num_rows, digest=hashlib.sha256(data).hexdigest()))
        out[name] = part
    return out


# -- runners -----------------------------------------------------------------------------------------


class LocalRunner:
    """Runs each stage inline, in order, in this process."""

    mode = "local"

    def submit(self, fn, *args, num_returns: int = 1):
        result = fn(*args)
        return list(result) if num_returns > 1 else result

    def get(self, refs):
        return refs

    def put(self, obj):
        return obj

    def free(self, refs) -> None:
        pass

    def settle(self, refs) -> None:
        pass  # inline: nothing still runs


class RayRunner:
    """Runs each stage as a Ray task (1 CPU each) on the job's cluster; results stay in the object store."""

    mode = "ray"

    def __init__(self) -> None:
        import ray

        self._ray = ray
        self._remote: dict[Any, Any] = {}

    def submit(self, fn, *args, num_returns: int = 1):
        if fn not in self._remote:
            # The tokenizers library would start one thread per core in each task; a task is one CPU.
            env = {"env_vars": {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}}
            self._remote[fn] = self._ray.remote(num_cpus=1, max_retries=2, runtime_env=env)(fn)
        return self._remote[fn].options(num_returns=num_returns).remote(*args)

    def get(self, refs):
        from ray.exceptions import RayTaskError

        try:
            return self._ray.get(refs)
        except RayTaskError as e:  # a bad shard: the task's own message (file, line, value), not a traceback
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserInputError):
                raise type(cause)(str(cause)) from None
            raise

    def put(self, obj):
        return self._ray.put(obj)

    def free(self, refs) -> None:
        pass  # dropping the last reference frees the objects

    def settle(self, refs, timeout_s: float = 60.0) -> None:
        """After one task failed: cancel the others and wait until none runs, so that no task writes into
        a staging folder after the driver removed it."""
        for ref in refs:
            try:
                self._ray.cancel(ref)
            except Exception:  # noqa: BLE001 - already finished or gone: nothing to cancel
                pass
        self._ray.wait(refs, num_returns=len(refs), timeout=timeout_s)


def runner_for(mode: str):
    return RayRunner() if mode == "ray" else LocalRunner()


def fingerprint(runner, units: list[Unit], cfg: DataConfig, fmt: str) -> tuple[list[dict], dict[str, tuple]]:
    """Lineage entries of every input file, hashed where the runner runs (tasks in Ray mode), and where the
    parts of each large text file start ({uri: cuts}, for sources.with_cuts), found by the same pass."""
    refs = [runner.submit(fingerprint_unit, u, cfg, fmt) for u in units]
    lineage, cuts = [], {}
    for unit, entries in zip(units, runner.get(refs), strict=True):
        for entry in entries:
            if "_cuts" in entry:
                cuts[unit.uris[0]] = entry.pop("_cuts")
            lineage.append(entry)
    return lineage, cuts


def tokenizer_settings(tk: TokenizerConfig) -> dict:
    return tk.model_dump(
        mode="json",
        include={"kind", "vocab_size", "min_frequency", "nfkc", "lowercase", "max_length", "train_sample_rows"},
    )

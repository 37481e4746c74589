"""Fresh train/validation splits of a prepared dataset, for choosing among a search's best trials.

A search of dozens of trials scored on one validation split of a few hundred rows picks, among
configurations that are about equally good, the one that fitted those rows best: its validation
score overstates it (measured here: the winners led the baseline on validation by 2.7-3.9 points and
trailed it on test by 3.3-3.9). Scoring the top few again on splits they were not chosen on takes
that luck out (pipeline.selection).

A re-split pools the training and validation rows, already encoded, and draws a new validation
split of the same size and the same label counts (stratified, seeded); the test split is copied
unchanged and never read by the selection. The tokenizer is the original one (trained on the
original training split, so it has seen some rows of the new validation split: its vocabulary, not
their labels). Published like any prepared dataset (staging + `_COMPLETE`, under
`<output_root>/data/<key>-resplit-<seed>-<index>`) and reused when complete.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pyarrow as pa

from pipeline.data.prepare import PreparedData, content_digest, length_stats, split_info
from pipeline.data.stages import SplitPart, parquet_bytes
from pipeline.data.store import (
    StorePath,
    copy_file,
    data_dir,
    discard,
    is_complete,
    json_bytes,
    load_manifest,
    new_staging_dir,
    publish,
    read_columns,
    remove_stale_staging,
    write_file,
)
from schemas.features import Manifest, ShardInfo

log = logging.getLogger(__name__)

COLUMNS = ["text", "label", "input_ids", "length", "n_tokens"]


def resplit_key(manifest: Manifest, seed: int, index: int) -> str:
    return f"{manifest.cache_key}-resplit-{seed}-{index}"


def validation_rows(labels: np.ndarray, per_label: dict[int, int], seed: int, index: int) -> np.ndarray:
    """Sorted row numbers of a new validation split: `per_label[c]` rows of each label c, drawn at
    random (seeded by (seed, index)) from the pooled rows. Raises ValueError if a label has too few."""
    rng = np.random.default_rng([seed, index])
    picked = []
    for code, n in sorted(per_label.items()):
        rows = np.flatnonzero(labels == code)
        if n > len(rows):
            raise ValueError(f"label {code}: {n} validation rows wanted, {len(rows)} pooled")
        picked.append(rng.choice(rows, size=n, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def resplit(path: StorePath, output_root: StorePath, seed: int, index: int) -> PreparedData:
    """Re-split number `index` of the prepared dataset at `path` (see the module doc); reused if done."""
    manifest = load_manifest(path)
    final = data_dir(output_root, resplit_key(manifest, seed, index))
    if is_complete(final):
        return PreparedData(final, load_manifest(final), reused=True)
    remove_stale_staging(final)
    pooled = pa.concat_tables([read_columns(path, s, COLUMNS) for s in ("train", "validation")])
    labels = pooled.column("label").to_numpy()
    names = manifest.label_names
    per_label = {names.index(n): c for n, c in manifest.splits["validation"].label_counts.items() if c}
    val = validation_rows(labels, per_label, seed, index)
    is_val = np.zeros(len(labels), bool)
    is_val[val] = True
    staging = new_staging_dir(final)
    try:
        splits, stats = {}, {}
        for name, table in (("train", pooled.filter(pa.array(~is_val))), ("validation", pooled.take(pa.array(val)))):
            splits[name], stats[name] = _write_split(staging, name, table, names, manifest.max_length)
        for shard in manifest.splits["test"].shards:
            copy_file(path, staging, shard.file)
        splits["test"] = manifest.splits["test"]
        for name in (manifest.tokenizer_file, manifest.cleaning_report_file):
            copy_file(path, staging, name)
        content = content_digest(manifest.tokenizer_digest, splits)
        out = manifest.model_copy(
            update={
                "cache_key": resplit_key(manifest, seed, index),
                "splits": splits,
                "length_stats": stats["train"],
                "length_stats_by_split": {**manifest.length_stats_by_split, **stats},
                "content_digest": content,
                "uri": str(final),
            }
        )
        write_file(staging, "manifest.json", json_bytes(out.model_dump(mode="json")))
        published = publish(staging, final)
    except BaseException:
        discard(staging)
        raise
    log.info("re-split %d of %s: %d training / %d validation rows", index, path, len(labels) - len(val), len(val))
    return PreparedData(published, load_manifest(published), reused=False)


def _write_split(staging: StorePath, name: str, table: pa.Table, names: list[str], max_length: int):
    data = parquet_bytes(table)
    file = f"{name}/part-00000-000.parquet"
    write_file(staging, file, data)
    part = SplitPart(
        shards=[ShardInfo(file=file, rows=table.num_rows, digest=hashlib.sha256(data).hexdigest())],
        label_counts=np.bincount(table.column("label").to_numpy(), minlength=len(names)),
        n_tokens=np.unique(table.column("n_tokens").to_numpy(), return_counts=True),
    )
    return split_info([part], tuple(names)), length_stats([part], max_length)

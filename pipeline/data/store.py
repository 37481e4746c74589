"""Atomic storage of prepared data, keyed by content, and fast reads for workers.

Layout of one prepared dataset, `<output_root>/data/<key>/`:
  train/part-00000-000.parquet ...                 encoded shards of each split (schemas.features),
  validation/... test/...                          listed with rows and digests in the manifest
  tokenizer.json                                   the trained tokenizer
  cleaning_report.json                             drop counts per reason
  manifest.json                                    schemas.features.Manifest
  _COMPLETE                                        written last; without it the folder is ignored

On a local `output_root` everything is written into a staging folder, a sibling renamed into
place (atomic). On object storage (`s3://`, `gs://`, any fsspec URL such as `memory://`) the
writers (the driver and the encode tasks, wherever they run) write straight into the key's
folder, after deleting the leftovers of a killed run, and `_COMPLETE` is written after the last
file; object stores have no atomic folder rename, but no reader loads a folder without the
marker. Either way a run killed midway never leaves a folder that a later run loads.

Paths: a local output_root gives `pathlib.Path`s; a URL gives `str` URLs. Every function here
takes either. Remote filesystems come from fsspec when it knows the protocol, else from
pyarrow's own S3/GCS/HDFS filesystems (`pyarrow.fs.FileSystem.from_uri`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import PreparedDataMissing, StorageFull, UserInputError
from schemas.features import Manifest

MARKER = "_COMPLETE"
STALE_STAGING_S = 6 * 3600  # staging folders older than this are leftovers of killed runs
StorePath = Path | str


def is_remote(path: StorePath) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def local_path(path: StorePath) -> Path:
    """A local path or file:// URL as a Path (file:// stripped: Path() would keep it as a folder name)."""
    s = str(path)
    return Path(s[len("file://") :]) if s.startswith("file://") else Path(s)


def _s3(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's own S3 client; the endpoint comes from AWS_ENDPOINT_URL (MinIO, moto, Ceph) when set.

    Credentials and region come from the standard AWS variables and files, as for any AWS SDK.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict = {"region": os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        kwargs["scheme"] = "https" if endpoint.startswith("https") else "http"
    return pafs.S3FileSystem(**kwargs), uri.split("://", 1)[1].rstrip("/")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it for a URL (s3: pyarrow's client; else fsspec, then
    pyarrow's from_uri). Raises UserInputError when no filesystem serves the URL."""
    if uri.startswith(("s3://", "s3a://")):
        return _s3(uri)
    try:
        import fsspec

        fs, inner = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner
    except (ImportError, ValueError) as fsspec_error:  # e.g. gcsfs not installed: pyarrow has its own GCS
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
            raise UserInputError(
                f"output_root {uri!r}: no filesystem for this URL ({fsspec_error}; {e}); install the fsspec "
                "package for it (gcsfs) or use a local path"
            ) from e


def data_dir(output_root: StorePath, key: str) -> StorePath:
    if is_remote(output_root):
        return f"{str(output_root).rstrip('/')}/data/{key}"
    return local_path(output_root) / "data" / key


def _join(path: StorePath, name: str) -> StorePath:
    return f"{str(path).rstrip('/')}/{name}" if is_remote(path) else local_path(path) / name


def _exists(path: StorePath) -> bool:
    if not is_remote(path):
        return local_path(path).is_file()
    fs, inner = filesystem(str(path))
    return fs.get_file_info(inner).type == pafs.FileType.File


def read_bytes(path: StorePath) -> bytes:
    if not is_remote(path):
        return local_path(path).read_bytes()
    fs, inner = filesystem(str(path))
    with fs.open_input_stream(inner, compression=None) as f:
        return f.read()


def read_text(path: StorePath) -> str:
    return read_bytes(path).decode("utf-8")


def is_complete(path: StorePath) -> bool:
    return _exists(_join(path, MARKER)) and _exists(_join(path, "manifest.json"))


def load_manifest(path: StorePath) -> Manifest:
    if not is_complete(path):
        raise PreparedDataMissing(f"{path} holds no complete prepared dataset (no {MARKER}); run jobs.prepare")
    return Manifest.model_validate_json(read_text(_join(path, "manifest.json")))


def local_file(path: StorePath, name: str) -> Path:
    """A local path to one stored file (downloaded once into a temp folder if the store is remote)."""
    if not is_remote(path):
        return local_path(path) / name
    flat = str(path).split("://", 1)[1].replace("/", "_")
    target = Path(tempfile.gettempdir()) / "rnn-textcls-store" / flat
    target.mkdir(parents=True, exist_ok=True)
    if not (target / name).is_file():
        tmp = target / f".{name}.{uuid.uuid4().hex[:8]}"
        fs, inner = filesystem(_join(path, name))
        with fs.open_input_stream(inner, compression=None) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, target / name)
    return target / name


def remove_stale_staging(final: StorePath) -> None:
    """Delete local staging folders of `final` older than STALE_STAGING_S (left by killed runs)."""
    if is_remote(final):
        return
    final = local_path(final)
    if final.parent.is_dir():
        for old in final.parent.glob(f".staging-{final.name}-*"):
            if time.time() - old.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(old, ignore_errors=True)


def new_staging_dir(final: StorePath) -> StorePath:
    """Where to write: a local sibling of `final` (same filesystem: the rename works), or on object
    storage the key's folder itself, emptied of a killed run's leftovers."""
    if is_remote(final):
        fs, inner = filesystem(str(final))
        if fs.get_file_info(inner).type == pafs.FileType.Directory:
            fs.delete_dir(inner)
        fs.create_dir(inner, recursive=True)
        return str(final)
    final = local_path(final)
    staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    return staging


_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_path(path: StorePath, data: bytes) -> StorePath:
    """`write_file` for a full path: a local path (its folder created) or an object-store URL."""
    if is_remote(path):
        folder, name = str(path).rsplit("/", 1)
        return write_file(folder, name, data)
    target = local_path(path)
    return write_file(target.parent, target.name, data)


def write_file(folder: StorePath, name: str, data: bytes) -> StorePath:
    """Write one file (`name` may hold '/') under a local folder or an object-store URL.

    Raises StorageFull (one line: where, and the fix) when the disk or quota is full."""
    target = _join(folder, name)
    if not is_remote(target):
        target = local_path(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as e:
            if e.errno in _FULL:
                raise StorageFull(
                    f"no space left on the device of {folder} while writing {name} ({len(data)} bytes; "
                    f"{os.strerror(e.errno)}): free space there or set output_root to a larger disk; nothing "
                    "was published"
                ) from None
            raise
        return target
    fs, inner = filesystem(str(target))
    with fs.open_output_stream(inner) as dst:
        dst.write(data)
    return target


def copy_file(src_folder: StorePath, dst_folder: StorePath, name: str) -> StorePath:
    """Copy one file (`name` relative to both folders) between local folders or object-store URLs."""
    return write_file(dst_folder, name, read_bytes(_join(src_folder, name)))


def discard(staging: StorePath) -> None:
    """Remove what a failed run wrote (never a complete folder)."""
    if not is_remote(staging):
        shutil.rmtree(staging, ignore_errors=True)
        return
    if not is_complete(staging):
        fs, inner = filesystem(str(staging))
        if fs.get_file_info(inner).type == pafs.FileType.Directory:
            fs.delete_dir(inner)


def publish(staging: StorePath, final: StorePath) -> StorePath:
    """Mark complete, then move into place. If another run published first, keep theirs."""
    if is_remote(final):
        write_file(final, MARKER, b"ok\n")  # last: the folder is now loadable
        return final
    final, staging = local_path(final), local_path(staging)
    (staging / MARKER).write_text("ok\n")
    try:
        os.rename(staging, final)
    except OSError:
        if is_complete(final):  # a concurrent run with the same key won; same content by construction
            shutil.rmtree(staging, ignore_errors=True)
        else:  # a stale incomplete folder from a killed run: replace it
            shutil.rmtree(final, ignore_errors=True)
            os.rename(staging, final)
    return final


def json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True).encode("utf-8")


def split_files(path: StorePath, split: str) -> list[StorePath]:
    """Every Parquet file of one split, in order: local Paths or URLs (what Ray Data and workers read).

    The contract between prepare and its readers: a split may be stored as one file or as many
    shards; readers never build file names themselves.
    """
    return [_join(path, split_file) for split_file in load_manifest(path).splits[split].files]


def read_columns(path: StorePath, split: str, columns: list[str]) -> pa.Table:
    """Some columns of one split, all its files concatenated (local or remote)."""
    return _read_table(path, split, columns)


def read_file_columns(target: StorePath, columns: list[str]) -> pa.Table:
    """Some columns of one Parquet file of a split (a local Path or a URL from split_files)."""
    if not is_remote(target):
        return pq.read_table(target, columns=columns)
    fs, inner = filesystem(str(target))
    return pq.read_table(inner, columns=columns, filesystem=fs)


def _read_table(path: StorePath, split: str, columns: list[str]) -> pa.Table:
    tables = [read_file_columns(target, columns) for target in split_files(path, split)]
    return pa.concat_tables(tables) if len(tables) != 1 else tables[0]


def read_split_arrays(path: StorePath, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids int32 [n, L], labels int64 [n], lengths int32 [n]) straight from Arrow buffers.

    Reading the columns directly avoids `with_format("numpy")`, which was ~100x slower here and
    widened int32 to int64. `path` is a local folder or a URL (s3://, gs://, memory://...).
    """
    ids, labels, lengths = table_arrays(_read_table(path, split, ["input_ids", "label", "length"]))
    # Arrow buffers are read-only; torch wants writable memory, so copy once here.
    return np.array(ids, dtype=np.int32), np.array(labels), np.array(lengths)


def table_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids [n, L], labels int64, lengths int32) of an encoded table, zero-copy where Arrow allows
    (read-only views: copy before writing). Streaming workers convert each Ray Data batch with it."""
    n = table.num_rows
    ids_col = table.column("input_ids").combine_chunks()
    width = ids_col.type.list_size
    flat = ids_col.flatten().to_numpy(zero_copy_only=False)
    ids = flat.reshape(n, width) if n else np.zeros((0, width), np.int32)
    labels = table.column("label").to_numpy().astype(np.int64, copy=False)
    lengths = table.column("length").to_numpy().astype(np.int32, copy=False)
    return ids, labels, lengths


def arrow_paths(files: list[StorePath]) -> tuple[list[str], pafs.FileSystem | None]:
    """`files` (all local or all URLs of one store) as paths inside one pyarrow filesystem, which is
    what `ray.data.read_parquet(paths, filesystem=...)` wants; None for local files."""
    if not files or not is_remote(files[0]):
        return [str(local_path(f).resolve()) for f in files], None
    fs, _ = filesystem(str(files[0]))
    return [filesystem(str(f))[1] for f in files], fs


def read_texts(path: StorePath, split: str) -> tuple[list[str], np.ndarray]:
    table = _read_table(path, split, ["text", "label"])
    return table.column("text").to_pylist(), table.column("label").to_numpy()

"""Cache key from content, reuse, atomic publication (even when killed), shared-storage URLs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from pipeline.data.prepare import prepare
from pipeline.data.store import MARKER, is_complete, load_manifest, local_file, read_split_arrays, read_texts

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def csv_copy(fx, tmp_path) -> Path:
    return Path(shutil.copy(fx / "formats/reviews.tsv", tmp_path / "reviews.tsv"))


def test_same_input_reuses_and_one_edited_row_recomputes(csv_copy, job):
    cfg = job(source="files", paths=(str(csv_copy),))
    first = prepare(cfg)
    again = prepare(cfg)
    assert not first.reused and again.reused and again.path == first.path
    assert again.manifest == first.manifest
    stat = csv_copy.stat()
    data = csv_copy.read_text(encoding="utf-8")
    csv_copy.write_text(data.replace("number 7 ", "number 8 ", 1), encoding="utf-8")  # same size
    os.utime(csv_copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: only the content differs
    edited = prepare(cfg)
    assert not edited.reused and edited.manifest.cache_key != first.manifest.cache_key
    assert edited.manifest.input_digest != first.manifest.input_digest


def test_tokenizer_settings_change_the_key(csv_copy, job):
    a = prepare(job(source="files", paths=(str(csv_copy),)))
    b = prepare(job(source="files", paths=(str(csv_copy),), tokenizer={"kind": "bpe"}))
    assert a.manifest.cache_key != b.manifest.cache_key and not b.reused


def test_a_folder_without_the_marker_is_never_loaded(csv_copy, job):
    cfg = job(source="files", paths=(str(csv_copy),))
    first = prepare(cfg)
    (first.path / MARKER).unlink()  # as if the run died before publishing
    assert not is_complete(first.path)
    with pytest.raises(FileNotFoundError, match="run jobs.prepare"):
        load_manifest(first.path)
    again = prepare(cfg)
    assert not again.reused and is_complete(again.path)


_KILL_MIDWAY = """
import os, signal, sys
import pipeline.data.prepare as p
from schemas.config import JobConfig
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the splits and tokenizer are staged; nothing is published yet
p.publish = die
p.prepare(JobConfig.model_validate_json(sys.argv[1]))
"""


def test_killed_midway_leaves_nothing_that_is_loaded(csv_copy, job):
    cfg = job(source="files", paths=(str(csv_copy),))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_MIDWAY, cfg.model_dump_json()], env=env, cwd=REPO, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    data_root = Path(cfg.output_root) / "data"
    staged = list(data_root.glob(".staging-*"))
    assert staged and list((staged[0] / "train").glob("*.parquet"))  # it was killed after writing data
    assert not [d for d in data_root.iterdir() if not d.name.startswith(".")]
    again = prepare(cfg)
    assert not again.reused and is_complete(again.path)


def test_memory_filesystem_output_root(csv_copy, job):
    cfg = job(output_root="memory://bucket/run1", source="files", paths=(str(csv_copy),))
    first = prepare(cfg)
    assert isinstance(first.path, str) and first.path.startswith("memory://bucket/run1/data/")
    assert is_complete(first.path) and first.manifest.uri == first.path
    ids, labels, lengths = read_split_arrays(first.path, "train")
    assert ids.shape == (32, 16) and len(labels) == len(lengths) == 32
    texts, _ = read_texts(first.path, "test")
    assert len(texts) == 4
    tok = local_file(first.path, "tokenizer.json")  # e.g. to log the tokenizer with the model
    assert tok.is_file() and Tokenizer.from_file(str(tok)).token_to_id("[PAD]") == first.manifest.pad_id
    again = prepare(cfg)
    assert again.reused and again.manifest == first.manifest


def test_remote_upload_without_marker_is_not_loaded(csv_copy, job):
    import fsspec

    cfg = job(output_root="memory://bucket/run2", source="files", paths=(str(csv_copy),))
    first = prepare(cfg)
    fsspec.filesystem("memory").rm(first.path.split("://", 1)[1] + "/" + MARKER)
    assert not is_complete(first.path)
    again = prepare(cfg)
    assert not again.reused and is_complete(again.path)


def test_file_url_output_root(csv_copy, job, tmp_path):
    cfg = job(output_root=f"file://{tmp_path / 'shared'}", source="files", paths=(str(csv_copy),))
    prepared = prepare(cfg)
    assert is_complete(prepared.path) and (tmp_path / "shared" / "data").is_dir()
    assert prepare(cfg).reused

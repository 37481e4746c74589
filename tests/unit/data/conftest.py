"""Fixtures of the data tests: corpora generated once per session by tests/fixtures/make_fixtures.py."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from schemas.config import DataConfig, JobConfig, TokenizerConfig

_SCRIPT = Path(__file__).resolve().parents[2] / "fixtures" / "make_fixtures.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_fixtures", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fixtures_module():
    return _load_script()


@pytest.fixture(scope="session")
def fx(tmp_path_factory, fixtures_module) -> Path:
    """Root of the generated fixtures (formats/, shards/, imdb/, hub/, bad/)."""
    return fixtures_module.make_fixtures(tmp_path_factory.mktemp("fixtures"))


@pytest.fixture
def job(tmp_path):
    """job(data=..., tokenizer=...) -> a JobConfig writing under this test's tmp folder."""

    def make(output_root: str | None = None, tokenizer: dict | None = None, **data) -> JobConfig:
        tok = {"vocab_size": 200, "min_frequency": 1, "max_length": 16, **(tokenizer or {})}
        return JobConfig(
            output_root=output_root or str(tmp_path / "out"),
            data=DataConfig(**data),
            tokenizer=TokenizerConfig(**tok),
        )

    return make


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB tmpfs to fill (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)

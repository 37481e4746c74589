"""Item 13: a corrupt newest checkpoint falls back to the previous kept one, naming the bad file;
with none usable, one line names the folder and the fix."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.errors import UserInputError
from pipeline.train.state import (
    CHECKPOINT_FILE,
    EarlyStoppingState,
    TrainState,
    load_newest_usable,
    save_checkpoint_dir,
)


def _state(epoch: int) -> TrainState:
    return TrainState(
        model={"w": torch.full((2,), float(epoch))},
        optimizer={},
        scheduler={},
        epoch=epoch,
        history=[{"epoch": e} for e in range(epoch + 1)],
        early_stopping=EarlyStoppingState(),
        rng={"cpu": torch.zeros(1, 4, dtype=torch.uint8)},
        world_size=1,
    )


def _kept(run_dir: Path, n: int) -> list[Path]:
    """n checkpoints as Ray Train keeps them: checkpoint_<time> folders, oldest first."""
    folders = []
    for epoch in range(n):
        folder = run_dir / f"checkpoint_2026-01-01_00-00-0{epoch}.000000"
        shutil.move(save_checkpoint_dir(_state(epoch)), folder)
        folders.append(folder)
    return folders


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    older, newest = _kept(tmp_path, 2)
    (newest / CHECKPOINT_FILE).write_bytes((newest / CHECKPOINT_FILE).read_bytes()[:100])  # a torn write
    with caplog.at_level(logging.WARNING):
        state = load_newest_usable(str(newest))
    assert state.epoch == 0 and torch.equal(state.model["w"], torch.zeros(2))
    assert str(newest / CHECKPOINT_FILE) in caplog.text and older.name in caplog.text


def test_an_intact_newest_checkpoint_is_used(tmp_path):
    _, newest = _kept(tmp_path, 2)
    assert load_newest_usable(str(newest)).epoch == 1


def test_no_usable_checkpoint_is_one_line_with_the_folder_and_the_fix(tmp_path):
    for folder in _kept(tmp_path, 2):
        (folder / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError) as e:
        load_newest_usable(str(folder))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "tracking.run_name" in msg and "delete" in msg

"""Real registered raw-text models of known quality, made without Ray (plain PyTorch, seconds)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import torch

from jobs.config_loader import load_config
from pipeline.data.prepare import PreparedData, prepare
from pipeline.data.store import read_split_arrays
from pipeline.evaluation.scoring import loss_fn, predict_proba
from pipeline.model import build_model
from pipeline.registry.log_model import log_raw_text_model
from pipeline.registry.versions import register_version
from pipeline.tracking import ensure_experiment, tracking_store
from schemas.config import JobConfig
from tests.integration.corpus import write_corpus


def prepare_generated(root: Path, rows: int = 800) -> tuple[JobConfig, PreparedData]:
    corpus = write_corpus(root / "reviews.csv", rows=rows)
    cfg = load_config(
        None,
        [
            f"output_root={root}",
            "data.source=files",
            "data.text_column=review",
            "data.label_column=sentiment",
            "data.labels=[neg, pos]",
            f"data.paths=[{corpus}]",
            "tokenizer.max_length=32",
        ],
    )
    return cfg, prepare(cfg)


def train_state(cfg: JobConfig, prep: PreparedData, epochs: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    m = prep.manifest
    model = build_model(m.vocab_size, m.pad_id, len(m.label_names), cfg.model)
    ids, y, _ = read_split_arrays(prep.path, "train")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for s in range(0, len(y), 64):
            loss = loss_fn(model(torch.from_numpy(ids[s : s + 64]).long()), torch.from_numpy(y[s : s + 64]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.state_dict()


def learned_state(cfg: JobConfig, prep: PreparedData, epochs: int = 6) -> dict:
    """A model that learned the corpus: the seed RNN sometimes stays at chance from one seed (last-step
    pooling behind a trailing [UNK]), so the first of a few seeds that reaches 0.9 on validation."""
    ids, labels, _ = read_split_arrays(prep.path, "validation")
    m = prep.manifest
    for seed in range(4):
        state = train_state(cfg, prep, epochs=epochs, seed=seed)
        model = build_model(m.vocab_size, m.pad_id, len(m.label_names), cfg.model)
        model.load_state_dict(state)
        if (predict_proba(model, ids).argmax(1) == labels).mean() >= 0.9:
            return state
    raise AssertionError("the seed RNN learned the generated corpus from none of 4 seeds")


def register(uri: str, name: str, cfg: JobConfig, prep: PreparedData, state: dict) -> str:
    # As a job does: the store set once at the boundary, one client passed to registration.
    with tracking_store(uri) as client:
        # Artifacts under output_root for a local store, not ./mlruns in the working directory.
        experiment_id = ensure_experiment(client, "model-factory", cfg.output_root)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = log_raw_text_model(
                state, prep.manifest, Path(prep.path) / "tokenizer.json", cfg.model, ["好看", "失望"]
            )
        return str(register_version(client, name, info.model_uri, run.info.run_id, {}, "test").version)

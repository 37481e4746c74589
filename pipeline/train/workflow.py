"""The training stage as the driver sees it: one MLflow run around one Ray Train fit.

Order matters for safety: the version is registered last, after the model and every artifact
are logged; any failure before that leaves a FAILED (or KILLED) run and no registered version.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from pipeline import plots
from pipeline.config_loader import flatten
from pipeline.data.prepare import PreparedData
from pipeline.data.store import local_file, read_split_arrays, read_texts
from pipeline.evaluate import classification_metrics, predict_proba
from pipeline.model import build_model, format_parameter_table, parameter_counts, parameter_table
from pipeline.registry import log_raw_text_model, register_version
from pipeline.tracking import ensure_experiment, log_params, mask_secrets
from pipeline.train.trainer import fit
from schemas.config import JobConfig
from schemas.features import SPLITS


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    run_name: str
    model_uri: str
    registered_model: str
    version: str
    test_metrics: dict[str, float]
    n_params: int
    history: list[dict]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_digest(cfg: JobConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _log_datasets(prepared: PreparedData) -> None:
    """mlflow.data inputs for each split, with our digest over the full content (MLflow's own
    digest samples only the first rows)."""
    for split in SPLITS:
        info = prepared.manifest.splits[split]
        texts, labels = read_texts(prepared.path, split)
        frame = pd.DataFrame({"text": texts, "label": labels})
        ds = mlflow.data.from_pandas(frame, source=f"{prepared.path}/{info.file}", targets="label",
                                     name=f"{prepared.manifest.source['kind']}-{split}", digest=info.digest[:16])
        mlflow.log_input(ds, context={"validation": "eval"}.get(split, split))


def _log_figure(fig, name: str) -> None:
    mlflow.log_figure(fig, name)
    plots.close(fig)


def train_and_register(cfg: JobConfig, prepared: PreparedData, tracking_uri: str) -> TrainOutcome:
    """Train with Ray, log everything to one MLflow run, register a version. Returns the outcome."""
    manifest = prepared.manifest
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = ensure_experiment(cfg, tracking_uri)
    model = build_model(manifest.vocab_size, manifest.pad_id, len(manifest.label_names), cfg.model)
    counts = parameter_counts(model)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_name = cfg.tracking.run_name or f"{cfg.model.cell}-{manifest.source['kind']}-{stamp}"
    tags = {
        "git_commit": git_commit(),
        "data_digest": manifest.content_digest,
        "tokenizer_digest": manifest.tokenizer_digest,
        "config_digest": config_digest(cfg),
        "data_path": mask_secrets("data_path", str(prepared.path)),
    }
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    try:
        log_params(flatten(cfg))
        log_params(counts)
        mlflow.log_text(format_parameter_table(model, f"{cfg.model.cell} classifier"), "model_parameters.txt")
        table = parameter_table(model)
        mlflow.log_table({"name": [n for n, _, _ in table], "shape": [str(list(s)) for _, s, _ in table],
                          "count": [c for _, _, c in table]}, "model_parameters.json")
        mlflow.log_dict(manifest.model_dump(mode="json"), "data/manifest.json")
        mlflow.log_dict(manifest.cleaning, "data/cleaning_report.json")
        _log_datasets(prepared)
        train_file = local_file(prepared.path, "train.parquet")
        n_tokens = pq.read_table(train_file, columns=["n_tokens"])["n_tokens"].to_numpy()
        _log_figure(plots.token_lengths(n_tokens, manifest.max_length), "plots/token_lengths.png")

        result = fit(cfg, prepared.path, f"{run_name}-{run_id[:8]}", tracking_uri, run_id)

        model.load_state_dict(result.state["model"])
        ids, labels, _ = read_split_arrays(prepared.path, "test")
        proba = predict_proba(model, ids)
        test = classification_metrics(labels, proba)
        mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
        _log_figure(plots.learning_curves(result.history), "plots/learning_curves.png")
        _log_figure(plots.confusion(labels, proba.argmax(1), list(manifest.label_names)), "plots/confusion_matrix.png")
        if "roc_auc" in test:
            _log_figure(plots.roc(labels, proba[:, 1], test["roc_auc"]), "plots/roc.png")

        texts, _ = read_texts(prepared.path, "test")
        info = log_raw_text_model(result.state["model"], manifest, local_file(prepared.path, manifest.tokenizer_file),
                                  cfg.model, texts[:2])
        description = f"test accuracy {test['accuracy']:.4f}, f1 {test['f1']:.4f}; run {run_name}"
        mv = register_version(MlflowClient(tracking_uri), cfg.tracking.registered_model_name, info.model_uri,
                              run_id, tags={**tags, "run_id": run_id}, description=description)
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")
    return TrainOutcome(run_id, run_name, info.model_uri, cfg.tracking.registered_model_name, str(mv.version),
                        test, counts["n_params.total"], result.history)

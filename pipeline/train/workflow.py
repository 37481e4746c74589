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
from mlflow.tracking import MlflowClient

from pipeline import plots
from pipeline.config_loader import flatten
from pipeline.data.prepare import PreparedData
from pipeline.data.store import local_file, read_columns, read_split_arrays, read_texts
from pipeline.evaluate import classification_metrics, predict_proba
from pipeline.model import build_model, format_parameter_table, parameter_counts, parameter_table
from pipeline.registry import log_raw_text_model, register_version
from pipeline.tracking import ensure_experiment, log_params, mask_secrets, tracking_uri_scope
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


def find_run_by_name(client: MlflowClient, experiment_id: str, run_name: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def run_description(cfg: JobConfig, manifest, model, test: dict[str, float], history: list[dict]) -> str:
    """The Markdown a reviewer reads first in the MLflow UI (the run's description)."""
    sizes = ", ".join(f"{s} {i.rows:,}" for s, i in manifest.splits.items())
    dropped = ", ".join(f"{k} {v:,}" for k, v in manifest.cleaning.get("dropped", {}).items()) or "none"
    table = parameter_table(model)
    rows = "\n".join(f"| `{n}` | {list(s)} | {c:,} |" for n, s, c in table)
    total = sum(c for _, _, c in table)
    best = max((h.get("val_accuracy", 0.0) for h in history), default=float("nan"))
    m = cfg.model
    return f"""### Result
test accuracy **{test['accuracy']:.4f}**, F1 {test['f1']:.4f}, ROC AUC {test.get('roc_auc', float('nan')):.4f};
best validation accuracy {best:.4f} over {len(history)} epoch(s).

### Data
source `{manifest.source['kind']}` {manifest.source.get('name') or ''}; rows: {sizes}; labels {manifest.label_names};
vocabulary {manifest.vocab_size:,}, max length {manifest.max_length} ({manifest.padding_side} padding);
dropped: {dropped}; content digest `{manifest.content_digest[:16]}`.

### Model
{m.cell.upper()} x{m.num_layers}{' bidirectional' if m.bidirectional else ''}, embedding {m.embedding_dim},
hidden {m.hidden_dim}, head {m.head_dim}; {total:,} parameters.

| parameter | shape | count |
|---|---|---|
{rows}
"""


def train_and_register(cfg: JobConfig, prepared: PreparedData, tracking_uri: str) -> TrainOutcome:
    """Train with Ray, log everything to one MLflow run, register a version. Returns the outcome."""
    with tracking_uri_scope(tracking_uri):
        return _train_and_register(cfg, prepared, tracking_uri)


def _train_and_register(cfg: JobConfig, prepared: PreparedData, tracking_uri: str) -> TrainOutcome:
    manifest = prepared.manifest
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
    # A named job resumes: the same MLflow run id and the same Ray Train storage folder, so a
    # rerun after a crash continues from the last checkpoint without duplicating epochs.
    resume_id = find_run_by_name(MlflowClient(tracking_uri), experiment_id, run_name) if cfg.tracking.run_name else None
    if resume_id:
        run = mlflow.start_run(run_id=resume_id, log_system_metrics=cfg.tracking.system_metrics)
        mlflow.set_tags(tags)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags,
                               log_system_metrics=cfg.tracking.system_metrics)
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
        n_tokens = read_columns(prepared.path, "train", ["n_tokens"])["n_tokens"].to_numpy()
        _log_figure(plots.token_lengths(n_tokens, manifest.max_length), "plots/token_lengths.png")

        ray_name = run_name if cfg.tracking.run_name else f"{run_name}-{run_id[:8]}"
        result = fit(cfg, prepared.path, ray_name, tracking_uri, run_id)

        model.load_state_dict(result.model)
        ids, labels, _ = read_split_arrays(prepared.path, "test")
        proba = predict_proba(model, ids)
        test = classification_metrics(labels, proba)
        mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
        _log_figure(plots.learning_curves(result.history), "plots/learning_curves.png")
        _log_figure(plots.confusion(labels, proba.argmax(1), list(manifest.label_names)), "plots/confusion_matrix.png")
        if "roc_auc" in test:
            _log_figure(plots.roc(labels, proba[:, 1], test["roc_auc"]), "plots/roc.png")

        mlflow.set_tag("mlflow.note.content", run_description(cfg, manifest, model, test, result.history))
        texts, _ = read_texts(prepared.path, "test")
        info = log_raw_text_model(result.model, manifest, local_file(prepared.path, manifest.tokenizer_file),
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

"""The training job's steps, as the driver runs them inside one MLflow run (see jobs/train.py):
log the inputs -> fit the baseline -> fit (pipeline.train.trainer) -> log the evaluation (the model
against the baseline) -> publish the model.

Each step is a plain function of explicit inputs that logs into the active run. Order matters for
safety: the version is registered last, after the model and every artifact are logged; any
failure before that leaves a FAILED (or KILLED) run and no registered version.
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
from torch import nn

from pipeline.baseline import BaselineResult, Comparison, compare, fit_on_prepared
from pipeline.data.prepare import PreparedData
from pipeline.data.store import local_file, read_columns, read_split_arrays, read_texts
from pipeline.evaluation import plots
from pipeline.evaluation.metrics import classification_metrics
from pipeline.evaluation.scoring import predict_proba
from pipeline.model import build_model, format_parameter_table, parameter_counts, parameter_table
from pipeline.registry.log_model import log_raw_text_model
from pipeline.registry.versions import register_version
from pipeline.tracking import flatten, log_held_out_metrics, log_params, mask_secrets
from pipeline.train.trainer import TrainResult
from schemas.config import JobConfig
from schemas.features import SPLITS, Manifest


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # the model's test metrics
    versus_baseline: Comparison | None = None  # None: baseline.enabled=false


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
    versus_baseline: Comparison | None = None
    notes: tuple[str, ...] = ()  # what adapt_to_corpus changed or warned about
    experiment_id: str = ""


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_digest(cfg: JobConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _dataset_source(uri: str):
    """An explicit source for a split's file. MLflow registers its local-file source twice (the ""
    and "file" schemes), so letting it resolve a local path warns that the source is ambiguous."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    if "://" not in uri or uri.startswith("file://"):
        local = next((s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource"), None)
        if local is not None:
            return local(uri)
    return uri


def dataset_ref(prepared: PreparedData, split: str) -> tuple[str, str]:
    """(name, digest) of a split's MLflow dataset, as _log_datasets logs it: what a metric names to link it."""
    return f"{prepared.manifest.source.kind}-{split}", prepared.manifest.splits[split].digest[:16]


def _log_datasets(prepared: PreparedData) -> None:
    """mlflow.data inputs for each split, with our digest over the full content (MLflow's own
    digest samples only the first rows). Labels are logged by name: readable in the UI, and a
    string column needs no integer-schema caveat (integers cannot hold a missing value)."""
    names = list(prepared.manifest.label_names)
    for split in SPLITS:
        texts, labels = read_texts(prepared.path, split)
        frame = pd.DataFrame({"text": texts, "label": [names[int(i)] for i in labels]})
        name, digest = dataset_ref(prepared, split)
        ds = mlflow.data.from_pandas(
            frame,
            source=_dataset_source(f"{prepared.path}/{split}"),  # its shards
            targets="label",
            name=name,
            digest=digest,
        )
        mlflow.log_input(ds, context={"validation": "eval"}.get(split, split))


def _log_figure(fig, name: str) -> None:
    mlflow.log_figure(fig, name)
    plots.close(fig)


def run_name(cfg: JobConfig, manifest: Manifest) -> str:
    """The configured name (a resumable job), else `<cell>-<source>-<UTC time>`."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return cfg.tracking.run_name or f"{cfg.model.cell}-{manifest.source.kind}-{stamp}"


def ray_run_name(cfg: JobConfig, run: mlflow.ActiveRun) -> str:
    """Ray Train's storage folder: a named job reuses it (so a rerun resumes from its checkpoint),
    an unnamed one gets a folder of its own. Recorded on the run (tag `ray_run_name`), so that
    resuming an unnamed run that failed (`tracking.run_name=<its name>`, the command a failed job
    prints) finds its checkpoints."""
    recorded = run.data.tags.get("ray_run_name")
    if recorded:
        return recorded
    name = run.info.run_name
    folder = name if cfg.tracking.run_name else f"{name}-{run.info.run_id[:8]}"
    mlflow.set_tag("ray_run_name", folder)
    return folder


def lineage_tags(cfg: JobConfig, prepared: PreparedData) -> dict[str, str]:
    manifest = prepared.manifest
    return {
        "git_commit": git_commit(),
        "data_digest": manifest.content_digest,
        "tokenizer_digest": manifest.tokenizer_digest,
        "config_digest": config_digest(cfg),
        "data_path": mask_secrets("data_path", str(prepared.path)),
    }


def build_classifier(cfg: JobConfig, manifest: Manifest) -> nn.Module:
    return build_model(manifest.vocab_size, manifest.pad_id, len(manifest.label_names), cfg.model)


def log_inputs(cfg: JobConfig, prepared: PreparedData) -> int:
    """Config, parameter counts, manifest, cleaning report, dataset inputs and token lengths.
    Returns the model's parameter count."""
    manifest = prepared.manifest
    model = build_classifier(cfg, manifest)
    counts = parameter_counts(model)
    log_params(flatten(cfg))
    log_params(counts)
    log_params({"data.max_length": manifest.max_length, "data.max_length_chosen_by": manifest.max_length_chosen_by})
    mlflow.log_text(format_parameter_table(model, f"{cfg.model.cell} classifier"), "model_parameters.txt")
    table = parameter_table(model)
    mlflow.log_table(
        {
            "name": [n for n, _, _ in table],
            "shape": [str(list(s)) for _, s, _ in table],
            "count": [c for _, _, c in table],
        },
        "model_parameters.json",
    )
    mlflow.log_dict(manifest.model_dump(mode="json"), "data/manifest.json")
    mlflow.log_dict(manifest.cleaning.model_dump(mode="json"), "data/cleaning_report.json")
    _log_datasets(prepared)
    n_tokens = read_columns(prepared.path, "train", ["n_tokens"])["n_tokens"].to_numpy()
    _log_figure(plots.token_lengths(n_tokens, manifest.max_length), "plots/token_lengths.png")
    return counts["n_params.total"]


def log_baseline(cfg: JobConfig, prepared: PreparedData) -> BaselineResult | None:
    """Fit the TF-IDF + logistic regression baseline on the same split (None when baseline.enabled is
    off); log its metrics (`baseline.test_accuracy`, ...), its choice and its per-row test predictions."""
    if not cfg.baseline.enabled:
        return None
    baseline = fit_on_prepared(prepared.path, cfg.baseline)
    mlflow.log_metrics(baseline.metrics())
    mlflow.set_tag("baseline.features", baseline.features)
    mlflow.log_dict(
        {
            "features": baseline.features,
            "c": baseline.c,
            "test_digest": prepared.manifest.splits["test"].digest,
            "pred": baseline.test_pred.tolist(),
        },
        "baseline/test_predictions.json",
    )
    return baseline


def log_evaluation(
    cfg: JobConfig,
    prepared: PreparedData,
    result: TrainResult,
    baseline: BaselineResult | None = None,
    notes: tuple[str, ...] = (),
) -> Evaluation:
    """Score the trained weights on the test split; log the metrics, plots, the comparison with the
    baseline (McNemar p-values) and the run's description, which also lists `notes`."""
    manifest = prepared.manifest
    model = build_classifier(cfg, manifest)
    model.load_state_dict(result.model)
    ids, labels, _ = read_split_arrays(prepared.path, "test")
    proba = predict_proba(model, ids)
    test = classification_metrics(labels, proba)  # logged by publish_model, with the model they score
    if result.best_epoch is not None:  # one value, not a time series: a tag (and in the description)
        mlflow.set_tag("best_epoch", f"{result.best_epoch + 1} of {len(result.history)} (step {result.best_epoch})")
    _log_figure(plots.learning_curves(result.history), "plots/learning_curves.png")
    _log_figure(plots.confusion(labels, proba.argmax(1), list(manifest.label_names)), "plots/confusion_matrix.png")
    if "roc_auc" in test:
        _log_figure(plots.roc(labels, proba[:, 1], test["roc_auc"]), "plots/roc.png")
    versus = compare(proba.argmax(1) == labels, baseline, cfg.promotion.significance) if baseline else None
    if versus is not None:
        mlflow.log_metrics(
            {
                "baseline.p_model_better": versus.p_better,
                "baseline.p_model_worse": versus.p_worse,
                "test_accuracy_minus_baseline": versus.points / 100,
            }
        )
    mlflow.set_tag(
        "mlflow.note.content",
        run_description(cfg, manifest, model, test, result.history, versus, notes, result.best_epoch),
    )
    return Evaluation(test, versus)


def final_step(result: TrainResult) -> int:
    """The MLflow step of the last epoch (rank 0 logs epoch metrics at step = epoch)."""
    return int(result.history[-1]["epoch"]) if result.history else 0


def publish_model(
    client: MlflowClient,
    run: mlflow.ActiveRun,
    cfg: JobConfig,
    prepared: PreparedData,
    result: TrainResult,
    evaluation: Evaluation,
    n_params: int,
    notes: tuple[str, ...] = (),
) -> TrainOutcome:
    """Log the raw-text model into the run and register it as a version: the run's last step.

    The model is logged at the final epoch's step, so MLflow links it to the run's metrics of that step
    (the last epoch's, not epoch 0's); its test metrics are logged next, at that step, onto the run and the
    model at once and naming the test dataset: the model's page lists them and that dataset."""
    manifest, run_id, name = prepared.manifest, run.info.run_id, cfg.tracking.registered_model_name
    test = evaluation.metrics
    texts, _ = read_texts(prepared.path, "test")
    info = log_raw_text_model(
        result.model,
        manifest,
        local_file(prepared.path, manifest.tokenizer_file),
        cfg.model,
        texts[:2],
        step=final_step(result),
    )
    log_held_out_metrics(client, run_id, info.model_id, test, final_step(result), dataset_ref(prepared, "test"))
    description = f"test accuracy {test['accuracy']:.4f}, f1 {test['f1']:.4f}; run {run.info.run_name}"
    tags = {**lineage_tags(cfg, prepared), "run_id": run_id}
    mv = register_version(client, name, info.model_uri, run_id, tags=tags, description=description)
    return TrainOutcome(
        run_id,
        run.info.run_name,
        info.model_uri,
        name,
        str(mv.version),
        test,
        n_params,
        result.history,
        evaluation.versus_baseline,
        notes,
        run.info.experiment_id,
    )


def training_settings(cfg: JobConfig, history: list[dict], best_epoch: int | None) -> str:
    """The training section of the run's description: what a reviewer compares between runs."""
    t, s = cfg.train, cfg.scaling
    device = (
        f"{s.num_workers} GPU worker(s)" if s.use_gpu else f"{s.num_workers} CPU worker(s) x {s.cpus_per_worker:g} CPU"
    )
    stopping = (
        f"early stopping on {t.early_stopping_metric} (patience {t.early_stopping_patience})"
        if t.early_stopping_patience is not None
        else "no early stopping"
    )
    best = f"; weights of epoch {best_epoch + 1}" if best_epoch is not None else ""
    return (
        f"epochs {len(history)} of {t.epochs}{best}; lr {t.lr:g} ({t.lr_schedule}); batch size {t.batch_size} "
        f"per worker; {device}; {stopping}; seed {t.seed}."
    )


def run_description(
    cfg: JobConfig,
    manifest,
    model,
    test: dict[str, float],
    history: list[dict],
    versus: Comparison | None = None,
    notes: tuple[str, ...] = (),
    best_epoch: int | None = None,
) -> str:
    """The Markdown a reviewer reads first in the MLflow UI (the run's description)."""
    sizes = ", ".join(f"{s} {i.rows:,}" for s, i in manifest.splits.items())
    dropped = ", ".join(f"{k} {v:,}" for k, v in manifest.cleaning.dropped.items()) or "none"
    table = parameter_table(model)
    rows = "\n".join(f"| `{n}` | {list(s)} | {c:,} |" for n, s, c in table)
    total = sum(c for _, _, c in table)
    best = max((h.get("val_accuracy", 0.0) for h in history), default=float("nan"))
    m = cfg.model
    baseline = f"\n**Against the baseline:** {versus.line()}.\n" if versus else ""
    adapted = "".join(f"\n- {n}" for n in notes)
    adapted = f"\n### Adapted to the corpus{adapted}\n" if notes else ""
    return f"""### Result
test accuracy **{test["accuracy"]:.4f}**, F1 {test["f1"]:.4f}, ROC AUC {test.get("roc_auc", float("nan")):.4f};
best validation accuracy {best:.4f} over {len(history)} epoch(s).
{baseline}{adapted}

### Training
{training_settings(cfg, history, best_epoch)}

### Data
source `{manifest.source.kind}` {manifest.source.name or ""}; rows: {sizes}; labels {manifest.label_names};
vocabulary {manifest.vocab_size:,}, max length {manifest.max_length} ({manifest.padding_side} padding);
dropped: {dropped}; content digest `{manifest.content_digest[:16]}`.

### Model
{m.cell.upper()} x{m.num_layers}{" bidirectional" if m.bidirectional else ""}, embedding {m.embedding_dim},
hidden {m.hidden_dim}, head {m.head_dim}; {total:,} parameters.

| parameter | shape | count |
|---|---|---|
{rows}
"""

"""One Ray Tune trial and how it is scored: shared by the search (pipeline.tune) and the re-selection
of its best trials (pipeline.selection).

A trial is a small driver function that builds and fits a `TorchTrainer` with its settings and
forwards every epoch's report to Tune through `TuneReportCallback` (Ray's "Hyperparameter Tuning with
Ray Tune" guide for Train V2), inside one MLflow child run of the search's parent run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunStatus
from mlflow.tracking import MlflowClient

from pipeline.adaptive import adapt_to_corpus
from pipeline.data.store import is_remote, load_manifest
from pipeline.leaked_workers import LeakedWorkerGroups
from pipeline.tracking import flatten, mask_secrets
from schemas.config import JobConfig

# Search-space field -> the config key it sets.
SPACE_KEYS: dict[str, str] = {
    "cell": "model.cell",
    "bidirectional": "model.bidirectional",
    "pooling": "model.pooling",
    "embedding_dim": "model.embedding_dim",
    "hidden_dim": "model.hidden_dim",
    "dropout": "model.dropout",
    "embedding_dropout": "model.embedding_dropout",
    "word_dropout": "model.word_dropout",
    "ngram_buckets": "model.ngram_buckets",
    "ngram_char_buckets": "model.ngram_char_buckets",
    "ngram_weighting": "model.ngram_weighting",
    "encoder_max_length": "model.encoder_max_length",
    "ngram_lr_factor": "train.ngram_lr_factor",
    "lr": "train.lr",
    "batch_size": "train.batch_size",
    "ema_decay": "train.ema_decay",
    "adversarial_epsilon": "train.adversarial_epsilon",
    "tokenizer_kind": "tokenizer.kind",
    "max_length": "tokenizer.max_length",
}
TRIAL_TAG = "tune.trial_id"
PHASE_TAG = "tune.phase"  # search | selection (pipeline.selection)
# A trial only drives its Train run: no CPU (its workers reserve those, so two 1-worker trials fit
# 2 CPUs), just the memory of a driver process (Tune refuses a trial that reserves nothing at all).
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}


@dataclass(frozen=True)
class TrialRow:
    """One trial in the comparison table."""

    trial_id: str
    run_id: str | None
    sample: dict[str, Any]
    best: float  # best value of the search metric over the trial's epochs (nan: no epoch)
    epochs: int
    status: str  # finished | stopped (by ASHA) | failed
    tie_break: float = math.nan  # val_loss at the epoch of `best` (accuracy ties go to the lower)


def apply_sample(base: JobConfig, sample: dict[str, Any]) -> JobConfig:
    """`base` with the sampled values set (keys of SPACE_KEYS); validated as any job config.

    Raises pydantic.ValidationError for a combination the config refuses.
    """
    raw = base.model_dump(mode="json")
    for name, value in sample.items():
        section, key = SPACE_KEYS[name].split(".")
        raw[section][key] = value
    return JobConfig.model_validate(raw)


def trial_config(base: JobConfig, sample: dict[str, Any]) -> JobConfig:
    """A trial's config: the sample, on tune.workers_per_trial workers."""
    cfg = apply_sample(base, sample)
    scaling = cfg.scaling.model_copy(update={"num_workers": cfg.tune.workers_per_trial})
    return cfg.model_copy(update={"scaling": scaling})


def variant_key(kind: str, max_length: int | str) -> str:
    """The prepared corpus a sample trains on: one per (tokenizer kind, max_length) of the space."""
    return f"{kind}/{max_length}"


def location(path) -> str:
    """A prepared dataset's path as trials on other processes and working folders read it: a URL as
    it is, a local path made absolute (Tune runs each trial in a folder of its own)."""
    return str(path) if "://" in str(path) else str(Path(path).resolve())


def sample_variant(sample: dict[str, Any], base: JobConfig) -> str:
    return variant_key(
        sample.get("tokenizer_kind", base.tokenizer.kind), sample.get("max_length", base.tokenizer.max_length)
    )


def _log_params_client(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(mask_secrets(k, v))[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


@dataclass(frozen=True)
class ChildRun:
    """Where a trial logs: its search's parent run, in the same store and experiment."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    search_name: str


def fit_trial(sample: dict[str, Any], base: JobConfig, data_path: str, parent: ChildRun, tags: dict[str, str]) -> None:
    """Train `sample` on `data_path` inside this Tune trial: a child MLflow run around one TorchTrainer
    fit whose epochs reach Tune through TuneReportCallback."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.train.trainer import fit

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(base, sample)
    cfg, _ = adapt_to_corpus(cfg, load_manifest(data_path))  # as jobs.run will train the best one
    client = MlflowClient(parent.tracking_uri)
    run_name = f"{parent.search_name}-{trial_id}"
    run = client.create_run(
        parent.experiment_id,
        run_name=run_name,
        tags={"mlflow.parentRunId": parent.parent_run_id, TRIAL_TAG: trial_id, "data_path": data_path, **tags},
    )
    run_id = run.info.run_id
    try:
        _log_params_client(client, run_id, {**flatten(cfg), **{f"sample.{k}": v for k, v in sample.items()}})
        path = data_path if is_remote(data_path) else Path(data_path)  # location(): a URL stays a str
        result = fit(cfg, path, run_name, parent.tracking_uri, run_id, callbacks=[TuneReportCallback()])
        accs = [h["val_accuracy"] for h in result.history]
        client.log_metric(run_id, "best_val_accuracy", max(accs) if accs else math.nan)
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise


def run_trial(sample: dict[str, Any], *, base: dict[str, Any], data_paths: dict[str, str], parent: ChildRun) -> None:
    """A search trial (runs in a Tune actor): the sample on its data variant's prepared corpus."""
    cfg = JobConfig.model_validate(base)
    fit_trial(sample, cfg, data_paths[sample_variant(sample, cfg)], parent, {PHASE_TAG: "search"})


def trial_score(df, metric: str, mode: str) -> tuple[float, float, int]:
    """(best value of `metric` over a trial's epochs, the tie-break, epochs reported) from its
    metrics dataframe (None: nothing reported).

    Validation accuracy moves in steps of 1/rows (0.67 points on 150 rows), so among a search's
    dozens of trials several share the top value; the tie goes to the lower validation loss at the
    epoch that reached it (the epoch early stopping keeps), a finer measure of the same fit. Other
    metrics are continuous and need none (nan).
    """
    if df is None or metric not in df:
        return math.nan, math.nan, 0
    reported = df[df[metric].notna()]
    if reported.empty:
        return math.nan, math.nan, 0
    values = reported[metric]
    best = float(values.max() if mode == "max" else values.min())
    tie_break = math.nan
    if metric == "val_accuracy" and "val_loss" in reported:
        losses = reported.loc[values == best, "val_loss"].dropna()
        tie_break = float(losses.min()) if not losses.empty else math.nan
    return best, tie_break, len(reported)


def last_if_nan(x: float) -> float:
    """A sort key that puts missing values (nan) after every number."""
    return math.inf if math.isnan(x) else x


def rank_trials(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first: by the metric, ties by the tie-break (lower first; missing last), failures last."""
    sign = -1 if mode == "max" else 1
    return sorted(rows, key=lambda t: (last_if_nan(sign * t.best), last_if_nan(t.tie_break)))


def metric_mode(metric: str) -> str:
    return "max" if metric == "val_accuracy" else "min"


def fit_tuner(
    cfg: JobConfig,
    trainable,
    param_space: dict[str, Any],
    name: str,
    concurrent: int,
    *,
    time_budget_s: float | None,
    num_samples: int = 1,
    scheduler=None,
    points_to_evaluate: list[dict[str, Any]] | None = None,
):
    """Tuner.fit of `trainable` (a partial of run_trial or a selection trial) over `param_space`,
    `concurrent` trials at a time, results under `<output_root>/ray_results/<name>`."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from pipeline.train.trainer import checkpoint_storage

    # The trials' own Train runs store there too; an s3:// output_root gives the bucket's filesystem
    # (str(Path("s3://b/r")) would have been the local folder "s3:/b/r").
    storage, storage_fs = checkpoint_storage(cfg)
    leaks = LeakedWorkerGroups()
    tuner = tune.Tuner(
        tune.with_resources(trainable, TRIAL_DRIVER_RESOURCES),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=cfg.tune.metric,
            mode=metric_mode(cfg.tune.metric),
            num_samples=num_samples,
            time_budget_s=time_budget_s,
            scheduler=scheduler,
            # The generator bounds concurrency itself (TuneConfig's bound applies to Searchers only).
            search_alg=BasicVariantGenerator(
                points_to_evaluate=points_to_evaluate, random_state=cfg.tune.seed, max_concurrent=concurrent
            ),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            storage_filesystem=storage_fs,
            verbose=1,
            callbacks=[leaks.tune_callback()],
        ),
    )
    results = tuner.fit()
    leaks.checked(leaks.drain)  # the trials the time budget ended: their CPUs back for the next fit
    return results

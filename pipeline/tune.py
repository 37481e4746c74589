"""Hyperparameter search: Ray Tune trials, each one Ray Train run, each an MLflow child run.

The shape is Ray's "Hyperparameter Tuning with Ray Tune" guide for Train V2: a Tune trial is a
small driver function (`run_trial`) that builds and fits a `TorchTrainer` with the sampled
settings and forwards every epoch's report to Tune through `TuneReportCallback`; ASHA stops the
trials that fall behind at its rungs. A trial's driver only waits on its workers, so it reserves
no CPU: `tune.max_concurrent_trials` is what bounds how many run at once (by default, as many as
the cluster's CPUs hold trial worker groups).

Data is prepared once, before any trial: a trial that changes tokenizer settings needs its own
encoded corpus, so the driver prepares one per distinct (tokenizer kind, max_length) of the
search space (each cached by content, like any prepare) and trials only read them.

MLflow: one parent run for the search (search settings, the baseline's validation accuracy, a
comparison table and plot, the best config as YAML) and one child run per trial (tag
`mlflow.parentRunId`), into which the trial's rank 0 logs its epochs.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Param, RunStatus
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from pipeline.adaptive import adapt_to_corpus
from pipeline.data.prepare import PreparedData, prepare
from pipeline.data.store import load_manifest
from pipeline.errors import UserInputError
from pipeline.evaluation import plots
from pipeline.leaked_workers import LeakedWorkerGroups
from pipeline.tracking import flatten, log_params, mask_secrets, mlflow_run
from schemas.config import JobConfig, SearchSpace

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class SearchOutcome:
    parent_run_id: str
    best_config: JobConfig
    best_trial: TrialRow
    trials: list[TrialRow]
    config_path: Path
    baseline_validation_accuracy: float | None
    wall_s: float


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


def start_point(cfg: JobConfig) -> dict[str, Any]:
    """The job config's own values of the searched keys, where tune.space holds them: the first trial
    (tune.start_from_config). Keys whose value the space lacks are left for the search to draw."""
    point = {}
    for name, key in SPACE_KEYS.items():
        section, field_name = key.split(".")
        value = getattr(getattr(cfg, section), field_name)
        if value in getattr(cfg.tune.space, name):
            point[name] = value
    return point


def check_space(cfg: JobConfig) -> None:
    """Every value of the search space, each on the job config, must make a valid config: a trial
    should not be the first to find out. Raises UserInputError naming the value and the reason."""
    for name in SPACE_KEYS:
        for value in getattr(cfg.tune.space, name):
            try:
                apply_sample(cfg, {name: value})
            except ValidationError as e:
                reason = "; ".join(err["msg"] for err in e.errors())
                raise UserInputError(
                    f"tune.space.{name}: value {value!r} gives an invalid {SPACE_KEYS[name]} "
                    f"({reason}); drop it from tune.space.{name} or change the job config"
                ) from None


def data_variants(cfg: JobConfig) -> list[tuple[str, int | str]]:
    """Distinct (tokenizer kind, max_length) pairs of the search space, in a stable order."""
    s = cfg.tune.space
    return list(dict.fromkeys((k, m) for k in s.tokenizer_kind for m in s.max_length))


def variant_key(kind: str, max_length: int | str) -> str:
    return f"{kind}/{max_length}"


def prepare_variants(cfg: JobConfig) -> dict[str, PreparedData]:
    """Prepare (or reuse) one corpus per data variant, on the driver, before any trial starts."""
    out = {}
    for kind, length in data_variants(cfg):
        variant = apply_sample(cfg, {"tokenizer_kind": kind, "max_length": length})
        out[variant_key(kind, length)] = prepare(variant)
    return out


def param_space(space: SearchSpace) -> dict[str, Any]:
    from ray import tune

    return {name: tune.choice(list(getattr(space, name))) for name in SPACE_KEYS}


def max_concurrent(cfg: JobConfig, resources: dict[str, float]) -> int:
    """tune.max_concurrent_trials, or how many trials' worker groups the cluster holds at once."""
    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    workers = cfg.tune.workers_per_trial
    if cfg.scaling.use_gpu:
        return max(int(resources.get("GPU", 0) // workers), 1)
    return max(int(resources.get("CPU", 1) // (workers * cfg.scaling.cpus_per_worker)), 1)


def _log_params_client(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(mask_secrets(k, v))[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def run_trial(
    sample: dict[str, Any],
    *,
    base: dict[str, Any],
    data_paths: dict[str, str],
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    search_name: str,
) -> None:
    """One Tune trial (runs in a Tune actor): a child MLflow run around one TorchTrainer fit."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.train.trainer import fit

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(JobConfig.model_validate(base), sample)
    data_path = data_paths[variant_key(cfg.tokenizer.kind, sample["max_length"])]
    cfg, _ = adapt_to_corpus(cfg, load_manifest(data_path))  # as jobs.run will train the best one
    client = MlflowClient(tracking_uri)
    run = client.create_run(
        experiment_id,
        run_name=f"{search_name}-{trial_id}",
        tags={"mlflow.parentRunId": parent_run_id, TRIAL_TAG: trial_id, "data_path": data_path},
    )
    run_id = run.info.run_id
    try:
        _log_params_client(client, run_id, {**flatten(cfg), **{f"sample.{k}": v for k, v in sample.items()}})
        result = fit(
            cfg, Path(data_path), f"{search_name}-{trial_id}", tracking_uri, run_id, callbacks=[TuneReportCallback()]
        )
        accs = [h["val_accuracy"] for h in result.history]
        client.log_metric(run_id, "best_val_accuracy", max(accs) if accs else math.nan)
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise


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


def rank_trials(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first: by the metric, ties by the tie-break (lower first; missing last), failures last."""
    sign = -1 if mode == "max" else 1

    def last_if_nan(x: float) -> float:
        return math.inf if math.isnan(x) else x

    return sorted(rows, key=lambda t: (last_if_nan(sign * t.best), last_if_nan(t.tie_break)))


def _trial_rows(results, metric: str, mode: str, runs_by_trial: dict[str, Any]) -> list[TrialRow]:
    rows = []
    for r in results:
        best, tie_break, n_epochs = trial_score(r.metrics_dataframe, metric, mode)
        trial_id = (r.metrics or {}).get("trial_id") or Path(r.path).name
        run = runs_by_trial.get(trial_id)
        if r.error is not None:
            status = "failed"
        elif run is not None and run.info.status == "RUNNING":
            status = "stopped"  # ASHA ended the trial actor before its run could close itself
        else:
            status = "finished"
        sample = {k: r.config[k] for k in SPACE_KEYS if k in (r.config or {})}
        rows.append(TrialRow(trial_id, run.info.run_id if run else None, sample, best, n_epochs, status, tie_break))
    return rank_trials(rows, mode)


def _close_stopped_runs(client: MlflowClient, rows: list[TrialRow]) -> None:
    """Trials ASHA stopped are legitimate (shorter) results: end their runs FINISHED, tagged."""
    for t in rows:
        if t.status == "stopped" and t.run_id:
            client.set_tag(t.run_id, "tune.stopped_early", "asha")
            client.set_terminated(t.run_id, RunStatus.to_string(RunStatus.FINISHED))


def comparison_table(rows: list[TrialRow], metric: str) -> dict[str, list]:
    table: dict[str, list] = {
        "trial": [t.trial_id for t in rows],
        "run_id": [t.run_id or "" for t in rows],
        f"best_{metric}": [t.best for t in rows],
        "val_loss_at_best": [t.tie_break for t in rows],
        "epochs": [t.epochs for t in rows],
        "status": [t.status for t in rows],
    }
    for name in SPACE_KEYS:
        table[SPACE_KEYS[name]] = [str(t.sample.get(name, "")) for t in rows]
    return table


def comparison_markdown(rows: list[TrialRow], metric: str, baseline_acc: float | None, top: int = 15) -> str:
    cols = list(SPACE_KEYS)
    head = f"| trial | best {metric} | val_loss there | epochs | status | " + " | ".join(cols) + " |"
    sep = "|" + "---|" * (5 + len(cols))
    lines = [head, sep] + [
        f"| {t.trial_id} | {t.best:.4f} | {t.tie_break:.4f} | {t.epochs} | {t.status} | "
        + " | ".join(str(t.sample.get(c, "")) for c in cols)
        + " |"
        for t in rows[:top]
    ]
    base = (
        f"TF-IDF + logistic regression baseline, validation accuracy **{baseline_acc:.4f}** (same split)."
        if baseline_acc is not None
        else ""
    )
    return "\n".join([f"### Search: {len(rows)} trials, best first", base, "", *lines])


def trials_plot(results, metric: str, baseline_acc: float | None):
    """Every trial's validation curve over epochs, the baseline's validation accuracy as a line."""
    fig, ax = plots.plt.subplots(figsize=(7, 4))
    for r in results:
        df = r.metrics_dataframe
        if df is not None and metric in df and "epoch" in df:
            ax.plot(df["epoch"], df[metric], marker=".", alpha=0.7)
    if baseline_acc is not None and metric == "val_accuracy":
        ax.axhline(baseline_acc, color="black", linestyle="--", label="TF-IDF + LR baseline")
        ax.legend()
    ax.set(xlabel="epoch", ylabel=metric, title="Trials (ASHA stops the lagging ones)")
    fig.tight_layout()
    return fig


def write_config(cfg: JobConfig, path: Path, header: str) -> Path:
    """A YAML the jobs load with --config: every section but `tune`, commented with its provenance."""
    body = yaml.safe_dump(cfg.model_dump(mode="json", exclude={"tune"}), sort_keys=False, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"# {line}\n" for line in header.splitlines()) + body, encoding="utf-8")
    return path


def _absolute_paths(cfg: JobConfig) -> JobConfig:
    """Tune runs trials in their own working folders: relative output paths would move with them."""
    root = str(Path(cfg.output_root).resolve()) if "://" not in cfg.output_root else cfg.output_root
    return cfg.model_copy(update={"output_root": root})


def search(cfg: JobConfig, client: MlflowClient, config_path: Path, baseline_acc: float | None = None) -> SearchOutcome:
    """Run the search on the connected Ray cluster, into `client`'s store (the job's tracking store,
    also MLflow's current URI); write the best config to `config_path`.

    `baseline_acc`: the baseline's validation accuracy, shown next to the trials (None: not shown).
    Raises UserInputError for a search-space value the job config refuses, RuntimeError when no
    trial reported a metric (every trial failed: see the trial errors).
    """
    import ray

    t0 = time.perf_counter()
    cfg = _absolute_paths(cfg)
    check_space(cfg)
    variants = prepare_variants(cfg)
    name = f"tune-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    with mlflow_run(client, cfg, cfg.tracking.run_name or name, {"tune.search": "parent"}) as parent:
        concurrent = max_concurrent(cfg, ray.cluster_resources())
        log_params(
            {
                **flatten(cfg.tune, "tune."),
                "tune.max_concurrent_trials_used": concurrent,
                "tune.data_variants": sorted(variants),
            }
        )
        if baseline_acc is not None:
            mlflow.log_metric("baseline.validation_accuracy", baseline_acc)
        results = _run_trials(cfg, client, variants, parent, name, concurrent)
        rows = _collect_trials(client, parent, results, cfg.tune.metric)
        scored = [t for t in rows if not math.isnan(t.best)]
        if not scored:
            raise RuntimeError(
                f"no trial of {name} reported {cfg.tune.metric}; every trial failed "
                f"(see {cfg.output_root}/ray_results/{name})"
            )
        best = scored[0]
        best_cfg = apply_sample(cfg, best.sample)
        header = (
            f"Found by python -m jobs.tune ({name}, {len(rows)} trials): best {cfg.tune.metric} "
            f"{best.best:.4f} in trial {best.trial_id}"
            + (f"; baseline validation accuracy {baseline_acc:.4f}" if baseline_acc is not None else "")
            + f".\nRun:  python -m jobs.run --config {config_path}"
        )
        write_config(best_cfg, config_path, header)
        _log_comparison(cfg.tune.metric, rows, results, best, config_path, baseline_acc)
    return SearchOutcome(parent.info.run_id, best_cfg, best, rows, config_path, baseline_acc, time.perf_counter() - t0)


def _run_trials(
    cfg: JobConfig, client: MlflowClient, variants: dict[str, PreparedData], parent, name: str, concurrent: int
):
    """Tuner.fit over the search space: random search, ASHA, `concurrent` trials at a time."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    tc = cfg.tune
    leaks = LeakedWorkerGroups()
    trainable = functools.partial(
        run_trial,
        base=cfg.model_dump(mode="json"),
        data_paths={
            k: str(Path(str(p.path)).resolve()) if "://" not in str(p.path) else str(p.path)
            for k, p in variants.items()
        },
        tracking_uri=client.tracking_uri,
        experiment_id=parent.info.experiment_id,
        parent_run_id=parent.info.run_id,
        search_name=name,
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, TRIAL_DRIVER_RESOURCES),
        param_space=param_space(tc.space),
        tune_config=tune.TuneConfig(
            metric=tc.metric,
            mode="max" if tc.metric == "val_accuracy" else "min",
            num_samples=tc.num_samples,
            time_budget_s=tc.time_budget_s,
            # max_t one past the last epoch: a trial that trains every epoch returns by itself (and
            # closes its MLflow run); ASHA only stops the ones that lag at a rung.
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=cfg.train.epochs + 1,
                grace_period=min(tc.grace_period, cfg.train.epochs),
                reduction_factor=tc.reduction_factor,
            ),
            # The generator bounds concurrency itself (TuneConfig's bound applies to Searchers only).
            search_alg=BasicVariantGenerator(
                points_to_evaluate=[start_point(cfg)] if tc.start_from_config else None,
                random_state=tc.seed,
                max_concurrent=concurrent,
            ),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(Path(cfg.output_root) / "ray_results"),
            verbose=1,
            callbacks=[leaks.tune_callback()],
        ),
    )
    results = tuner.fit()
    leaks.checked(leaks.drain)  # the trials the time budget ended: their CPUs back for --register's fit
    return results


def _collect_trials(client: MlflowClient, parent, results, metric: str) -> list[TrialRow]:
    """The trials, best first, their child runs found by tag; runs ASHA cut short are closed here."""
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    rows = _trial_rows(
        results, metric, "max" if metric == "val_accuracy" else "min", {r.data.tags.get(TRIAL_TAG): r for r in children}
    )
    _close_stopped_runs(client, rows)
    return rows


def _log_comparison(
    metric: str, rows: list[TrialRow], results, best: TrialRow, config_path: Path, baseline_acc: float | None
) -> None:
    """Into the parent run: counts, the trial table and plot, the best config, the description."""
    mlflow.log_metrics(
        {
            f"best_{metric}": best.best,
            "n_trials": len(rows),
            "n_stopped_early": sum(t.status == "stopped" for t in rows),
            "n_failed": sum(t.status == "failed" for t in rows),
        }
    )
    mlflow.set_tags({"tune.best_trial": best.trial_id, "tune.best_run_id": best.run_id or ""})
    mlflow.log_table(comparison_table(rows, metric), "trials.json")
    fig = trials_plot(results, metric, baseline_acc)
    mlflow.log_figure(fig, "plots/trials.png")
    plots.close(fig)
    mlflow.log_artifact(str(config_path), "best_config")
    mlflow.set_tag("mlflow.note.content", comparison_markdown(rows, metric, baseline_acc))

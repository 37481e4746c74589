"""Hyperparameter search: Ray Tune trials, each one Ray Train run, each an MLflow child run.

The shape is Ray's "Hyperparameter Tuning with Ray Tune" guide for Train V2: a Tune trial is a
small driver function (`pipeline.trials.run_trial`) that builds and fits a `TorchTrainer` with the
sampled settings and forwards every epoch's report to Tune through `TuneReportCallback`; ASHA stops
the trials that fall behind at its rungs. A trial's driver only waits on its workers, so it reserves
no CPU: `tune.max_concurrent_trials` is what bounds how many run at once (by default, as many as
the cluster's CPUs hold trial worker groups). With `tune.select_top`, the best few trials are then
trained again on fresh train/validation splits and chosen by their mean (pipeline.selection).

Data is prepared once, before any trial: a trial that changes tokenizer settings needs its own
encoded corpus, so the driver prepares one per distinct (tokenizer kind, max_length) of the
search space (each cached by content, like any prepare) and trials only read them.

MLflow: one parent run for the search (search settings, the baseline's validation accuracy, a
comparison table and plot, the re-selection's table, the chosen config as YAML) and one child run
per trial (tag `mlflow.parentRunId`; `tune.phase` search or selection), into which the trial's rank
0 logs its epochs.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from pipeline.data.prepare import PreparedData, prepare
from pipeline.data.store import StorePath, write_path
from pipeline.errors import UserInputError
from pipeline.evaluation import plots
from pipeline.selection import Candidate, choose, reselect, selection_markdown, selection_table, start_trial
from pipeline.tracking import flatten, log_params, mlflow_run
from pipeline.trials import (
    SPACE_KEYS,
    TRIAL_TAG,
    ChildRun,
    TrialRow,
    apply_sample,
    fit_tuner,
    location,
    metric_mode,
    rank_trials,
    run_trial,
    trial_score,
    variant_key,
)
from schemas.config import JobConfig, SearchSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOutcome:
    parent_run_id: str
    best_config: JobConfig
    best_trial: TrialRow
    trials: list[TrialRow]
    config_path: StorePath  # a local path or an object-store URL
    baseline_validation_accuracy: float | None
    wall_s: float
    selection: list[Candidate] = field(default_factory=list)  # best first; empty: tune.select_top=0
    chosen: Candidate | None = None  # the re-selection's choice (None: the search's best trial stands)


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


def config_yaml(cfg: JobConfig, header: str) -> str:
    """A YAML the jobs load with --config: every section but `tune`, commented with its provenance."""
    body = yaml.safe_dump(cfg.model_dump(mode="json", exclude={"tune"}), sort_keys=False, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def write_config(text: str, path: StorePath) -> StorePath:
    """`text` written whole to a local path (a temporary file renamed) or an object-store URL."""
    return write_path(path, text.encode("utf-8"))


def _absolute_paths(cfg: JobConfig) -> JobConfig:
    """Tune runs trials in their own working folders: relative output paths would move with them."""
    root = str(Path(cfg.output_root).resolve()) if "://" not in cfg.output_root else cfg.output_root
    return cfg.model_copy(update={"output_root": root})


def search(
    cfg: JobConfig, client: MlflowClient, config_path: StorePath, baseline_acc: float | None = None
) -> SearchOutcome:
    """Run the search on the connected Ray cluster, into `client`'s store (the job's tracking store,
    also MLflow's current URI); with tune.select_top, re-select among the best trials
    (pipeline.selection); write the chosen config to `config_path`.

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
        child = ChildRun(client.tracking_uri, parent.info.experiment_id, parent.info.run_id, name)
        results = _run_trials(cfg, variants, child, concurrent)
        rows = _collect_trials(client, parent, results, cfg.tune.metric)
        scored = [t for t in rows if not math.isnan(t.best)]
        if not scored:
            raise RuntimeError(
                f"no trial of {name} reported {cfg.tune.metric}; every trial failed "
                f"(see {cfg.output_root}/ray_results/{name})"
            )
        best, selection, chosen = scored[0], [], None
        if cfg.tune.select_top and len(scored) > 1:
            start = (
                start_trial(scored, start_point(cfg)) if cfg.tune.start_from_config and cfg.tune.select_start else None
            )
            selection = reselect(cfg, scored, variants, child, concurrent, start)
            chosen = choose(selection)
            best = chosen.trial if chosen else best
        best_cfg = apply_sample(cfg, best.sample)
        header = _config_header(cfg, name, rows, best, chosen, len(selection), baseline_acc, config_path)
        text = config_yaml(best_cfg, header)
        # Into the run first: if writing config_path fails (a bucket that is not there), the search's
        # result is still in MLflow (the parent run's best_config/).
        config_name = str(config_path).rstrip("/").rsplit("/", 1)[-1]
        _log_comparison(cfg.tune.metric, rows, results, best, (config_name, text), baseline_acc, selection, chosen)
        write_config(text, config_path)
    wall_s = time.perf_counter() - t0
    return SearchOutcome(parent.info.run_id, best_cfg, best, rows, config_path, baseline_acc, wall_s, selection, chosen)


def _config_header(
    cfg: JobConfig,
    name: str,
    rows: list[TrialRow],
    best: TrialRow,
    chosen: Candidate | None,
    n_candidates: int,
    baseline_acc: float | None,
    config_path: StorePath,
) -> str:
    metric = cfg.tune.metric
    how = f"best {metric} {best.best:.4f} in trial {best.trial_id}"
    if chosen is not None:
        how = (
            f"trial {best.trial_id} (search {metric} {best.best:.4f}), chosen among the top "
            f"{n_candidates} by its mean {metric} {chosen.mean:.4f} over {chosen.scored} fresh "
            "train/validation splits"
        )
    return (
        f"Found by python -m jobs.tune ({name}, {len(rows)} trials): {how}"
        + (f"; baseline validation accuracy {baseline_acc:.4f}" if baseline_acc is not None else "")
        + f".\nRun:  python -m jobs.run --config {config_path}"
    )


def _run_trials(cfg: JobConfig, variants: dict[str, PreparedData], child: ChildRun, concurrent: int):
    """Tuner.fit over the search space: random search, ASHA, `concurrent` trials at a time."""
    from ray.tune.schedulers import ASHAScheduler

    tc = cfg.tune
    trainable = functools.partial(
        run_trial,
        base=cfg.model_dump(mode="json"),
        data_paths={k: location(p.path) for k, p in variants.items()},
        parent=child,
    )
    return fit_tuner(
        cfg,
        trainable,
        param_space(tc.space),
        child.search_name,
        concurrent,
        time_budget_s=tc.time_budget_s,
        num_samples=tc.num_samples,
        # max_t one past the last epoch: a trial that trains every epoch returns by itself (and
        # closes its MLflow run); ASHA only stops the ones that lag at a rung.
        scheduler=ASHAScheduler(
            time_attr="training_iteration",
            max_t=cfg.train.epochs + 1,
            grace_period=min(tc.grace_period, cfg.train.epochs),
            reduction_factor=tc.reduction_factor,
        ),
        points_to_evaluate=[start_point(cfg)] if tc.start_from_config else None,
    )


def _collect_trials(client: MlflowClient, parent, results, metric: str) -> list[TrialRow]:
    """The trials, best first, their child runs found by tag; runs ASHA cut short are closed here."""
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    rows = _trial_rows(results, metric, metric_mode(metric), {r.data.tags.get(TRIAL_TAG): r for r in children})
    _close_stopped_runs(client, rows)
    return rows


def _log_comparison(
    metric: str,
    rows: list[TrialRow],
    results,
    best: TrialRow,
    config: tuple[str, str],
    baseline_acc: float | None,
    selection: list[Candidate],
    chosen: Candidate | None,
) -> None:
    """Into the parent run: counts, the trial table and plot, the re-selection, the best config, the
    description."""
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
    name, text = config  # the best config's file name and YAML
    mlflow.log_text(text, f"best_config/{name}")
    note = comparison_markdown(rows, metric, baseline_acc)
    if selection:
        mlflow.log_table(selection_table(selection, metric), "selection.json")
        if chosen is not None:
            mlflow.log_metric(f"selected_mean_{metric}", chosen.mean)
        note = selection_markdown(selection, metric, chosen) + "\n\n" + note
    mlflow.set_tag("mlflow.note.content", note)

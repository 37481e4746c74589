"""Re-selection: the search's best few trials, trained again on fresh train/validation splits, and
the one with the best mean validation score chosen.

Why: among dozens of trials scored on one validation split of a few hundred rows, the top score
belongs to a configuration that is good *and* lucky on those rows (the winner's curse). Measured on
this project's corpora before this step existed: the search's winners led the TF-IDF + LR baseline on
validation by 2.7-3.9 points and trailed it on test by 3.3-3.9, and on two held-out corpora
`best.yaml` beat the winner on test. A configuration's mean over re-splits it was not chosen on
(pipeline.data.resplit: same sizes and label counts, the test split untouched) has no such bias,
and averages out the luck of one training run too.

The start point (tune.start_from_config: the job config's own values; with tune.yaml a configuration
measured on several corpora) is always a candidate (tune.select_start), as the incumbent of SMAC's
intensification: a searched configuration replaces it only with a better mean over the same fresh
splits, not with one lucky validation score (ASHA may also have stopped the start trial after its
grace period on a slow start; here it trains in full).

Each (candidate, split) pair is one Ray Tune trial (grid search, no early stopping: every pair
trains as the final run would) and one MLflow child run of the search's parent run, tagged
`tune.phase=selection`. The test split is never read.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from pipeline.data.prepare import PreparedData
from pipeline.data.resplit import resplit
from pipeline.trials import (
    PHASE_TAG,
    ChildRun,
    TrialRow,
    fit_trial,
    fit_tuner,
    last_if_nan,
    location,
    metric_mode,
    sample_variant,
    trial_score,
)
from schemas.config import JobConfig


@dataclass(frozen=True)
class Candidate:
    """One of the search's top trials and its scores on the re-splits (nan: that split did not report)."""

    trial: TrialRow
    scores: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # val_loss at each split's best epoch
    start: bool = False  # the search's start point (tune.select_start keeps it a candidate)

    @property
    def scored(self) -> int:
        return sum(not math.isnan(s) for s in self.scores)

    @property
    def mean(self) -> float:
        vals = [s for s in self.scores if not math.isnan(s)]
        return sum(vals) / len(vals) if vals else math.nan

    @property
    def mean_loss(self) -> float:
        vals = [v for v in self.losses if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else math.nan


def pick_candidates(ranked: list[TrialRow], top: int, keep: TrialRow | None = None) -> list[TrialRow]:
    """The first `top` scored trials of a ranking (best first) with distinct samples; `keep` (the start
    trial), when it scored and its sample is not among them, takes the last place."""
    out: list[TrialRow] = []
    seen: list[dict[str, Any]] = []
    for t in ranked:
        if math.isnan(t.best) or t.sample in seen:
            continue
        out.append(t)
        seen.append(t.sample)
        if len(out) == top:
            break
    if keep is not None and not math.isnan(keep.best) and keep.sample not in seen:
        out = [*out[: top - 1], keep]
    return out


def start_trial(rows: list[TrialRow], point: dict[str, Any]) -> TrialRow | None:
    """The trial that took the start point `point` (pipeline.tune.start_point): the first Tune created
    (trial ids count up) whose sample holds every value of `point`; None if no trial did, or `point`
    is empty (the job config holds no value of the space: no trial started from it)."""
    if not point:
        return None
    matches = [t for t in rows if all(k in t.sample and t.sample[k] == v for k, v in point.items())]
    return min(matches, key=lambda t: t.trial_id, default=None)


def rank_candidates(cands: list[Candidate], mode: str) -> list[Candidate]:
    """Best first: candidates scored on more splits first (a mean over fewer is noisier; the time
    budget may cut the last pairs), then by the mean score, then by the mean validation loss; a
    candidate with no split scored keeps its search order, last."""
    sign = -1 if mode == "max" else 1
    order = {id(c): i for i, c in enumerate(cands)}
    return sorted(cands, key=lambda c: (-c.scored, last_if_nan(sign * c.mean), last_if_nan(c.mean_loss), order[id(c)]))


def choose(ranked: list[Candidate]) -> Candidate | None:
    """The re-selection's choice from `rank_candidates`' order: its first candidate, if at least one
    other was scored on as many splits (a comparison on equal evidence); else None, and the search's
    best trial stands (the time budget cut the re-selection before two candidates finished alike)."""
    if not ranked or not ranked[0].scored:
        return None
    peers = sum(c.scored == ranked[0].scored for c in ranked)
    return ranked[0] if peers >= 2 else None


def score_pairs(
    candidates: list[TrialRow],
    results: list[tuple[int, int, float, float]],
    splits: int,
    start: TrialRow | None = None,
) -> list[Candidate]:
    """Candidates with their per-split (score, loss) from (candidate, split, score, loss) results;
    the one that is `start` marked."""
    scores = [[math.nan] * splits for _ in candidates]
    losses = [[math.nan] * splits for _ in candidates]
    for c, s, score, loss in results:
        scores[c][s], losses[c][s] = score, loss
    return [Candidate(t, scores[i], losses[i], start=t is start) for i, t in enumerate(candidates)]


def run_selection_trial(
    point: dict[str, int],
    *,
    base: dict[str, Any],
    samples: list[dict[str, Any]],
    split_paths: dict[str, list[str]],
    parent: ChildRun,
    trial_ids: list[str],
) -> None:
    """One (candidate, split) pair (runs in a Tune actor)."""
    cfg = JobConfig.model_validate(base)
    c, s = point["candidate"], point["split"]
    sample = samples[c]
    tags = {PHASE_TAG: "selection", "tune.candidate": trial_ids[c], "tune.split": str(s)}
    fit_trial(sample, cfg, split_paths[sample_variant(sample, cfg)][s], parent, tags)


def resplit_variants(
    cfg: JobConfig, candidates: list[TrialRow], variants: dict[str, PreparedData]
) -> dict[str, list[str]]:
    """tune.select_splits re-splits of each data variant the candidates train on (prepared once)."""
    out: dict[str, list[str]] = {}
    for t in candidates:
        key = sample_variant(t.sample, cfg)
        if key not in out:
            out[key] = [
                location(resplit(variants[key].path, cfg.output_root, cfg.tune.seed, i).path)
                for i in range(cfg.tune.select_splits)
            ]
    return out


def reselect(
    cfg: JobConfig,
    ranked: list[TrialRow],
    variants: dict[str, PreparedData],
    parent: ChildRun,
    concurrent: int,
    start: TrialRow | None = None,
) -> list[Candidate]:
    """Train the top tune.select_top trials (with `start`, the start trial, among them) on
    tune.select_splits re-splits each; candidates best first."""
    from ray import tune

    tc = cfg.tune
    candidates = pick_candidates(ranked, tc.select_top, keep=start)
    if len(candidates) < 2:  # one distinct configuration: nothing to choose between
        return []
    split_paths = resplit_variants(cfg, candidates, variants)
    trainable = functools.partial(
        run_selection_trial,
        base=cfg.model_dump(mode="json"),
        samples=[t.sample for t in candidates],
        split_paths=split_paths,
        parent=parent,
        trial_ids=[t.trial_id for t in candidates],
    )
    # Split-major order: with a time budget, every candidate gets split 0 before any gets split 1.
    space = {
        "split": tune.grid_search(list(range(tc.select_splits))),
        "candidate": tune.grid_search(list(range(len(candidates)))),
    }
    results = fit_tuner(
        cfg, trainable, space, f"{parent.search_name}-selection", concurrent, time_budget_s=tc.select_time_budget_s
    )
    _close_cut_runs(parent)
    mode = metric_mode(tc.metric)
    pairs = []
    for r in results:
        if r.config and "candidate" in r.config:
            score, loss, _ = trial_score(r.metrics_dataframe, tc.metric, mode)
            pairs.append((r.config["candidate"], r.config["split"], score, loss))
    return rank_candidates(score_pairs(candidates, pairs, tc.select_splits, start), mode)


def _close_cut_runs(parent: ChildRun) -> None:
    """Pairs the time budget (tune.select_time_budget_s) ended leave their runs RUNNING: close them,
    tagged, as the search closes the trials ASHA stopped."""
    client = MlflowClient(parent.tracking_uri)
    cut = client.search_runs(
        [parent.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.parent_run_id}' and tags.`{PHASE_TAG}` = 'selection' "
        "and attributes.status = 'RUNNING'",
    )
    for run in cut:
        client.set_tag(run.info.run_id, "tune.stopped_early", "time_budget")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))


def selection_table(cands: list[Candidate], metric: str) -> dict[str, list]:
    splits = max((len(c.scores) for c in cands), default=0)
    table: dict[str, list] = {
        "trial": [c.trial.trial_id for c in cands],
        "start": [c.start for c in cands],
        "run_id": [c.trial.run_id or "" for c in cands],
        f"search_{metric}": [c.trial.best for c in cands],
        f"mean_{metric}": [c.mean for c in cands],
        "mean_val_loss": [c.mean_loss for c in cands],
    }
    for s in range(splits):
        table[f"split_{s}"] = [c.scores[s] for c in cands]
    return table


def candidate_label(c: Candidate) -> str:
    """A candidate's trial id, "(start)" after the search's start point (tune.select_start)."""
    return f"{c.trial.trial_id} (start)" if c.start else c.trial.trial_id


def selection_markdown(cands: list[Candidate], metric: str, chosen: Candidate | None) -> str:
    splits = max((len(c.scores) for c in cands), default=0)
    head = f"| trial | search {metric} | mean on re-splits | mean val_loss | " + " | ".join(
        f"split {s}" for s in range(splits)
    )
    verdict = (
        f"Chosen: trial {chosen.trial.trial_id}, mean {metric} {chosen.mean:.4f} over {chosen.scored} splits."
        if chosen is not None
        else "No choice: fewer than two candidates finished as many splits within tune.select_time_budget_s; "
        "the search's best trial stands."
    )
    lines = [
        f"### Re-selection: the top {len(cands)} trials on {splits} fresh train/validation splits, best first",
        verdict,
        "",
        head + " |",
        "|" + "---|" * (4 + splits),
    ]
    lines += [
        f"| {candidate_label(c)} | {c.trial.best:.4f} | {c.mean:.4f} | {c.mean_loss:.4f} | "
        + " | ".join(f"{s:.4f}" for s in c.scores)
        + " |"
        for c in cands
    ]
    return "\n".join(lines)

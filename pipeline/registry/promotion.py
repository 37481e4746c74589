"""Move the registry alias only when a new version is measurably better.

The candidate and the current champion are scored by the same code on the same held-out test
split (raw text through each version's own pyfunc, so each uses its own tokenizer). The gate:
no NaN, a minimum metric, a minimum improvement, and McNemar's test on the paired predictions
so that noise does not move the alias; optionally (promotion.require_beats_baseline) the same
test against the TF-IDF + logistic regression baseline fitted on the same split. A NaN or
failed evaluation never moves it. The decision is made under a registry lock after re-reading
the alias (compare-and-set).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from pipeline.errors import UserInputError
from pipeline.evaluation.metrics import classification_metrics
from pipeline.registry.lock import registry_lock
from schemas.config import PromotionConfig
from schemas.signature import TEXT_COLUMN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    version: str
    promoted: bool
    reason: str
    candidate: dict[str, float]
    champion_version: str | None
    champion: dict[str, float] | None
    baseline: dict[str, float] | None = None  # the baseline's test metrics, when the gate was given one
    p_value: float | None = None  # McNemar's, candidate vs champion; None without a champion
    unchanged: bool = False  # the version held the alias or was decided before: nothing was decided or tagged

    @property
    def outcome(self) -> str:
        return "unchanged" if self.unchanged else "promoted" if self.promoted else "rejected"

    def tags(self, metric: str) -> dict[str, str]:
        extra = {f"promotion.baseline_{metric}": f"{self.baseline.get(metric, math.nan):.6f}"} if self.baseline else {}
        return {
            **extra,
            "promotion.decision": self.outcome,
            "promotion.reason": self.reason,
            f"promotion.candidate_{metric}": f"{self.candidate.get(metric, math.nan):.6f}",
            "promotion.champion_version": self.champion_version or "none",
            f"promotion.champion_{metric}": (f"{self.champion.get(metric, math.nan):.6f}" if self.champion else "none"),
            "promotion.time": datetime.now(UTC).isoformat(timespec="seconds"),
        }


@dataclass(frozen=True)
class Score:
    metrics: dict[str, float]
    correct: np.ndarray  # per test row: did the model get it right (for the paired test)


def score_model(model_uri: str, texts: list[str], labels: np.ndarray, label_names: list[str]) -> Score:
    """Load a registered pyfunc and compute test metrics on raw text.

    `models:/` URIs resolve through MLflow's tracking URI, which the job set at its boundary
    (pipeline.tracking.tracking_store) to the same store as the client it passes around.
    """
    model = mlflow.pyfunc.load_model(model_uri)
    out = model.predict(pd.DataFrame({TEXT_COLUMN: texts}))
    cols = [f"p_{n}" for n in label_names]
    missing = [c for c in cols if c not in out.columns]
    if missing:
        raise ValueError(f"{model_uri} returns columns {list(out.columns)}, lacking {missing}: its label set differs")
    proba = out[cols].to_numpy(dtype=np.float64)
    correct = proba.argmax(axis=1) == np.asarray(labels) if np.isfinite(proba).all() else np.zeros(len(labels), bool)
    return Score(classification_metrics(labels, proba), correct)


def label_names_of(name: str, version: str) -> list[str] | None:
    """A registered version's label names, read from its signature's `p_<label>` outputs; None when its
    model cannot be read from here (then it cannot be scored either, and counts as NaN in the gate)."""
    try:
        signature = mlflow.models.get_model_info(f"models:/{name}/{version}").signature
    except Exception as e:  # e.g. mlflow-artifacts:/ files while this job talks to the database directly
        log.warning("labels of %s/%s could not be read: %s", name, version, str(e).splitlines()[0])
        return None
    return [c.removeprefix("p_") for c in signature.outputs.input_names() if c.startswith("p_")]


def mcnemar_p(candidate_correct: np.ndarray, champion_correct: np.ndarray) -> float:
    """One-sided exact McNemar test: p-value that the candidate is no better than the champion.

    Only the rows where the two disagree carry information; under the null each such row is a
    fair coin for either model.
    """
    from scipy.stats import binomtest

    wins = int(np.sum(candidate_correct & ~champion_correct))
    losses = int(np.sum(~candidate_correct & champion_correct))
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


def decide(
    candidate: dict[str, float], champion: dict[str, float] | None, cfg: PromotionConfig, p_value: float = 0.0
) -> tuple[bool, str]:
    """The gate. `p_value`: McNemar's, candidate vs champion (ignored without a champion)."""
    m = cfg.metric
    cand = candidate.get(m, math.nan)
    if not math.isfinite(cand):
        return False, f"candidate {m} is {cand}: not a number"
    if champion is None:
        if cand >= cfg.min_metric:
            return True, f"first version: {m} {cand:.4f} >= min_metric {cfg.min_metric}"
        return False, f"first version: {m} {cand:.4f} < min_metric {cfg.min_metric}"
    champ = champion.get(m, math.nan)
    if not math.isfinite(champ):
        return cand >= cfg.min_metric, f"champion {m} is {champ}; candidate {cand:.4f} vs min_metric {cfg.min_metric}"
    if cand < cfg.min_metric:
        return False, f"{m} {cand:.4f} < min_metric {cfg.min_metric}"
    if cand - champ < cfg.min_improvement:
        return False, f"{m} {cand:.4f} does not beat champion {champ:.4f} by {cfg.min_improvement}"
    if cfg.significance < 1.0 and not p_value < cfg.significance:
        return False, (
            f"{m} {cand:.4f} beats champion {champ:.4f} but not significantly "
            f"(McNemar p={p_value:.3g} >= {cfg.significance})"
        )
    return True, f"{m} {cand:.4f} beats champion {champ:.4f} by >= {cfg.min_improvement} (McNemar p={p_value:.3g})"


def baseline_gate(candidate: Score, baseline: Score, cfg: PromotionConfig) -> tuple[bool, str]:
    """promotion.require_beats_baseline: the candidate's metric above the baseline's on the same test
    rows AND McNemar's one-sided p < significance (as against a champion). The reason names both."""
    if len(candidate.correct) != len(baseline.correct):
        raise ValueError(
            f"candidate scored {len(candidate.correct)} test rows, its baseline {len(baseline.correct)}: "
            "they must be scored on the same split"
        )
    m = cfg.metric
    cand, base = candidate.metrics.get(m, math.nan), baseline.metrics.get(m, math.nan)
    p = mcnemar_p(candidate.correct, baseline.correct)
    above = math.isfinite(cand) and math.isfinite(base) and cand > base
    if above and (cfg.significance >= 1.0 or p < cfg.significance):
        return True, f"{m} {cand:.4f} beats its baseline {base:.4f} (TF-IDF + LR; McNemar p={p:.3g})"
    how = "is above but not significantly better than" if above else "does not beat"
    return False, (
        f"{m} {cand:.4f} {how} its baseline {base:.4f} (TF-IDF + LR on the same test rows; "
        f"McNemar p={p:.3g}, needs < {cfg.significance})"
    )


def current_alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def _champion_score(name: str, version: str, texts, labels, label_names, cfg: PromotionConfig) -> Score:
    try:
        return score_model(f"models:/{name}/{version}", texts, labels, label_names)
    except Exception as e:  # a broken champion counts as NaN: a good candidate may replace it
        log.warning("champion %s/%s could not be scored: %s", name, version, e)
        return Score({cfg.metric: math.nan}, np.zeros(len(labels), bool))


def promote_version(
    client: MlflowClient,
    name: str,
    version: str,
    texts: list[str],
    labels: np.ndarray,
    label_names: list[str],
    cfg: PromotionConfig,
    baseline: Score | None = None,
) -> Decision:
    """Evaluate `version` against the alias holder and move the alias if the gate passes.

    `baseline`: the TF-IDF + LR baseline scored on the same test rows; required (ValueError
    otherwise) when cfg.require_beats_baseline, which then refuses a version that does not beat it
    (no alias moves, not even challenger).

    Scoring runs without the lock (it is the slow part); the decision and the alias update run
    under the registry lock, after re-reading the alias: if it moved meanwhile, the new
    champion is scored and the decision remade (compare-and-set). Records the decision as tags
    on the version. Raises if the candidate cannot be evaluated, leaving the alias where it was.
    """
    version = str(version)  # stores return int or str versions; compare them as strings
    if cfg.require_beats_baseline and baseline is None:
        raise ValueError("promotion.require_beats_baseline=true needs the baseline's test predictions")
    candidate = _score_candidate(client, name, version, texts, labels, label_names)
    scores: dict[str, Score] = {}

    def champion_score(v: str) -> Score:  # each champion scored once, outside the lock when possible
        if v not in scores:
            scores[v] = _champion_score(name, v, texts, labels, label_names, cfg)
        return scores[v]

    seen = current_alias_version(client, name, cfg.alias)
    if seen and seen != version:
        champion_score(seen)
    with registry_lock(client, name, cfg.lock_ttl_s, cfg.lock_wait_s):
        decision = _decide_and_move(client, name, version, candidate, champion_score, cfg, baseline, label_names)
        if not decision.unchanged:  # a version judged again keeps its first record
            for k, v in decision.tags(cfg.metric).items():
                client.set_model_version_tag(name, version, k, v)
        record_decision(client, name, decision, cfg.metric)
    client.update_registered_model(name, description=registry_description(name, cfg))
    if not decision.unchanged:  # nor is its run's Promotion section rewritten
        record_on_run(client, client.get_model_version(name, version).run_id, decision, cfg)
    return decision


def _score_candidate(client: MlflowClient, name: str, version: str, texts, labels, label_names) -> Score:
    try:
        return score_model(f"models:/{name}/{version}", texts, labels, label_names)
    except Exception as e:
        client.set_model_version_tag(name, version, "promotion.decision", "error")
        client.set_model_version_tag(name, version, "promotion.reason", f"evaluation failed: {e}"[:5000])
        raise


def _decide_and_move(
    client: MlflowClient,
    name: str,
    version: str,
    candidate: Score,
    champion_score: Callable[[str], Score],
    cfg: PromotionConfig,
    baseline: Score | None = None,
    label_names: list[str] | None = None,
) -> Decision:
    """Compare-and-set, under the lock: re-read the alias, judge against whoever holds it now, move it.
    With a baseline, its comparison joins the reason; with cfg.require_beats_baseline it is a gate.
    A candidate whose label names differ from the champion's is refused: their metrics measure
    different tasks (the champion, unable to score these labels, would otherwise count as NaN)."""
    champion_version = current_alias_version(client, name, cfg.alias)
    if champion_version == version:
        return Decision(
            version, False, f"already {cfg.alias}", candidate.metrics, version, candidate.metrics, unchanged=True
        )
    earlier = _earlier_decision(client, name, version)
    if earlier is not None:  # decided before: nothing moves, nothing is rewritten
        return Decision(version, False, earlier, candidate.metrics, champion_version, None, unchanged=True)
    if champion_version is not None and label_names is not None:
        theirs = label_names_of(name, champion_version)
        if theirs is not None and list(theirs) != list(label_names):
            return Decision(
                version,
                False,
                f"label names {list(label_names)} differ from champion "
                f"v{champion_version}'s {theirs}; register it under another "
                "tracking.registered_model_name",
                candidate.metrics,
                champion_version,
                None,
            )
    champion, p_value = None, 0.0
    if champion_version is not None:
        champ = champion_score(champion_version)  # if the alias moved while we scored: the new holder
        champion, p_value = champ.metrics, mcnemar_p(candidate.correct, champ.correct)
    promoted, reason = decide(candidate.metrics, champion, cfg, p_value)
    if champion_version is not None:
        reason += _other_data_note(client, name, version, champion_version)
    beats_baseline = True
    if baseline is not None:
        beats_baseline, baseline_reason = baseline_gate(candidate, baseline, cfg)
        beats_baseline = beats_baseline or not cfg.require_beats_baseline
        promoted, reason = (promoted, f"{reason}; {baseline_reason}") if beats_baseline else (False, baseline_reason)
    if promoted:
        client.set_model_version_tag(name, version, "promotion.previous_champion", champion_version or "none")
        client.set_registered_model_alias(name, cfg.alias, version)
        if champion_version is not None:
            mark_superseded(client, name, champion_version, version, cfg.alias)
    elif (
        beats_baseline
        and math.isfinite(value := candidate.metrics.get(cfg.metric, math.nan))
        and value >= cfg.min_metric
    ):  # a version below its baseline is not even challenger
        client.set_registered_model_alias(name, cfg.challenger_alias, version)
    return Decision(
        version,
        promoted,
        reason,
        candidate.metrics,
        champion_version,
        champion,
        baseline.metrics if baseline else None,
        p_value if champion_version is not None else None,
    )


def _earlier_decision(client: MlflowClient, name: str, version: str) -> str | None:
    """'already rejected (<its reason>)' when the version was judged before (promoted or rejected); None
    when it never was or its evaluation failed ("error": a rerun retries it). A decided version keeps its
    record: a rerun of a finished job, or jobs.promote on a rejected or replaced version, must not rewrite
    it (--rollback moves the alias back to a replaced champion)."""
    tags = client.get_model_version(name, version).tags
    decision = tags.get("promotion.decision")
    if decision not in ("promoted", "rejected"):
        return None
    return f"already {decision} ({tags.get('promotion.reason', 'no reason recorded')})"


def mark_superseded(client: MlflowClient, name: str, old: str, new: str, alias: str) -> None:
    """Say on the replaced version's page that it was replaced, by which version and when."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, old, f"{alias}.superseded_by", new)
    client.set_model_version_tag(name, old, f"{alias}.superseded_at", stamp)
    before = client.get_model_version(name, old).description or ""
    client.update_model_version(name, old, description=f"**Replaced as {alias} by v{new} at {stamp}.**\n\n{before}")


def registry_description(name: str, cfg: PromotionConfig) -> str:
    """The registered model's description: what the aliases mean and how a version earns them."""
    test = (
        ""
        if cfg.significance >= 1.0
        else (f" and McNemar's exact test on the paired test predictions gives p < {cfg.significance}")
    )
    # One line per paragraph: the UI keeps source line breaks, so wrapped lines would show wrapped.
    paragraphs = [
        "Raw-text classifier trained by `jobs.train` (rnn-textcls); each version is one training run.",
        f"**`@{cfg.alias}`** is what serving loads (`models:/{name}@{cfg.alias}`). `jobs.promote` moves it only "
        f"when a new version, scored with the same code on the same held-out test split as the current "
        f"{cfg.alias}, passes the gate: its test {cfg.metric} is at least {cfg.min_metric}, beats the "
        f"{cfg.alias}'s by at least {cfg.min_improvement}{test}. A first version needs only the minimum.",
        f"**`@{cfg.challenger_alias}`** marks the newest version that reached the minimum but not the gate.",
        f"Every decision is recorded as `promotion.*` tags on the version and on its run; a replaced "
        f"{cfg.alias} carries `{cfg.alias}.superseded_by` / `{cfg.alias}.superseded_at`. "
        f"`python -m jobs.promote --history` lists them; `--rollback` moves the alias back to the previous "
        f"{cfg.alias}.",
    ]
    return "\n\n".join(paragraphs)


def record_on_run(client: MlflowClient, run_id: str | None, decision: Decision, cfg: PromotionConfig) -> None:
    """The gate's outcome on the version's run: tags, and a "Promotion" section in its description."""
    if not run_id:
        return
    for k, v in {
        **decision.tags(cfg.metric),
        "promotion.version": decision.version,
        "promotion.p_value": "none" if decision.p_value is None else f"{decision.p_value:.4g}",
        "promotion.min_improvement": str(cfg.min_improvement),
    }.items():
        client.set_tag(run_id, k, v)
    note = client.get_run(run_id).data.tags.get("mlflow.note.content", "")
    note = note.split(PROMOTION_HEADING)[0].rstrip()  # a re-run of the gate replaces the section
    client.set_tag(run_id, "mlflow.note.content", f"{note}\n\n{promotion_section(decision, cfg)}")


PROMOTION_HEADING = "### Promotion"


def promotion_section(d: Decision, cfg: PromotionConfig) -> str:
    m = cfg.metric
    champion = (
        "none (first version)"
        if d.champion_version is None
        else f"v{d.champion_version}, test {m} {(d.champion or {}).get(m, math.nan):.4f}"
    )
    p = "-" if d.p_value is None else f"{d.p_value:.3g} (needs < {cfg.significance})"
    baseline = f"| TF-IDF baseline test {m} | {d.baseline.get(m, math.nan):.4f} |\n" if d.baseline else ""
    return f"""{PROMOTION_HEADING}
| | |
|---|---|
| decision | **{"promoted to @" + cfg.alias if d.promoted else "not promoted"}** (v{d.version}) |
| reason | {d.reason} |
| candidate test {m} | {d.candidate.get(m, math.nan):.4f} |
| compared against | {champion} |
| McNemar p-value | {p} |
| min improvement | {cfg.min_improvement} (min {m} {cfg.min_metric}) |
{baseline}"""


def _other_data_note(client: MlflowClient, name: str, version: str, champion_version: str) -> str:
    """'; ...' when the two versions were trained on different data (their `data_digest` tags): the
    comparison on this test split is then not the like-for-like one a reader would assume."""
    ours = client.get_model_version(name, version).tags.get("data_digest")
    theirs = client.get_model_version(name, champion_version).tags.get("data_digest")
    if ours and theirs and ours != theirs:
        return f"; trained on other data than champion v{champion_version} (data_digest {ours[:12]} vs {theirs[:12]})"
    return ""


def history_experiment(name: str) -> str:
    return f"{name}-promotions"


def record_decision(client: MlflowClient, name: str, decision: Decision, metric: str) -> None:
    """Append `decision` to the durable history: one finished MLflow run per decision in the experiment
    `<registered model>-promotions`. Version tags hold only the latest decision; these runs are never
    rewritten, so every decision (and the reason) stays readable."""
    try:
        experiment_id = client.create_experiment(history_experiment(name))
    except mlflow.exceptions.MlflowException:  # exists (or created concurrently)
        experiment_id = client.get_experiment_by_name(history_experiment(name)).experiment_id
    tags = {**decision.tags(metric), "promotion.version": decision.version, "registered_model": name}
    run = client.create_run(experiment_id, tags=tags, run_name=f"v{decision.version}-{decision.outcome}")
    client.set_terminated(run.info.run_id, "FINISHED")


def history(client: MlflowClient, name: str) -> list[dict[str, str]]:
    """Every recorded decision, newest first, with the aliases each version holds now.

    Aliases come from the registered model: search_model_versions leaves them empty."""
    exp = client.get_experiment_by_name(history_experiment(name))
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"]) if exp else []
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for r in runs:
        t, v = r.data.tags, r.data.tags.get("promotion.version", "-")
        rows.append(
            {
                "version": v,
                "aliases": ",".join(sorted(aliases.get(v, []))),
                "decision": t.get("promotion.decision", "-"),
                "reason": t.get("promotion.reason", "-"),
                "time": t.get("promotion.time", "-"),
                "run_id": r.info.run_id,
            }
        )
    return rows


def rollback(client: MlflowClient, name: str, cfg: PromotionConfig) -> tuple[str, str]:
    """Move the alias back to the champion before the current one. Returns (from, to)."""
    with registry_lock(client, name, cfg.lock_ttl_s, cfg.lock_wait_s):
        current = current_alias_version(client, name, cfg.alias)
        if current is None:
            raise UserInputError(f"registered model {name!r} has no {cfg.alias!r} alias to roll back")
        previous = client.get_model_version(name, current).tags.get("promotion.previous_champion", "none")
        if previous == "none":
            raise UserInputError(f"{name} v{current} was the first {cfg.alias}; there is nothing to roll back to")
        client.set_registered_model_alias(name, cfg.alias, previous)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_model_version_tag(name, current, "promotion.rolled_back", f"{stamp} -> v{previous}")
    return current, previous

"""Move the registry alias only when a new version is measurably better.

The candidate and the current champion are scored by the same code on the same held-out test
split (raw text through each version's own pyfunc, so each uses its own tokenizer). A NaN or a
failed evaluation never moves the alias. Just before the alias is set it is read again: if
another job moved it meanwhile, the decision is remade against the new champion.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from pipeline.evaluate import classification_metrics
from schemas.config import PromotionConfig
from schemas.signature import TEXT_COLUMN

log = logging.getLogger(__name__)
CHALLENGER = "challenger"


@dataclass(frozen=True)
class Decision:
    version: str
    promoted: bool
    reason: str
    candidate: dict[str, float]
    champion_version: str | None
    champion: dict[str, float] | None

    def tags(self, metric: str) -> dict[str, str]:
        return {
            "promotion.decision": "promoted" if self.promoted else "rejected",
            "promotion.reason": self.reason,
            f"promotion.candidate_{metric}": f"{self.candidate.get(metric, math.nan):.6f}",
            "promotion.champion_version": self.champion_version or "none",
            f"promotion.champion_{metric}": (
                f"{self.champion.get(metric, math.nan):.6f}" if self.champion else "none"
            ),
            "promotion.time": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def score_model(model_uri: str, texts: list[str], labels: np.ndarray, label_names: list[str]) -> dict[str, float]:
    """Load a registered pyfunc and compute test metrics on raw text."""
    model = mlflow.pyfunc.load_model(model_uri)
    out = model.predict(pd.DataFrame({TEXT_COLUMN: texts}))
    cols = [f"p_{n}" for n in label_names]
    missing = [c for c in cols if c not in out.columns]
    if missing:
        raise ValueError(f"{model_uri} returns columns {list(out.columns)}, not the labels' {missing}: label sets differ")
    return classification_metrics(labels, out[cols].to_numpy(dtype=np.float64))


def decide(candidate: dict[str, float], champion: dict[str, float] | None, cfg: PromotionConfig) -> tuple[bool, str]:
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
    if cand - champ >= cfg.min_improvement:
        return True, f"{m} {cand:.4f} beats champion {champ:.4f} by >= {cfg.min_improvement}"
    return False, f"{m} {cand:.4f} does not beat champion {champ:.4f} by {cfg.min_improvement}"


def current_alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return client.get_model_version_by_alias(name, alias).version
    except mlflow.exceptions.MlflowException:
        return None


def promote_version(
    client: MlflowClient, name: str, version: str, texts: list[str], labels: np.ndarray, label_names: list[str],
    cfg: PromotionConfig, max_rounds: int = 3,
) -> Decision:
    """Evaluate `version` against the alias holder and move the alias if the gate passes.

    Records the decision as tags on the version. Raises if the candidate cannot be evaluated
    (after recording that), leaving the alias where it was.
    """
    try:
        candidate = score_model(f"models:/{name}/{version}", texts, labels, label_names)
    except Exception as e:
        client.set_model_version_tag(name, version, "promotion.decision", "error")
        client.set_model_version_tag(name, version, "promotion.reason", f"evaluation failed: {e}"[:5000])
        raise
    champion_version = current_alias_version(client, name, cfg.alias)
    for _ in range(max_rounds):
        if champion_version == version:
            decision = Decision(version, False, f"already {cfg.alias}", candidate, version, candidate)
            break
        champion = None
        if champion_version is not None:
            try:
                champion = score_model(f"models:/{name}/{champion_version}", texts, labels, label_names)
            except Exception as e:  # a broken champion is treated as NaN: a good candidate replaces it
                log.warning("champion %s could not be scored: %s", champion_version, e)
                champion = {cfg.metric: math.nan}
        promoted, reason = decide(candidate, champion, cfg)
        decision = Decision(version, promoted, reason, candidate, champion_version, champion)
        # Compare-and-set: the alias may have moved while we evaluated.
        now = current_alias_version(client, name, cfg.alias)
        if now != champion_version:
            log.info("alias %s moved from %s to %s during evaluation; deciding again", cfg.alias, champion_version, now)
            champion_version = now
            continue
        if promoted:
            client.set_registered_model_alias(name, cfg.alias, version)
        elif math.isfinite(candidate.get(cfg.metric, math.nan)) and candidate[cfg.metric] >= cfg.min_metric:
            client.set_registered_model_alias(name, CHALLENGER, version)
        break
    else:
        decision = Decision(version, False, "alias kept moving during evaluation; not promoted", candidate,
                            champion_version, None)
    for k, v in decision.tags(cfg.metric).items():
        client.set_model_version_tag(name, version, k, v)
    return decision

"""The strong simple baseline every run is measured against: TF-IDF n-grams + logistic regression.

Character n-grams within word boundaries (`char_wb`, 1-3 by default) alone, or together with
word 1-2-grams, each block TF-IDF weighted with sublinear term frequency, feed a logistic
regression; the feature set and the inverse regularization C are chosen on the validation split
from a small grid (for Chinese, where a "word" is a whole clause, the character block alone
usually wins; for English the two together). On the embedded corpus character 1-3-grams with
C=10 scored 0.861, above the best RNN measured (0.843): a run that does not beat its baseline has
not learned more than which n-grams occur, and the user should know that.

Fitted on the raw texts of the stored training split (the same rows the network trains on),
deterministically (liblinear with a fixed random state for two classes; lbfgs's multinomial model
for more, which liblinear cannot fit), so two fits on the same split give the same predictions.
The per-row test predictions are kept so that the promotion gate can compare the network and the
baseline on the same rows with McNemar's test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from pipeline.data.store import StorePath, read_texts
from pipeline.evaluation.metrics import classification_metrics
from schemas.config import BaselineConfig

# Words are runs of letters/digits, single characters included ("i", "a"), unlike sklearn's
# default pattern, which drops them; character n-grams cover the rest (punctuation, Chinese).
WORD_PATTERN = r"(?u)\b\w+\b"
NAME = "tfidf-logreg"


FEATURE_SETS = (("char",), ("word", "char"))  # tried in this order; a tie keeps the earlier (smaller)


@dataclass(frozen=True)
class BaselineResult:
    features: str  # the chosen feature set: "char" or "word+char"
    c: float  # the chosen inverse regularization strength
    validation_accuracy: float  # at the chosen C
    test_metrics: dict[str, float]  # accuracy, precision, recall, f1 (roc_auc for two classes)
    test_pred: np.ndarray  # [n_test] predicted label id per test row, in the stored order
    test_correct: np.ndarray  # [n_test] bool: prediction == label
    n_features: int
    fit_s: float

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow: `baseline.test_accuracy`, `baseline.c`, ..."""
        out = {f"baseline.test_{k}": v for k, v in self.test_metrics.items()}
        out.update(
            {
                "baseline.validation_accuracy": self.validation_accuracy,
                "baseline.c": self.c,
                "baseline.n_features": float(self.n_features),
                "baseline.fit_s": self.fit_s,
            }
        )
        return out


def _vectorizers(cfg: BaselineConfig) -> dict[str, TfidfVectorizer]:
    return {
        "word": TfidfVectorizer(
            analyzer="word",
            ngram_range=(1, cfg.word_ngram_max),
            token_pattern=WORD_PATTERN,
            min_df=cfg.min_df,
            sublinear_tf=True,
            lowercase=True,
        ),
        "char": TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=tuple(cfg.char_ngram_range),
            min_df=cfg.min_df,
            sublinear_tf=True,
            lowercase=True,
        ),
    }


def _blocks(texts: dict[str, list[str]], cfg: BaselineConfig) -> dict[str, dict]:
    """{'word'|'char': {split: TF-IDF matrix}}, each vectorizer fitted on the training split only.
    A block with no feature (no word of two characters in a corpus, say) is left out."""
    out = {}
    for name, vec in _vectorizers(cfg).items():
        try:
            train = vec.fit_transform(texts["train"])
        except ValueError:  # empty vocabulary
            continue
        out[name] = {"train": train, **{s: vec.transform(texts[s]) for s in ("validation", "test")}}
    return out


def fit_baseline(texts: dict[str, list[str]], labels: dict[str, np.ndarray], cfg: BaselineConfig) -> BaselineResult:
    """Fit on texts['train'], pick the feature set and C on texts['validation'], score texts['test'].

    `labels` are label ids (ints). Ties go to the smaller feature set, then to the smaller C (more
    regularization). Raises ValueError when the training split has a single class or no features.
    """
    t0 = time.perf_counter()
    y_train, y_val = np.asarray(labels["train"]), np.asarray(labels["validation"])
    n_train_classes = len(np.unique(y_train))
    if n_train_classes < 2:
        raise ValueError("the baseline needs at least two classes in the training split")
    blocks = _blocks(texts, cfg)
    best = None
    for names in (f for f in FEATURE_SETS if all(n in blocks for n in f)):
        x = {s: hstack([blocks[n][s] for n in names]).tocsr() for s in ("train", "validation", "test")}
        for c in sorted(cfg.c_values):
            clf = _classifier(c, n_train_classes, cfg)
            clf.fit(x["train"], y_train)
            val_acc = float(np.mean(clf.predict(x["validation"]) == y_val)) if len(y_val) else 0.0
            if best is None or val_acc > best[2]:
                best = ("+".join(names), c, val_acc, clf, x["test"])
    if best is None:
        raise ValueError("the baseline found no word or character n-gram in the training split")
    features, c, val_acc, clf, x_test = best
    y_test = np.asarray(labels["test"])
    proba = _full_proba(clf, x_test, n_classes=int(max(y_train.max(), np.max(y_test, initial=0))) + 1)
    pred = proba.argmax(axis=1)
    return BaselineResult(
        features=features,
        c=c,
        validation_accuracy=val_acc,
        test_metrics=classification_metrics(y_test, proba),
        test_pred=pred,
        test_correct=pred == y_test,
        n_features=x_test.shape[1],
        fit_s=time.perf_counter() - t0,
    )


def _classifier(c: float, n_classes: int, cfg: BaselineConfig) -> LogisticRegression:
    """liblinear for two classes (the figures quoted for the binary corpora are its fits); the
    multinomial (softmax) model by lbfgs for more: liblinear fits binary problems only, and the
    scikit-learn installed here (1.9) refuses it on three or more classes rather than fitting one-vs-rest."""
    if n_classes > 2:
        return LogisticRegression(C=c, solver="lbfgs", max_iter=cfg.max_iter)
    return LogisticRegression(C=c, solver="liblinear", max_iter=cfg.max_iter, random_state=0)


def _full_proba(clf: LogisticRegression, x, n_classes: int) -> np.ndarray:
    """Probabilities over every label id, also those absent from training (they get 0)."""
    out = np.zeros((x.shape[0], max(n_classes, len(clf.classes_))), dtype=np.float64)
    out[:, clf.classes_] = clf.predict_proba(x)
    return out


def fit_on_prepared(path: StorePath, cfg: BaselineConfig) -> BaselineResult:
    """The baseline on a prepared corpus's stored splits (raw texts and label ids)."""
    texts, labels = {}, {}
    for split in ("train", "validation", "test"):
        texts[split], labels[split] = read_texts(path, split)
    return fit_baseline(texts, labels, cfg)


@dataclass(frozen=True)
class Comparison:
    """The model against its baseline on the same test rows (one-sided exact McNemar tests)."""

    baseline: BaselineResult
    model_accuracy: float
    p_better: float  # p-value that the model is no better than the baseline
    p_worse: float  # p-value that the model is no worse
    significance: float = 0.05  # below it a difference counts (promotion.significance)

    @property
    def points(self) -> float:
        return 100 * (self.model_accuracy - self.baseline.test_metrics["accuracy"])

    def line(self) -> str:
        b = self.baseline
        base = b.test_metrics["accuracy"]
        if self.model_accuracy > base:
            verdict = "beats" if self.p_better < self.significance else "is level with (not significantly above)"
        else:
            verdict = "is below" if self.p_worse < self.significance else "is level with (not significantly below)"
        return (
            f"model {self.model_accuracy:.4f} {verdict} baseline {base:.4f} ({self.points:+.1f} points; "
            f"McNemar p_better={self.p_better:.3g}, p_worse={self.p_worse:.3g}; TF-IDF {b.features} + "
            f"logistic regression, C={b.c:g})"
        )


def compare(model_correct: np.ndarray, baseline: BaselineResult, significance: float = 0.05) -> Comparison:
    """`model_correct`: per test row, in the stored order, whether the model was right."""
    from pipeline.registry.promotion import mcnemar_p

    model_correct = np.asarray(model_correct, dtype=bool)
    if len(model_correct) != len(baseline.test_correct):
        raise ValueError(f"the model scored {len(model_correct)} test rows, the baseline {len(baseline.test_correct)}")
    return Comparison(
        baseline,
        float(model_correct.mean()) if len(model_correct) else float("nan"),
        mcnemar_p(model_correct, baseline.test_correct),
        mcnemar_p(baseline.test_correct, model_correct),
        significance,
    )

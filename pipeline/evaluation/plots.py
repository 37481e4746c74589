"""Pictures for reviewers in the MLflow UI: learning curves, confusion matrix, ROC, token lengths."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: scheduled jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix, roc_curve  # noqa: E402


def learning_curves(history: list[dict]):
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [h["epoch"] + 1 for h in history]  # counted from 1, as the console prints them
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a.set(xlabel="epoch", ylabel="loss", title="Loss")
    a.legend()
    b.plot(epochs, [h["val_accuracy"] for h in history], color="tab:green")
    b.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy")
    fig.tight_layout()
    return fig


def confusion(labels: np.ndarray, pred: np.ndarray, names: list[str]):
    cm = confusion_matrix(labels, pred, labels=list(range(len(names))))
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(cm, cmap="Blues")
    ax.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="true",
        title="Test confusion matrix",
    )
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center")
    fig.tight_layout()
    return fig


def roc(labels: np.ndarray, score: np.ndarray, auc: float):
    fpr, tpr, _ = roc_curve(labels, score)
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Test ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def token_lengths(n_tokens: np.ndarray, max_length: int):
    """Tokens per training row before truncation, over the whole range (the tail included: the
    last bin ends at the longest row), with the share of rows that max_length truncates."""
    n_tokens = np.asarray(n_tokens)
    longest = int(n_tokens.max(initial=0))
    truncated = float((n_tokens > max_length).mean()) if len(n_tokens) else 0.0
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(n_tokens, bins=60, range=(0, max(longest, max_length, 1)), color="tab:blue")
    if longest > 4 * max_length:  # a long tail: counts on a log scale so its few rows stay visible
        ax.set_yscale("log")
    ax.axvline(max_length, color="tab:red", label=f"max_length={max_length}: {truncated:.1%} of rows truncated")
    ax.set(
        xlabel="tokens per training row (before truncation)",
        ylabel="rows",
        title=f"Token lengths (train), longest {longest:,}",
    )
    ax.legend()
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)

"""Test accuracy of RNN configurations against TF-IDF + logistic regression, on one stored split.

    python -m bench.quality [--config jobs/configs/best.yaml] [--threads 1] [KEY=VALUE ...]

Prepares the corpus with the config's data and tokenizer settings (the embedded, deduplicated
corpus by default), then on that split:
  tfidf     character 1-3-grams (sublinear tf) + logistic regression, C=1 (the issue's baseline
            recipe) and C=10 (the best of 1, 3 and 10 on the embedded split's validation set),
  rnn       the configured model trained in this process by the project's training loop (one
            worker; early stopping keeps the best validation epoch), scored on the test split.
Prints each row's test accuracy and wall time. The last line is
`rnn/tfidf=<ratio> diff=<points> p_better=<p> p_worse=<p>`: the RNN's accuracy over the C=1
baseline's, the difference in points, and one-sided exact McNemar p-values on the paired test
predictions (is the RNN better / worse than the baseline?). With ~1.7k test rows one standard error
of an accuracy near 0.84 is ~0.9 points, so differences below ~2 points are not significant.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from jobs.config_loader import load_config
from pipeline.data.prepare import prepare
from pipeline.data.store import read_split_arrays, read_texts
from pipeline.evaluation.scoring import predict_proba
from pipeline.model import build_model
from pipeline.registry.promotion import mcnemar_p
from pipeline.train.loop import WorkerContext, configure_cpu, load_train_data, train_worker
from pipeline.train.state import TrainState
from pipeline.train.trainer import choose_weights


def tfidf(texts: dict[str, list[str]], labels: dict[str, np.ndarray], c: float) -> tuple[np.ndarray, float]:
    """(test predictions, wall s) of TF-IDF character 1-3-grams + logistic regression."""
    t0 = time.perf_counter()
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    clf = LogisticRegression(C=c, max_iter=2000).fit(vec.fit_transform(texts["train"]), labels["train"])
    return clf.predict(vec.transform(texts["test"])), time.perf_counter() - t0


def rnn(cfg, data_path) -> tuple[np.ndarray, float, int]:
    """(test predictions, wall s, best epoch) of the configured model, trained in this process."""
    t0 = time.perf_counter()
    data = load_train_data(data_path, 0, 1)
    states: list[TrainState] = []
    train_worker(cfg, data, WorkerContext(0, 1, torch.device("cpu")), lambda m, s: states.append(s))
    model = build_model(data.vocab_size, data.pad_id, data.num_classes, cfg.model)
    model.load_state_dict(choose_weights(states[-1], cfg.train.early_stopping_patience is not None)[0])
    ids, _, _ = read_split_arrays(data_path, "test")
    best_epoch = states[-1].early_stopping.best_epoch
    return predict_proba(model, ids).argmax(axis=1), time.perf_counter() - t0, best_epoch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/best.yaml")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (train.threads_per_worker)")
    parser.add_argument("overrides", nargs="*", help="config overrides, KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, [*args.overrides, f"train.threads_per_worker={args.threads}"])
    configure_cpu(cfg)
    prepared = prepare(cfg)
    texts, labels = {}, {}
    for split in ("train", "validation", "test"):
        texts[split], labels[split] = read_texts(prepared.path, split)
    y = labels["test"]
    print(f"split: {len(y)} test rows of {sum(len(v) for v in labels.values())}; config {args.config} "
          f"{' '.join(args.overrides)}")

    base, base_s = tfidf(texts, labels, 1.0)
    tuned, tuned_s = tfidf(texts, labels, 10.0)
    print(f"tfidf C=1    test_acc {np.mean(base == y):.4f}  {base_s:6.1f} s")
    print(f"tfidf C=10   test_acc {np.mean(tuned == y):.4f}  {tuned_s:6.1f} s")
    pred, rnn_s, best_epoch = rnn(cfg, prepared.path)
    m = cfg.model
    print(f"rnn {m.cell} bidirectional={m.bidirectional} pooling={m.pooling}  test_acc {np.mean(pred == y):.4f}  "
          f"{rnn_s:6.1f} s  (best epoch {best_epoch})")

    ok_rnn, ok_base = pred == y, base == y
    print(f"rnn/tfidf={ok_rnn.mean() / ok_base.mean():.3f} diff={100 * (ok_rnn.mean() - ok_base.mean()):+.2f} "
          f"p_better={mcnemar_p(ok_rnn, ok_base):.3f} p_worse={mcnemar_p(ok_base, ok_rnn):.3f}")


if __name__ == "__main__":
    main()

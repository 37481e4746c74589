"""bench.quality reads a corpus given by path (a held-out corpus) as data.source=files would."""

from __future__ import annotations

from pathlib import Path

from bench.quality import corpus_overrides, corpus_slug
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

"""Tokenizer kinds and determinism; padding/truncation; max_length=auto."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from pipeline.data.encode import encode_texts, pad_ids
from pipeline.data.prepare import prepare
from pipeline.data.store import read_split_arrays
from pipeline.data.tokenizer import PAD_TOKEN, UNK_TOKEN, piece_counter, train_tokenizer
from schemas.config import TokenizerConfig

TEXTS = [f"Great movie number {i}, 这部电影很好看! ＦＵＬＬ　ＷＩＤＴＨ" for i in range(30)] + [
    f"Awful film {i}; 太差了，不推荐。" for i in range(30)
]


@pytest.mark.parametrize("kind", ["wordlevel", "bpe", "unigram", "char"])
def test_same_corpus_gives_the_same_vocabulary_byte_for_byte(kind):
    cfg = TokenizerConfig(kind=kind, vocab_size=80, min_frequency=1)
    first = train_tokenizer(TEXTS, cfg).to_str()
    assert all(train_tokenizer(TEXTS, cfg).to_str() == first for _ in range(3))
    tok = Tokenizer.from_str(first)
    assert tok.token_to_id(PAD_TOKEN) == 0 and tok.token_to_id(UNK_TOKEN) == 1


@pytest.mark.parametrize("kind", ["wordlevel", "bpe", "unigram", "char"])
def test_chinese_per_character_english_by_word_normalized(kind):
    tok = train_tokenizer(TEXTS, TokenizerConfig(kind=kind, vocab_size=200, min_frequency=1))
    tokens = tok.encode("GREAT 很好 ｆｕｌｌ", add_special_tokens=False).tokens
    assert "很" in tokens and "好" in tokens  # one token per CJK character
    if kind == "wordlevel":
        assert tokens == ["great", "很", "好", "full"]  # lowercased, NFKC full-width -> ASCII
    if kind == "char":
        assert tokens[:5] == ["g", "r", "e", "a", "t"]


def test_cjk_runs_let_bpe_learn_chinese_words():
    words = ["电影", "质量", "不错", "非常", "满意", "失望", "手机"]
    texts = [f"{a}{b}{c}，{c}{a}!" for a in words for b in words for c in words if len({a, b, c}) == 3]
    cfg = TokenizerConfig(kind="bpe", cjk="runs", vocab_size=30, min_frequency=1)  # characters + a few words
    tok = train_tokenizer(texts, cfg)
    assert all(train_tokenizer(texts, cfg).to_str() == tok.to_str() for _ in range(4))  # deterministic
    tokens = tok.encode("手机质量不错，非常满意!", add_special_tokens=False).tokens
    assert {"质量", "不错", "满意"} <= set(tokens), tokens  # words, not characters
    assert "".join(tokens) == "手机质量不错,非常满意!"  # nothing lost (NFKC makes the comma ASCII)
    chars = train_tokenizer(texts, cfg.model_copy(update={"cjk": "characters"}))
    assert "质" in chars.encode("质量", add_special_tokens=False).tokens  # the default: one per character


@pytest.mark.parametrize("kind", ["wordlevel", "unigram", "char", "english"])
def test_cjk_runs_with_another_kind_is_refused(kind):
    with pytest.raises(ValueError, match=f"tokenizer.cjk='runs' needs tokenizer.kind=bpe, got '{kind}'"):
        TokenizerConfig(kind=kind, cjk="runs")


def test_piece_counter_finds_zero_token_texts():
    count = piece_counter(TokenizerConfig())
    assert count(["\u200b\u200b", "\x00", "a b", "很好"]) == [0, 0, 2, 2]


@pytest.mark.parametrize(
    ("padding", "truncation", "expected"),
    [
        ("left", "left", [[0, 0, 1, 2], [4, 5, 6, 7]]),
        ("left", "right", [[0, 0, 1, 2], [3, 4, 5, 6]]),
        ("right", "left", [[1, 2, 0, 0], [4, 5, 6, 7]]),
        ("right", "right", [[1, 2, 0, 0], [3, 4, 5, 6]]),
    ],
)
def test_pad_ids_sides(padding, truncation, expected):
    ids, kept, orig = pad_ids([[1, 2], [3, 4, 5, 6, 7]], 4, 0, padding, truncation)
    assert ids.tolist() == expected and kept.tolist() == [2, 4] and orig.tolist() == [2, 5]


def test_pad_ids_empty_rows():
    ids, kept, _ = pad_ids([[], []], 3, 9, "left", "left")
    assert ids.tolist() == [[9, 9, 9], [9, 9, 9]] and kept.tolist() == [0, 0]


def test_encode_texts_bounds_characters_like_training():
    tok = train_tokenizer(["a b c d"], TokenizerConfig(min_frequency=1))
    ids, lengths = encode_texts(["a b c d " * 1000], tok, 8, 0, "left", "left", max_chars=4)
    assert lengths.tolist() == [2]  # "c d " -> 2 tokens: the cut happens before tokenizing


def test_max_length_auto_covers_the_percentile(fx, job):
    prepared = prepare(
        job(
            source="files",
            paths=(str(fx / "formats/reviews.tsv"),),
            tokenizer={"max_length": "auto", "max_length_percentile": 100},
        )
    )
    m = prepared.manifest
    assert m.max_length_chosen_by.startswith("auto: p100")
    assert m.max_length == m.length_stats.max and m.length_stats.truncated_fraction == 0.0
    ids, _, lengths = read_split_arrays(prepared.path, "train")
    assert ids.shape[1] == m.max_length
    last = ids[np.arange(len(ids)), -1]
    assert (last != m.pad_id).all()  # left padding: the last step is a real token


def test_prepare_twice_gives_the_same_bytes(fx, job, tmp_path):
    a = prepare(job(output_root=str(tmp_path / "a"), source="files", paths=(str(fx / "formats/reviews.tsv"),)))
    b = prepare(job(output_root=str(tmp_path / "b"), source="files", paths=(str(fx / "formats/reviews.tsv"),)))
    assert (a.path / "tokenizer.json").read_bytes() == (b.path / "tokenizer.json").read_bytes()
    assert a.manifest.content_digest == b.manifest.content_digest


def test_length_stats_merged_from_partitions_equal_numpy_over_all_rows():
    from pipeline.data.prepare import length_stats
    from pipeline.data.stages import SplitPart

    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 300, size=n) for n in (500, 1, 0, 2000)]
    parts = [SplitPart(n_tokens=np.unique(r, return_counts=True)) for r in rows]
    stats = length_stats(parts, max_length=128)
    every = np.concatenate(rows)
    expected = np.percentile(every, [50, 90, 95, 99]).tolist()
    assert [stats.p50, stats.p90, stats.p95, stats.p99] == pytest.approx(expected)
    assert stats.max == every.max() and stats.truncated_fraction == pytest.approx((every > 128).mean())

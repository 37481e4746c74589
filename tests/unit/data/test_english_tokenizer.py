"""The 'english' tokenizer kind: contractions and punctuation runs survive as tokens."""

from __future__ import annotations

from pipeline.data.tokenizer import piece_counter, train_tokenizer
from schemas.config import TokenizerConfig

REVIEWS = [
    "I didn't like it!!! The plot isn't good.",
    "It's great, isn't it? We're happy :)",
    "This movie didn\u2019t work... I can't recommend it?!",
    "好看 but it's long",
]


def _tokens(kind: str, text: str) -> list[str]:
    tok = train_tokenizer(REVIEWS * 3, TokenizerConfig(kind=kind, vocab_size=200, min_frequency=1))
    return tok.encode(text, add_special_tokens=False).tokens


def test_contractions_keep_their_suffix_as_a_token():
    assert _tokens("english", "I didn't like it") == ["i", "did", "n't", "like", "it"]
    assert _tokens("english", "it's great, we're happy") == ["it", "'s", "great", ",", "we", "'re", "happy"]
    # a typographic apostrophe splits the same way
    assert _tokens("english", "didn\u2019t") == ["did", "n't"]


def test_punctuation_runs_are_one_token_and_chinese_stays_per_character():
    assert _tokens("english", "it!!! good?! work... :)") == ["it", "!!!", "good", "?!", "work", "...", ":)"]
    assert _tokens("english", "好看") == ["好", "看"]


def test_the_bert_pieces_lose_the_negation_which_english_keeps():
    # what the issue saw with the default word-level kind: "didn't" -> didn ' t
    assert _tokens("wordlevel", "didn't") == ["didn", "'", "t"]
    count = piece_counter(TokenizerConfig(kind="english"))
    assert count(["didn't", "!!!", "   ", ""]) == [2, 1, 0, 0]


def test_english_kind_is_deterministic():
    cfg = TokenizerConfig(kind="english", vocab_size=50, min_frequency=1)
    first = train_tokenizer(REVIEWS, cfg).to_str()
    assert train_tokenizer(REVIEWS, cfg).to_str() == first

"""Train a `tokenizers` tokenizer on the training split only.

Chinese has no spaces, so the BERT normalizer's `handle_chinese_chars` puts spaces around
every CJK character: Chinese becomes one token per character while English stays split into
words by whitespace and punctuation, whatever the model kind (word-level, BPE, unigram), unless
tokenizer.cjk='runs' keeps runs of CJK characters whole for BPE to learn words in them.
The 'char' kind then splits every piece into characters (one id per character). The 'english'
kind is word-level on English-aware pieces (see `english_pre_tokenizer`).

Determinism: the same texts and config give the same `tokenizer.json`, byte for byte (the
trainers break frequency ties by token; tests/unit/data/test_tokenizer.py checks every kind).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from schemas.config import TokenizerConfig

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
# Order fixes the ids: [PAD] is 0 and [UNK] is 1 for every kind, so the pad id is stable.
SPECIAL_TOKENS = [PAD_TOKEN, UNK_TOKEN]


def _normalizer(cfg: TokenizerConfig) -> normalizers.Normalizer:
    steps: list[normalizers.Normalizer] = [normalizers.NFKC()] if cfg.nfkc else []
    if cfg.kind == "english":  # typographic apostrophes (didn’t) split like ASCII ones (didn't)
        steps.append(normalizers.Replace("\u2019", "'"))
    steps.append(
        normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=cfg.cjk == "characters",  # spaces around each CJK character
            strip_accents=False,
            lowercase=cfg.lowercase,
        )
    )
    return normalizers.Sequence(steps)


def build_untrained(cfg: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    if cfg.kind in ("wordlevel", "char", "english"):
        tok = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
        trainer: trainers.Trainer = trainers.WordLevelTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )
    elif cfg.kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=cfg.vocab_size,
            special_tokens=SPECIAL_TOKENS,
            unk_token=UNK_TOKEN,
            show_progress=False,
        )
    tok.normalizer = _normalizer(cfg)
    tok.pre_tokenizer = _pre_tokenizer(cfg)
    return tok, trainer


# English pieces: contraction suffixes are their own tokens ("didn't" -> "did" "n't", "it's" ->
# "it" "'s", Penn Treebank style), a run of punctuation is one token ("!!!", "?!", "...", ":)"),
# words are runs of letters and digits. BERT's pre-tokenizer instead gives "didn" "'" "t", which
# loses the negation into two tokens that also occur everywhere else.
ENGLISH_PIECE = r"n't|'(?:s|re|ve|ll|d|m)\b|[^\W_]+(?=n't)|[^\W_]+|[^\w\s]+|_+"


def english_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Keep only the ENGLISH_PIECE matches (whitespace between them is dropped)."""
    return pre_tokenizers.Split(Regex(ENGLISH_PIECE), behavior="removed", invert=True)


def _pre_tokenizer(cfg: TokenizerConfig) -> pre_tokenizers.PreTokenizer:
    if cfg.kind == "english":
        return english_pre_tokenizer()
    if cfg.kind == "char":
        return pre_tokenizers.Sequence(
            [pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
        )
    return pre_tokenizers.BertPreTokenizer()


def piece_counter(cfg: TokenizerConfig) -> Callable[[list[str]], list[int]]:
    """texts -> number of pre-tokenized pieces, with this config's normalizer and pre-tokenizer.

    A trained tokenizer of any kind maps each piece to at least one id ([UNK] if unknown), so
    0 pieces is exactly "this text becomes zero tokens"; known before any vocabulary exists.
    Runs in Rust over the whole batch (a one-entry WordLevel model maps every piece to [UNK]).
    """
    probe = Tokenizer(models.WordLevel({UNK_TOKEN: 0}, unk_token=UNK_TOKEN))
    probe.normalizer = _normalizer(cfg)
    probe.pre_tokenizer = _pre_tokenizer(cfg)

    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in probe.encode_batch(texts, add_special_tokens=False)]

    return count


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, batch_size: int = 1000) -> Tokenizer:
    """Fit on `texts` (the training split). Same texts and config give the same vocabulary."""
    tok, trainer = build_untrained(cfg)

    def batches() -> Iterator[list[str]]:
        buf: list[str] = []
        for t in texts:
            buf.append(t)
            if len(buf) == batch_size:
                yield buf
                buf = []
        if buf:
            yield buf

    tok.train_from_iterator(batches(), trainer=trainer)
    if cfg.kind == "unigram":
        tok = _canonical_unigram(tok)
    if tok.token_to_id(PAD_TOKEN) != 0 or tok.token_to_id(UNK_TOKEN) is None:
        raise RuntimeError("tokenizer training lost the special tokens; this is a bug")
    return tok


def _canonical_unigram(tok: Tokenizer) -> Tokenizer:
    """Order pieces by (score desc, piece): the trainer leaves equal-score pieces in hash order. Scores
    are rounded to 1e-9 first: its threads sum in varying order, so equal scores differ in the last bit."""
    data = json.loads(tok.to_str())
    vocab = [[piece, round(score, 9)] for piece, score in data["model"]["vocab"]]
    special = [p for p in vocab if p[0] in SPECIAL_TOKENS]
    rest = sorted((p for p in vocab if p[0] not in SPECIAL_TOKENS), key=lambda p: (-p[1], p[0]))
    special.sort(key=lambda p: SPECIAL_TOKENS.index(p[0]))
    data["model"]["vocab"] = special + rest
    data["model"]["unk_id"] = SPECIAL_TOKENS.index(UNK_TOKEN)
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def tokenizer_digest(tok: Tokenizer) -> str:
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """The tokens by id ("" for the special tokens and any unused id): what the model's character
    n-gram path (model.ngram_char_buckets) takes its grams from."""
    out = [""] * tokenizer.get_vocab_size()
    for token, i in tokenizer.get_vocab().items():
        if i < len(out) and token not in SPECIAL_TOKENS:
            out[i] = token
    return out

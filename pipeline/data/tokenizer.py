"""Train a `tokenizers` tokenizer on the training split only.

Chinese has no spaces, so the BERT normalizer's `handle_chinese_chars` puts spaces around
every CJK character: Chinese becomes one token per character while English stays split into
words by whitespace and punctuation, whatever the model kind (word-level, BPE, unigram).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from schemas.config import TokenizerConfig

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
# Order fixes the ids: [PAD] is 0 and [UNK] is 1 for every kind, so the pad id is stable.
SPECIAL_TOKENS = [PAD_TOKEN, UNK_TOKEN]


def build_untrained(cfg: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    steps: list[normalizers.Normalizer] = []
    if cfg.nfkc:
        steps.append(normalizers.NFKC())
    steps.append(
        normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=cfg.lowercase
        )
    )
    if cfg.kind == "wordlevel":
        tok = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
        trainer: trainers.Trainer = trainers.WordLevelTrainer(
            vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )
    elif cfg.kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK_TOKEN, show_progress=False,
        )
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok, trainer


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
    if tok.token_to_id(PAD_TOKEN) != 0 or tok.token_to_id(UNK_TOKEN) is None:
        raise RuntimeError("tokenizer training lost the special tokens; this is a bug")
    return tok


def tokenizer_digest(tok: Tokenizer) -> str:
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()

"""The RNN classifier family, with the tutorial's seed model as the default.

Seed: Embedding(vocab, 16, padding_idx=pad) -> nn.RNN(16, 64) -> output at the last time step
-> Linear(64, 64) -> Linear(64, 1). Averaging embeddings would treat padding as signal and lose
word order ("我让你" vs "你让我"); reading the last step of an RNN keeps order, and left padding
makes that last step the last real token.

The family (schemas.config.ModelConfig): rnn/gru/lstm cells, stacked, bidirectional, and six
poolings. 'last' is the seed's; 'gather' reads each row's last real token (exact for one direction
with right padding; a backward pass still reads the padding after the row); 'packed' runs the RNN
over pack_padded_sequence, so padding never enters the recurrence on either side; 'mean'/'max'
pool over real tokens, and 'max-mean' puts the two side by side. `MeanEmbeddingClassifier` is the
order-blind baseline. Either may add `NgramBag`, a linear bag of hashed token n-grams, and
`CharGramBag`, one of the tokens' hashed character n-grams, to its logits, and may read only each
row's last `encoder_max_length` tokens while those paths read all.
Every model takes `(input_ids, lengths=None)`; lengths default to the count of non-pad ids.

Padding that is not excluded still moves the state: an RNN fed 100 pad steps before a short text
does not start that text from zero. `trim_padding` drops the padding a whole batch shares, so a
model trained on length-bucketed (trimmed) batches is scored the same way; predict_proba and the
validation pass feed rows in length order to keep that shared padding small.
"""

from __future__ import annotations

import zlib
from typing import Literal

import torch
from torch import nn

from pipeline.errors import UserInputError
from schemas.config import ModelConfig

_CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def true_lengths(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Real tokens per row: the count of non-pad ids (padding may sit on either side)."""
    return (input_ids != pad_id).sum(dim=1)


def _left_align(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Move each row's real tokens to the front, keeping their order (left padding -> right padding)."""
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    return torch.gather(input_ids, 1, order)


def check_padding_side(cfg: ModelConfig, padding_side: str) -> None:
    """Raise UserInputError when pooling='last' or encoder_max_length meets right padding (the last
    columns would be padding)."""
    if cfg.encoder_max_length is not None and padding_side != "left":
        raise UserInputError(
            f"model.encoder_max_length={cfg.encoder_max_length} reads each row's last columns, which are "
            f"padding with tokenizer.padding_side={padding_side}; set tokenizer.padding_side=left or unset "
            "model.encoder_max_length"
        )
    if cfg.cell != "mean-embedding" and cfg.pooling == "last" and padding_side != "left":
        raise UserInputError(
            f"model.pooling=last reads the last time step, which is padding with tokenizer.padding_side="
            f"{padding_side}; set padding_side=left or pooling=gather (tokenizer.padding_side=left, or "
            "model.pooling=gather or packed)"
        )


def trim_shared_padding(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop the leading and trailing columns that are padding in every row (keeps at least one)."""
    used = (input_ids != pad_id).any(dim=0)
    if bool(used.all()) or not bool(used.any()):
        return input_ids
    cols = torch.nonzero(used).squeeze(1)
    return input_ids[:, int(cols[0]) : int(cols[-1]) + 1]


def _distinct(grams: torch.Tensor, buckets: int) -> torch.Tensor:
    """[batch, n] bucket numbers (`buckets` marking no gram) -> the same sorted along each row, each
    bucket kept once and the rest set to `buckets`: a row's distinct grams, as a binary bag sees them."""
    grams = grams.sort(dim=1).values
    repeat = torch.zeros_like(grams, dtype=torch.bool)
    repeat[:, 1:] = grams[:, 1:] == grams[:, :-1]
    return grams.masked_fill(repeat, buckets)


class _Bag(nn.Module):
    """A linear bag over hashed grams: `buckets` learned weights per logit, zero-initialised (torch.zeros
    draws no random numbers, so the other layers initialise as without the bag), and under 'idf' a
    per-bucket inverse document frequency (`idf`, saved with the weights) that scales each gram."""

    def __init__(self, buckets: int, n_out: int, pad_id: int, weighting: Literal["binary", "mean", "idf"]):
        super().__init__()
        self.buckets = buckets
        self.pad_id = pad_id
        self.weighting = weighting
        self.weight = nn.Parameter(torch.zeros(buckets, n_out))
        if weighting == "idf":  # only then, so that models trained without it load unchanged
            self.register_buffer("idf", torch.ones(buckets))

    def distinct_grams(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, seq] ids -> [batch, n]: each row's distinct buckets, `buckets` in the other slots."""
        raise NotImplementedError

    def set_document_frequencies(self, df: torch.Tensor, n_rows: int) -> None:
        """Fill `idf` from the training rows' document frequencies (rows holding each bucket, out of
        `n_rows`) as the baseline's TfidfVectorizer does (smooth_idf): ln((1 + n) / (1 + df)) + 1, and 0
        for a bucket no training row holds (the vectorizer has no such feature: it cannot move a text's
        norm). Raises ValueError without an 'idf' weighting or for a wrong length."""
        if self.weighting != "idf":
            raise ValueError(f"document frequencies need ngram_weighting='idf', this bag's is {self.weighting!r}")
        if df.shape != (self.buckets,):
            raise ValueError(f"document frequencies for {self.buckets} buckets expected, got shape {tuple(df.shape)}")
        df = df.to(torch.float64)
        idf = torch.where(df > 0, torch.log((1 + n_rows) / (1 + df)) + 1, torch.zeros_like(df))
        self.idf.copy_(idf.to(self.idf.dtype))

    def _binary(self, grams: torch.Tensor) -> torch.Tensor:
        """A row's value over its distinct buckets: the weights' sum over the square root of their
        number (an L2-normalised binary bag), or under 'idf' each weight times its bucket's idf over the
        L2 norm of those idfs (the baseline's TF-IDF with binary counts)."""
        present = grams < self.buckets
        slots = grams.clamp(max=self.buckets - 1)
        weights = nn.functional.embedding(slots, self.weight)
        if self.weighting == "idf":
            value = self.idf[slots] * present
            norm = (value * value).sum(1, keepdim=True).sqrt()
            return (weights * value.unsqueeze(-1)).sum(1) / norm.clamp(min=1e-12)
        summed = (weights * present.unsqueeze(-1)).sum(1)
        return summed / present.sum(1, keepdim=True).clamp(min=1).sqrt()


class NgramBag(_Bag):
    """A fastText-style wide path: a text's token unigrams and bigrams, hashed into `buckets`, each
    bucket one learned weight per logit, added to the logits.

    On a few thousand English texts the n-grams that occur carry most of what can be learned, and a
    randomly initialised RNN learns them slowly and noisily; trained jointly, this linear part takes
    them and the RNN adds what order tells (as wide-and-deep models pair a linear model with a
    network). The hash is plain arithmetic on the ids, so training, evaluation and serving see the
    same buckets; padding is excluded. Zero-initialised: at the first step the model is its RNN.

    `weighting` says how a text's n-grams make its value, as a bag-of-n-grams linear model's features:
    "binary" sums the weights of its distinct buckets over the square root of their number (an
    L2-normalised binary bag: a word said ten times in a long review counts once, and long and short
    texts land on one scale); "idf" weighs each distinct bucket by its inverse document frequency
    before normalising (the baseline's TF-IDF, rare n-grams counting more than "the"); "mean" averages
    the weights of all its n-gram occurrences (the first version's, kept for the models trained with
    it). Logistic regression on word 1-2-grams, same splits: 1,200 long English reviews 0.893 binary L2
    vs 0.800 mean of counts; 3,200 sentences 0.723 vs 0.705.
    """

    _PRIME = 1_000_003  # odd, so (a * _PRIME) mod 2^k is a bijection on a: bigrams spread over buckets

    def __init__(self, buckets: int, n_out: int, pad_id: int, weighting: Literal["binary", "mean", "idf"] = "binary"):
        super().__init__(buckets, n_out, pad_id, weighting)

    def _grams(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The value ignores padding, so dropping the columns every row pads is exact, and cheaper on wide rows.
        ids = trim_shared_padding(input_ids, self.pad_id).long()
        real = ids != self.pad_id
        bigrams = ids[:, :-1] * self._PRIME + ids[:, 1:]
        grams = torch.cat([ids, bigrams], dim=1) % self.buckets
        return grams, torch.cat([real, real[:, :-1] & real[:, 1:]], dim=1)

    def distinct_grams(self, input_ids: torch.Tensor) -> torch.Tensor:
        grams, present = self._grams(input_ids)
        return _distinct(grams.masked_fill(~present, self.buckets), self.buckets)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, seq] ids -> [batch, n_out]: each row's n-gram value (0 for an empty row)."""
        if self.weighting == "mean":
            grams, present = self._grams(input_ids)
            summed = (nn.functional.embedding(grams, self.weight) * present.unsqueeze(-1)).sum(1)
            return summed / present.sum(1, keepdim=True).clamp(min=1)
        return self._binary(self.distinct_grams(input_ids))


def char_grams(token: str) -> list[str]:
    """A token's distinct character 1-, 2- and 3-grams within word boundaries, as the baseline's
    `char_wb` analyzer takes them from a word: "not" -> "n", "o", "t", " n", "no", "ot", "t ", " no",
    "not", "ot " (unigrams first, so a long token cut at CharGramBag.SLOTS keeps its shorter grams)."""
    padded = f" {token} "
    out: dict[str, None] = {}
    for n in (1, 2, 3):
        for i in range(len(padded) - n + 1):
            gram = padded[i : i + n]
            if gram.strip():
                out[gram] = None
    return list(out)


class CharGramBag(_Bag):
    """The n-gram path's second bag: the character 1-3-grams of a text's tokens, hashed into `buckets`,
    each bucket one learned weight per logit, added to the logits (an L2-normalised binary bag, as
    NgramBag's "binary", or with "idf" as NgramBag's "idf"; "mean" is the word bag's alone).

    Why: the TF-IDF + LR baseline reads character n-grams, which carry what word ids cannot: inflection
    and compounds (French, Dutch), misspellings, and in Chinese the characters inside the multi-character
    pieces the word-level tokenizer keeps whole. Logistic regression on the word path's n-grams plus
    each token's character 1-3-grams: long English reviews 0.867 -> 0.893, French book reviews 0.742 ->
    0.766 (BPE 0.734 -> 0.820), English sentences 0.730 -> 0.710, so it is an option, searched by
    jobs.tune.

    Each vocabulary id's grams are a row of the `token_grams` buffer (`SLOTS` bucket numbers, `buckets`
    marking an empty slot), filled from the tokenizer's vocabulary once before training
    (`set_vocabulary`) and saved with the weights, so evaluation and serving need no tokenizer here.
    """

    SLOTS = 48  # grams kept per token: every 1-3-gram of a token of up to 15 characters

    def __init__(
        self, buckets: int, n_out: int, vocab_size: int, pad_id: int, weighting: Literal["binary", "idf"] = "binary"
    ):
        super().__init__(buckets, n_out, pad_id, weighting)
        self.register_buffer("token_grams", torch.full((vocab_size, self.SLOTS), buckets, dtype=torch.int32))

    def set_vocabulary(self, tokens: list[str]) -> None:
        """Fill `token_grams` from the tokens by id ("" for ids without grams: padding, unknown)."""
        table = torch.full_like(self.token_grams, self.buckets)
        for i, token in enumerate(tokens[: len(table)]):
            grams = [zlib.crc32(g.encode("utf-8")) % self.buckets for g in char_grams(token)[: self.SLOTS]]
            if grams:
                table[i, : len(grams)] = torch.tensor(grams, dtype=torch.int32)
        self.token_grams.copy_(table)

    def distinct_grams(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = trim_shared_padding(input_ids, self.pad_id)
        return _distinct(self.token_grams[ids].flatten(1).long(), self.buckets)  # empty slots sort last

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, seq] ids -> [batch, n_out]: each row's value over its distinct character n-grams."""
        return self._binary(self.distinct_grams(input_ids))


def bags(model: nn.Module) -> dict[str, _Bag]:
    """The model's n-gram bags by attribute name ("ngrams", "ngram_chars"): those it has."""
    return {name: bag for name in ("ngrams", "ngram_chars") if isinstance(bag := getattr(model, name, None), _Bag)}


def set_vocabulary(model: nn.Module, tokens: list[str] | None) -> None:
    """Give a model's character path (model.ngram_char_buckets) its vocabulary; nothing without one.
    Raises ValueError when the model has the path and `tokens` is None."""
    bag = getattr(model, "ngram_chars", None)
    if bag is None:
        return
    if tokens is None:
        raise ValueError("model.ngram_char_buckets needs the tokenizer's vocabulary (set_vocabulary)")
    bag.set_vocabulary(tokens)


def set_idf(model: nn.Module, idf: dict[str, dict] | None) -> None:
    """Copy the bags' idf (pipeline.train.idf.document_frequencies) into `model` before DDP's broadcast.
    Raises ValueError when the model weighs by idf and `idf` is None (its bags would train as 'binary'
    without a word), or when the model's bags and `idf` disagree."""
    named = {name: bag for name, bag in bags(model).items() if bag.weighting == "idf"}
    if not named and not idf:
        return
    if not idf:
        raise ValueError(
            "model.ngram_weighting=idf needs the bags' document frequencies (pipeline.train.idf.document_frequencies)"
        )
    if set(named) != set(idf):
        raise ValueError(f"idf for bags {sorted(idf)}, the model has {sorted(named)}")
    for name, bag in named.items():
        bag.idf.copy_(torch.as_tensor(idf[name]["idf"], dtype=bag.idf.dtype))


class _Embed(nn.Module):
    """Shared by both classifiers: the token embedding, then embedding dropout if configured.
    Attribute names keep the seed's parameter names (`embedding.weight`)."""

    def _init_embeddings(self, vocab_size: int, pad_id: int, cfg: ModelConfig) -> None:
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=pad_id)
        # Only when asked for, so the seed model's modules stay exactly the tutorial's.
        self.embedding_dropout = nn.Dropout(cfg.embedding_dropout) if cfg.embedding_dropout else None
        self.word_dropout = cfg.word_dropout
        self.encoder_max_length = cfg.encoder_max_length

    def _encoder_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The columns the encoder reads: the last encoder_max_length (each row's last tokens, with
        left padding, which check_padding_side requires), or all."""
        n = self.encoder_max_length
        return input_ids[:, -n:] if n is not None and input_ids.shape[1] > n else input_ids

    def _init_ngrams(self, vocab_size: int, pad_id: int, n_logits: int, cfg: ModelConfig) -> None:
        # Registered last, and only when asked for: the seed's parameters keep their names and order.
        self.ngrams = NgramBag(cfg.ngram_buckets, n_logits, pad_id, cfg.ngram_weighting) if cfg.ngram_buckets else None
        chars, char_weighting = cfg.ngram_char_buckets, "idf" if cfg.ngram_weighting == "idf" else "binary"
        self.ngram_chars = CharGramBag(chars, n_logits, vocab_size, pad_id, char_weighting) if chars else None

    def _logits(self, head_out: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The head's logits plus the n-gram paths' (on every column, not just the encoder's window);
        [batch] for two classes."""
        logits = head_out
        if self.ngrams is not None:
            logits = logits + self.ngrams(input_ids)
        if self.ngram_chars is not None:
            logits = logits + self.ngram_chars(input_ids)
        return logits.squeeze(-1) if logits.shape[-1] == 1 else logits

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(input_ids)
        if self.word_dropout and self.training:
            # Whole tokens dropped (their vectors zeroed, not rescaled: a missing word, not a louder
            # one), so the model cannot lean on a few memorized words. No random draw when off: the
            # seed model's random stream stays the tutorial's.
            keep = torch.rand(x.shape[:2], device=x.device) >= self.word_dropout
            x = x * keep.unsqueeze(-1).to(x.dtype)
        return x if self.embedding_dropout is None else self.embedding_dropout(x)


class RNNClassifier(_Embed):
    """Embedding -> RNN/GRU/LSTM -> pooling -> Linear(hidden * dirs, head) -> Linear(head, 1 or classes).

    With the defaults this is the seed model, parameter for parameter (the two Linear layers have no
    activation between them, as in the seed).
    """

    def __init__(self, vocab_size: int, pad_id: int, num_classes: int, cfg: ModelConfig):
        super().__init__()
        directions = 2 if cfg.bidirectional else 1
        self.pooling = cfg.pooling
        self.trim_padding = cfg.trim_padding
        self._init_embeddings(vocab_size, pad_id, cfg)
        self.rnn = _CELLS[cfg.cell](
            cfg.embedding_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        pooled = 2 if cfg.pooling == "max-mean" else 1  # max-mean: the two pooled vectors side by side
        self.fc = nn.Linear(cfg.hidden_dim * directions * pooled, cfg.head_dim)
        # Two classes: one logit and BCE, as the seed. More: one logit per class and softmax CE.
        self.out = nn.Linear(cfg.head_dim, 1 if num_classes == 2 else num_classes)
        self._init_ngrams(vocab_size, pad_id, self.out.out_features, cfg)

    def _packed(self, input_ids: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids = _left_align(input_ids, mask)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(ids), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, h = self.rnn(packed)
        h = h[0] if isinstance(h, tuple) else h  # LSTM: (h, c)
        if self.rnn.bidirectional:  # last layer's forward and backward final states
            return torch.cat([h[-2], h[-1]], dim=-1)
        return h[-1]

    def encode(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, seq] ids -> [batch, hidden * directions] sequence vectors."""
        if self.trim_padding:
            input_ids = trim_shared_padding(input_ids, self.pad_id)
        mask = input_ids != self.pad_id
        if self.pooling == "packed":
            lengths = true_lengths(input_ids, self.pad_id) if lengths is None else lengths
            return self._packed(input_ids, mask, lengths)
        outputs, _ = self.rnn(self.embed(input_ids))
        if self.pooling == "last":  # the seed: correct because padding is on the left
            return outputs[:, -1, :]
        if self.pooling == "gather":  # output at each row's last real token, whichever side is padded
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            last = torch.where(mask, positions, 0).max(dim=1).values
            return outputs[torch.arange(len(outputs), device=outputs.device), last]
        m = mask.unsqueeze(-1)
        mean = (outputs * m).sum(1) / m.sum(1).clamp(min=1) if self.pooling != "max" else None
        if self.pooling == "mean":
            return mean
        pooled = outputs.masked_fill(~m, float("-inf")).max(dim=1).values
        pooled = torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))  # all-pad rows -> 0
        return pooled if mean is None else torch.cat([pooled, mean], dim=-1)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, seq] ids (and optional true lengths) -> logits [batch] (binary) or [batch, classes]."""
        encoder_ids = self._encoder_ids(input_ids)
        if encoder_ids is not input_ids:
            lengths = None  # the cut rows' lengths: counted again from their ids
        return self._logits(self.out(self.fc(self.dropout(self.encode(encoder_ids, lengths)))), input_ids)


class MeanEmbeddingClassifier(_Embed):
    """The order-blind baseline: masked average of the embeddings -> the same two-layer head.

    Padding is excluded from the average (averaging it in would make length a feature); word order
    is lost by construction, so "我让你" and "你让我" get the same vector.
    """

    def __init__(self, vocab_size: int, pad_id: int, num_classes: int, cfg: ModelConfig):
        super().__init__()
        self._init_embeddings(vocab_size, pad_id, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.embedding_dim, cfg.head_dim)
        self.out = nn.Linear(cfg.head_dim, 1 if num_classes == 2 else num_classes)
        self._init_ngrams(vocab_size, pad_id, self.out.out_features, cfg)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        encoder_ids = self._encoder_ids(input_ids)
        mask = (encoder_ids != self.pad_id).unsqueeze(-1)
        pooled = (self.embed(encoder_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self._logits(self.out(self.fc(self.dropout(pooled))), input_ids)


def build_model(vocab_size: int, pad_id: int, num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The configured classifier. Raises ValueError for fewer than two classes."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least two classes, got num_classes={num_classes}")
    if cfg.cell == "mean-embedding":
        return MeanEmbeddingClassifier(vocab_size, pad_id, num_classes, cfg)
    return RNNClassifier(vocab_size, pad_id, num_classes, cfg)


def parameter_table(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, count) for each named parameter, in registration order."""
    return [(name, tuple(p.shape), p.numel()) for name, p in model.named_parameters()]


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """`n_params.total`, `n_params.trainable` and `n_params.<name>`: the MLflow params."""
    table = parameter_table(model)
    counts = {f"n_params.{name}": n for name, _, n in table}
    counts["n_params.total"] = sum(n for _, _, n in table)
    counts["n_params.trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def format_parameter_table(model: nn.Module, title: str = "") -> str:
    table = parameter_table(model)
    width = max([len(n) for n, _, _ in table] + [len("total")])
    lines = [title] if title else []
    lines.append(f"{'name':<{width}}  {'shape':<14}  {'count':>10}")
    for name, shape, n in table:
        lines.append(f"{name:<{width}}  {str(list(shape)):<14}  {n:>10,}")
    lines.append(f"{'total':<{width}}  {'':<14}  {sum(n for _, _, n in table):>10,}")
    return "\n".join(lines)

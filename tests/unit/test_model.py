"""The RNN family: the seed's exact architecture and counts, every pooling, padding invariances."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from torch import nn

from jobs import params
from pipeline.evaluation.scoring import loss_fn, predict_proba
from pipeline.model import (
    MeanEmbeddingClassifier,
    RNNClassifier,
    bags,
    build_model,
    char_grams,
    check_padding_side,
    parameter_counts,
    set_vocabulary,
)
from schemas.config import JobConfig, ModelConfig

PAD = 0
POOLINGS = ["last", "gather", "packed", "mean", "max", "max-mean"]


def _count(cfg: ModelConfig, vocab: int = 10000) -> int:
    return parameter_counts(build_model(vocab, PAD, 2, cfg))["n_params.total"]


def test_seed_model_is_the_default_layer_for_layer():
    m = build_model(10000, PAD, 2, ModelConfig())
    assert isinstance(m, RNNClassifier)
    assert [name for name, _ in m.named_children()] == ["embedding", "rnn", "dropout", "fc", "out"]
    emb = m.embedding
    assert (emb.num_embeddings, emb.embedding_dim, emb.padding_idx) == (10000, 16, PAD)
    assert type(m.rnn) is nn.RNN and (m.rnn.input_size, m.rnn.hidden_size, m.rnn.num_layers) == (16, 64, 1)
    assert m.rnn.batch_first and not m.rnn.bidirectional
    assert (m.fc.in_features, m.fc.out_features, m.out.in_features, m.out.out_features) == (64, 64, 64, 1)


def test_parameter_counts_match_the_seed_tables_computed_by_hand():
    emb = 10000 * 16
    rnn_layer1 = 64 * 16 + 64 * 64 + 64 + 64  # W_ih, W_hh, b_ih, b_hh
    rnn_layer2 = 64 * 64 + 64 * 64 + 64 + 64
    head = (64 * 64 + 64) + (64 * 1 + 1)
    one_layer = emb + rnn_layer1 + head
    two_layers = emb + rnn_layer1 + rnn_layer2 + head
    bidirectional = emb + 2 * rnn_layer1 + (128 * 64 + 64) + (64 + 1)
    assert (one_layer, two_layers, bidirectional) == (169_473, 177_793, 178_817)
    variants = params.seed_variants(ModelConfig())
    assert [_count(c) for c in variants.values()] == [one_layer, two_layers, bidirectional]
    out = params.run(JobConfig(), 10000, variants=True)
    for total in (one_layer, two_layers, bidirectional):
        assert f"{total:,}" in out


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_every_cell_and_pooling_gives_logits_and_gradients(cell, pooling, bidirectional):
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, pooling=pooling, bidirectional=bidirectional, num_layers=2, dropout=0.1)
    m = build_model(50, PAD, 2, cfg)
    ids = torch.randint(1, 50, (5, 7))
    ids[1, :4] = PAD  # left padding
    ids[2, :] = PAD  # an empty row must not break any pooling
    logits = m(ids)
    assert logits.shape == (5,) and torch.isfinite(logits).all()
    loss_fn(logits, torch.tensor([0, 1, 0, 1, 1])).backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if not n.startswith("dropout"))


def test_multiclass_heads_use_softmax_cross_entropy():
    m = build_model(50, PAD, 3, ModelConfig(cell="gru", pooling="mean"))
    logits = m(torch.randint(1, 50, (4, 6)))
    assert logits.shape == (4, 3)
    labels = torch.tensor([0, 2, 1, 2])
    assert torch.allclose(loss_fn(logits, labels), nn.functional.cross_entropy(logits, labels))
    e = build_model(50, PAD, 3, ModelConfig(cell="mean-embedding"))
    assert isinstance(e, MeanEmbeddingClassifier) and e(torch.randint(1, 50, (4, 6))).shape == (4, 3)
    with pytest.raises(ValueError, match="two classes"):
        build_model(50, PAD, 1, ModelConfig())


def _pad(tokens: list[int], width: int, side: str) -> list[int]:
    fill = [PAD] * (width - len(tokens))
    return fill + tokens if side == "left" else tokens + fill


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("pooling", ["packed", "gather_right", "mean_embedding"])
def test_padding_never_changes_the_result_where_it_is_excluded(cell, pooling):
    """packed: any amount of padding on either side; gather (one direction): any amount of right
    padding; mean-embedding: any padding. Explicit lengths give the same logits as computed ones."""
    torch.manual_seed(0)
    if pooling == "mean_embedding":
        m = build_model(30, PAD, 2, ModelConfig(cell="mean-embedding")).eval()
    else:
        pool = pooling.split("_")[0]
        # A backward pass reads right padding before the real tokens: only 'packed' skips it.
        cfg = ModelConfig(cell=cell, pooling=pool, bidirectional=pool == "packed")
        m = build_model(30, PAD, 2, cfg).eval()
    rows = [[5, 9, 3], [7, 2, 8, 8, 4], [11]]
    sides = ["right"] if pooling == "gather_right" else ["left", "right"]
    with torch.no_grad():
        ref = m(torch.tensor([_pad(r, 5, "right") for r in rows]))
        for side in sides:
            for width in (5, 9):
                ids = torch.tensor([_pad(r, width, side) for r in rows])
                torch.testing.assert_close(m(ids), ref)
                torch.testing.assert_close(m(ids, torch.tensor([len(r) for r in rows])), ref)


def test_last_pooling_reads_the_final_step_like_the_seed():
    torch.manual_seed(0)
    m = build_model(30, PAD, 2, ModelConfig()).eval()
    ids = torch.tensor([_pad([5, 9, 3], 6, "left")])
    with torch.no_grad():
        outputs, _ = m.rnn(m.embedding(ids))
        torch.testing.assert_close(m(ids), m.out(m.fc(outputs[:, -1])).squeeze(-1))


def test_predict_proba_calls_the_model_with_ids_only():
    m = build_model(30, PAD, 2, ModelConfig(cell="gru", pooling="packed"))
    proba = predict_proba(m, np.random.default_rng(0).integers(0, 30, (7, 5)).astype(np.int32), batch_size=3)
    assert proba.shape == (7, 2) and np.allclose(proba.sum(1), 1)


def test_embedding_dropout_adds_no_parameters_and_is_off_in_eval():
    cfg = ModelConfig(cell="gru", pooling="max")
    assert _count(cfg.model_copy(update={"embedding_dropout": 0.5})) == _count(cfg)
    torch.manual_seed(0)
    m = build_model(30, PAD, 2, cfg.model_copy(update={"embedding_dropout": 0.5}))
    ids = torch.randint(1, 30, (4, 6))
    assert not torch.equal(m(ids), m(ids))  # training: a fresh mask per call
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(ids), m(ids))


def test_word_dropout_zeroes_whole_tokens_in_training_only():
    cfg = ModelConfig(cell="gru", pooling="max", word_dropout=0.5)
    assert _count(cfg) == _count(cfg.model_copy(update={"word_dropout": 0.0}))
    torch.manual_seed(0)
    m = build_model(50, PAD, 2, cfg)
    ids = torch.randint(1, 50, (64, 20))
    clean = m.embedding(ids)
    x = m.embed(ids)
    dropped = (x == 0).all(dim=-1)
    # a token is either kept exactly (not rescaled) or dropped as a whole vector
    torch.testing.assert_close(x[~dropped], clean[~dropped])
    assert 0.4 < dropped.float().mean().item() < 0.6
    m.eval()
    torch.testing.assert_close(m.embed(ids), clean)


def test_word_dropout_off_draws_no_random_numbers():
    """The seed model must reproduce exactly: with word_dropout=0 a training forward pass leaves the
    random stream where it was (no mask drawn)."""
    torch.manual_seed(0)
    m = build_model(30, PAD, 2, ModelConfig())
    state = torch.get_rng_state()
    m.train()
    m(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("cell", ["gru", "mean-embedding"])
def test_ngram_path_starts_at_zero_and_leaves_the_other_layers_as_they_were(cell):
    cfg = ModelConfig(cell=cell, pooling="max", ngram_buckets=1024)
    torch.manual_seed(0)
    plain = build_model(50, PAD, 3, cfg.model_copy(update={"ngram_buckets": 0}))
    torch.manual_seed(0)
    m = build_model(50, PAD, 3, cfg)
    counts = parameter_counts(m)
    assert counts["n_params.ngrams.weight"] == 1024 * 3  # one weight per bucket and logit
    assert counts["n_params.total"] == parameter_counts(plain)["n_params.total"] + 1024 * 3
    assert list(counts)[-3] == "n_params.ngrams.weight"  # registered last: the other names keep their order
    ids = torch.tensor([[0, 0, 4, 7, 9], [3, 8, 8, 2, 1]])
    torch.testing.assert_close(m.eval()(ids), plain.eval()(ids))


def _hashed(row: list[int], buckets: int) -> list[int]:
    """The row's unigram and bigram buckets, written out as NgramBag's docstring says."""
    grams = row + [a * 1_000_003 + b for a, b in zip(row[:-1], row[1:], strict=True)]
    return [g % buckets for g in grams]


@pytest.mark.parametrize("weighting", ["binary", "mean"])
def test_ngram_path_value_of_each_rows_hashed_unigrams_and_bigrams(weighting):
    buckets = 97
    m = build_model(50, PAD, 2, ModelConfig(ngram_buckets=buckets, ngram_weighting=weighting)).eval()
    with torch.no_grad():
        m.ngrams.weight.copy_(torch.randn(buckets, 1))
    w = m.ngrams.weight[:, 0]

    def expected(row: list[int]) -> float:
        grams = _hashed(row, buckets)
        if weighting == "mean":  # every occurrence
            return w[torch.tensor(grams)].mean().item()
        distinct = sorted(set(grams))  # each bucket once, over the square root of their number
        return (w[torch.tensor(distinct)].sum() / len(distinct) ** 0.5).item()

    rows = torch.tensor([[0, 0, 5, 9, 11, 5, 9], [5, 9, 11, 5, 9, 0, 0], [0, 0, 0, 0, 0, 0, 0], [0, 0, 5, 11, 9, 5, 9]])
    got = m.ngrams(rows)[:, 0]
    assert got[0].item() == pytest.approx(expected([5, 9, 11, 5, 9]))  # padding on the left is not an n-gram
    assert got[1].item() == pytest.approx(got[0].item())  # ... nor on the right
    assert got[3].item() == pytest.approx(expected([5, 11, 9, 5, 9]))
    assert got[0].item() != pytest.approx(got[3].item())  # order matters (bigrams)
    assert got[2].item() == 0.0  # an all-padding row adds nothing
    # the whole model adds the path's value to its head's logit
    rnn_only = m.out(m.fc(m.encode(rows))).squeeze(-1)
    torch.testing.assert_close(m(rows), rnn_only + got)


def test_binary_ngram_weighting_counts_a_repeated_ngram_once():
    m = build_model(50, PAD, 2, ModelConfig(ngram_buckets=1024)).eval()  # binary: the default
    with torch.no_grad():
        m.ngrams.weight.copy_(torch.randn(1024, 1))
    once, thrice = torch.tensor([[0, 0, 0, 0, 7, 8]]), torch.tensor([[7, 8, 7, 8, 7, 8]])
    # [7, 8] has n-grams {7, 8, 7-8}; repeated it adds one new bigram (8-7), and nothing for the repeats
    w = m.ngrams.weight[:, 0]
    grams = sorted(set(_hashed([7, 8, 7, 8, 7, 8], 1024)))
    assert len(grams) == 4
    assert m.ngrams(thrice)[0, 0].item() == pytest.approx((w[grams].sum() / 2).item())
    assert m.ngrams(once)[0, 0].item() == pytest.approx((w[_hashed([7, 8], 1024)].sum() / 3**0.5).item())


@pytest.mark.parametrize("cell", ["lstm", "mean-embedding"])
def test_encoder_reads_the_last_columns_and_the_ngram_path_the_whole_row(cell):
    cfg = ModelConfig(cell=cell, pooling="max", ngram_buckets=97, encoder_max_length=3)
    torch.manual_seed(0)
    m = build_model(50, PAD, 2, cfg).eval()
    with torch.no_grad():
        m.ngrams.weight.copy_(torch.randn(97, 1))
    full = build_model(50, PAD, 2, cfg.model_copy(update={"encoder_max_length": None, "ngram_buckets": 0})).eval()
    full.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("ngrams.")})
    rows = torch.tensor([[0, 0, 4, 7, 9, 5], [3, 8, 8, 2, 1, 6], [0, 0, 0, 0, 2, 1]])
    # the encoder's part is the plain model's on the last three columns, the path's part is over all six
    torch.testing.assert_close(m(rows), full(rows[:, -3:]) + m.ngrams(rows)[:, 0])
    assert m.ngrams(rows)[0, 0] != m.ngrams(rows[:, -3:])[0, 0]
    torch.testing.assert_close(m(rows[:, -2:]), full(rows[:, -2:]) + m.ngrams(rows[:, -2:])[:, 0])  # narrower: all


def test_encoder_max_length_refuses_right_padding():
    with pytest.raises(ValueError, match="padding_side=left or unset model.encoder_max_length"):
        check_padding_side(ModelConfig(pooling="max", encoder_max_length=8), "right")
    check_padding_side(ModelConfig(pooling="max", encoder_max_length=8), "left")


def test_trim_padding_makes_results_independent_of_max_length():
    torch.manual_seed(0)
    rows = [[5, 9, 3], [7, 2, 8, 8, 4], [11]]
    cfg = ModelConfig(cell="gru", pooling="max", bidirectional=True)
    for trim in (False, True):
        m = build_model(30, PAD, 2, cfg.model_copy(update={"trim_padding": trim})).eval()
        with torch.no_grad():
            narrow = m(torch.tensor([_pad(r, 5, "left") for r in rows]))
            wide = m(torch.tensor([_pad(r, 40, "left") for r in rows]))
            alone = torch.cat([m(torch.tensor([r])) for r in rows])
        if trim:
            torch.testing.assert_close(wide, narrow)
            torch.testing.assert_close(alone[1], narrow[1])  # the longest row has no padding either way
        else:  # the forward pass reads 35 extra steps of padding first: the result moves
            assert not torch.allclose(wide, narrow)


def test_predict_proba_scores_in_length_order_and_returns_the_rows_order():
    torch.manual_seed(0)
    m = build_model(30, PAD, 2, ModelConfig(cell="gru", pooling="max", trim_padding=True)).eval()
    rows = [[5, 9, 3], [7, 2, 8, 8, 4, 6, 1], [11], [3, 3, 3, 3]]
    ids = np.array([_pad(r, 8, "left") for r in rows])
    proba = predict_proba(m, ids, batch_size=2)
    with torch.no_grad():  # batches of two in length order: ([11], [5 9 3]) and ([3 3 3 3], [7 ... 1])
        first = m(torch.tensor([_pad(rows[2], 3, "left"), rows[0]]))
        second = m(torch.tensor([_pad(rows[3], 7, "left"), rows[1]]))
    expected = torch.sigmoid(torch.stack([first[1], second[1], first[0], second[0]])).numpy()
    np.testing.assert_allclose(proba[:, 1], expected, rtol=1e-5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_char_grams_are_a_tokens_1_to_3_grams_within_word_boundaries():
    assert char_grams("not") == ["n", "o", "t", " n", "no", "ot", "t ", " no", "not", "ot "]
    assert char_grams("aa") == ["a", " a", "aa", "a ", " aa", "aa "]  # each distinct gram once
    assert char_grams("") == []


def test_char_path_value_of_each_rows_distinct_character_grams_and_it_is_saved_with_the_weights():
    buckets = 211
    cfg = ModelConfig(cell="gru", pooling="max", ngram_char_buckets=buckets)
    torch.manual_seed(0)
    plain = build_model(6, PAD, 2, cfg.model_copy(update={"ngram_char_buckets": 0}))
    torch.manual_seed(0)
    m = build_model(6, PAD, 2, cfg).eval()
    counts = parameter_counts(m)
    assert counts["n_params.ngram_chars.weight"] == buckets and list(counts)[-3] == "n_params.ngram_chars.weight"
    ids = torch.tensor([[0, 0, 2, 3], [4, 2, 5, 3]])
    torch.testing.assert_close(m(ids), plain.eval()(ids))  # zero-initialised: at first the model is its RNN
    tokens = ["", "", "not", "bad", "nota", "no"]
    set_vocabulary(m, tokens)
    with torch.no_grad():
        m.ngram_chars.weight.copy_(torch.randn(buckets, 1))
    w = m.ngram_chars.weight[:, 0]

    def expected(words: list[str]) -> float:
        distinct = sorted({zlib.crc32(g.encode()) % buckets for t in words for g in char_grams(t)})
        return (w[torch.tensor(distinct)].sum() / len(distinct) ** 0.5).item()

    got = m.ngram_chars(ids)[:, 0]
    assert got[0].item() == pytest.approx(expected(["not", "bad"]))  # padding adds no grams
    assert got[1].item() == pytest.approx(expected(["nota", "not", "no", "bad"]))  # shared grams once
    assert m.ngram_chars(torch.tensor([[0, 0, 0]]))[0, 0].item() == 0.0
    torch.testing.assert_close(m(ids), m.out(m.fc(m.encode(ids))).squeeze(-1) + got)
    # the table travels in the state dict: a model built for serving needs no vocabulary
    served = build_model(6, PAD, 2, cfg).eval()
    served.load_state_dict(m.state_dict())
    torch.testing.assert_close(served(ids), m(ids))


def test_a_model_with_the_char_path_refuses_to_train_without_a_vocabulary():
    m = build_model(6, PAD, 2, ModelConfig(ngram_char_buckets=64))
    with pytest.raises(ValueError, match="needs the tokenizer's vocabulary"):
        set_vocabulary(m, None)
    set_vocabulary(build_model(6, PAD, 2, ModelConfig()), None)  # nothing to fill: no error


def test_idf_weighting_is_the_baselines_binary_tfidf_on_the_bags_grams():
    """With idf, a bag's value is a linear model on sklearn's TF-IDF (binary counts, smooth idf, L2 norm)
    of the row's hashed grams: counted by the training rows, an n-gram no training row holds ignored."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from pipeline.train.idf import count_rows

    buckets = 4096
    cfg = ModelConfig(ngram_buckets=buckets, ngram_char_buckets=buckets, ngram_weighting="idf")
    m = build_model(12, PAD, 2, cfg).eval()
    set_vocabulary(m, ["", "", "ab", "abc", "b", "ca", "ab", "bcd", "d", "dd", "a", "e"])
    rng = np.random.default_rng(0)
    train = np.array([_pad(list(rng.integers(2, 10, int(rng.integers(1, 6)))), 6, "left") for _ in range(40)])
    test = np.array([_pad([2, 3, 4], 6, "left"), _pad([11, 11, 2], 6, "left"), _pad([10, 5], 6, "left")])
    counts = {name: torch.zeros(buckets, dtype=torch.int64) for name in ("ngrams", "ngram_chars")}
    count_rows(m, train, counts)
    for name, bag in bags(m).items():
        bag.set_document_frequencies(counts[name], len(train))
        with torch.no_grad():
            bag.weight.copy_(torch.randn(buckets, 1))

        def grams(ids, bag=bag):  # the row's distinct buckets, as sklearn's analyzer
            row = bag.distinct_grams(torch.as_tensor(ids)[None])[0]
            return [str(g) for g in row.tolist() if g < buckets]

        vec = TfidfVectorizer(analyzer=grams, binary=True, smooth_idf=True, norm="l2").fit(list(train))
        cols = [int(f) for f in vec.get_feature_names_out()]
        expected = vec.transform(list(test)) @ bag.weight[cols, 0].detach().numpy()
        np.testing.assert_allclose(bag(torch.as_tensor(test))[:, 0].detach().numpy(), expected, rtol=1e-5)
    assert "ngram_chars.idf" in m.state_dict() and "ngrams.idf" in m.state_dict()  # saved with the weights
    assert not any(k.endswith(".idf") for k in build_model(12, PAD, 2, ModelConfig(ngram_buckets=64)).state_dict())


def test_document_frequencies_refuse_a_bag_without_idf_and_a_wrong_length():
    binary = build_model(12, PAD, 2, ModelConfig(ngram_buckets=64)).ngrams
    with pytest.raises(ValueError, match="ngram_weighting='idf'"):
        binary.set_document_frequencies(torch.zeros(64), 10)
    idf = build_model(12, PAD, 2, ModelConfig(ngram_buckets=64, ngram_weighting="idf")).ngrams
    with pytest.raises(ValueError, match="for 64 buckets"):
        idf.set_document_frequencies(torch.zeros(32), 10)

"""The RNN classifier family, with the tutorial's seed model as the default.

Seed: Embedding(vocab, 16, padding_idx=pad) -> nn.RNN(16, 64) -> output at the last time step
-> Linear(64, 64) -> Linear(64, 1). Averaging embeddings would treat padding as signal and lose
word order ("我让你" vs "你让我"); reading the last step of an RNN keeps order, and left padding
makes that last step the last real token.
"""

from __future__ import annotations

import torch
from torch import nn

from schemas.config import ModelConfig

_CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RNNClassifier(nn.Module):
    def __init__(self, vocab_size: int, pad_id: int, num_classes: int, cfg: ModelConfig):
        super().__init__()
        directions = 2 if cfg.bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=pad_id)
        self.rnn = _CELLS[cfg.cell](
            cfg.embedding_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.hidden_dim * directions, cfg.head_dim)
        # Two classes: one logit and BCE, as the seed. More: one logit per class and softmax CE.
        self.out = nn.Linear(cfg.head_dim, 1 if num_classes == 2 else num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, seq] ids -> logits [batch] (binary) or [batch, classes]."""
        outputs, _ = self.rnn(self.embedding(input_ids))
        last = outputs[:, -1, :]  # the seed's pooling: correct because padding is on the left
        logits = self.out(self.fc(self.dropout(last)))
        return logits.squeeze(-1) if logits.shape[-1] == 1 else logits


def build_model(vocab_size: int, pad_id: int, num_classes: int, cfg: ModelConfig) -> RNNClassifier:
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

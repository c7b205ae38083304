"""Test-only torch task for the generic door: every kind of declaration on a network with every convertible layer.

``digit-rows``: scikit-learn's digits read as sequences of 8 rows, each pixel a token (its grey level 0–16):
an embedding of the tokens, dropout, a 2-layer batch-first LSTM over the rows, a convolution-free linear
read-out. Its four hyperparameters use the four declarations: a dropout rate, an L2 penalty on the embedding
and LSTM parameters, an augmentation blanking each example's tokens at its own rate, and a loss term (the
entropy of the prediction, per example).
"""

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.digits import DigitsTask
from hpobench_stn.regularisers import L2, Augment, Dropout, LossTerm
from hpobench_stn.space import Float, Rate
from hpobench_stn.torch_task import Splits


class RowReader(nn.Module):
    """Embedding of the pixel tokens, dropout, a 2-layer LSTM over the 8 rows, a linear read-out."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(17, 3)
        self.drop = nn.Dropout()
        self.lstm = nn.LSTM(8 * 3, 12, num_layers=2, batch_first=True)
        self.out = nn.Linear(12, 10)

    def forward(self, tokens: Tensor) -> Tensor:
        rows = self.drop(self.emb(tokens).flatten(2))  # (B, 8 rows, 8 pixels x 3)
        h, _ = self.lstm(rows)
        return self.out(h[:, -1])


def blank(tokens: Tensor, values: Tensor, generator: torch.Generator) -> Tensor:
    """Each example's tokens set to 0 (white) with its own probability ``values[:, 0]``."""
    u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    return torch.where(u < values[:, :1, None], torch.zeros_like(tokens), tokens)


def entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """The entropy of each example's predicted distribution."""
    logp = outputs.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


class DigitRows(DigitsTask):
    """The digits as token sequences, with a dropout, a penalty, an augmentation and a loss term."""

    name = "digit-rows"
    description = "test only: digits as sequences of rows through an embedding and an LSTM"
    hyperparameters = (
        Dropout(Rate("dropout", 0.0, 0.9, init=0.1), modules="drop"),
        L2(Float("weight_decay", 1e-6, 1.0, log=True, init=1e-3, per_example=False), params=["emb.*", "lstm.*"]),
        Augment(Rate("blank", 0.0, 0.5, init=0.05), blank),
        LossTerm(Float("entropy", 0.0, 1.0, init=0.1), entropy),
    )
    metrics: ClassVar = {}

    def build_model(self) -> nn.Module:
        return RowReader()

    def load_data(self) -> Splits:
        s = super().load_data()
        return Splits(*((torch.round(x * 16).long().view(-1, 8, 8), y) for x, y in (s.train, s.val, s.test)))

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets)

"""The PTB language model, one definition for both doors: a tied-weight LSTM LM with seven regularisers.

``PtbLanguageModel(stn=False)`` is the ordinary network: ``nn.Embedding``, one fused ``nn.LSTM`` per layer, and a
decoder ``nn.Linear`` whose weight is the embedding matrix (tied weights, so the last layer's hidden size is the
embedding size). ``PtbLanguageModel(stn=True)`` is the same network built from STN layers
(:class:`~hpobench_stn.stn.layers.StnEmbedding`, :class:`~hpobench_stn.stn.lstm.StnLSTM`) whose units are gated
by the hyperparameters; the decoder stays a plain linear map tied to the *elementary* embedding, as in the
reference STN code (the 10,000-way output product is the largest of the model, and the LSTM's gates already let
λ shape what reaches it). Both take the same per-sequence hyperparameter values and apply the same regularisers,
through the same code, in training mode only:

============================ =========================================================================== =========
``values[:, k]``             regulariser                                                                 drawn per
============================ =========================================================================== =========
0 ``dropout_output``         variational dropout on the last layer's output (one mask per sequence)      sequence
1 ``dropout_input``          variational dropout on the embedded words (one mask per sequence)           sequence
2 ``dropout_hidden``         variational dropout between LSTM layers (one mask per sequence)             sequence
3 ``dropout_embedding``      word dropout: whole rows of the embedding matrix, one mask per minibatch    minibatch
4 ``dropconnect``            DropConnect on every layer's hidden-to-hidden weights, one mask per batch   minibatch
5 ``alpha``                  activation regularisation: α · mean(dropped last-layer output²)             (loss)
6 ``beta``                   temporal activation regularisation: β · mean((h_t − h_{t−1})²), last layer  (loss)
============================ =========================================================================== =========

Rates are per row of the batch (one row = one sequence), so under STN each sequence is regularised at its own
λ̃; the per-minibatch ones (word dropout, DropConnect) read row 0. Every mask is a scaled Bernoulli mask
(kept / (1 − p)) drawn from the caller's generator, always, whatever the rate: the random stream does not depend
on the rates, and a rate of 0 keeps everything (the mask is exactly 1). α and β weight per-sequence means.

With fixed hyperparameters DropConnect runs the fused ``nn.LSTM`` kernel on masked recurrent weights
(``torch.func.functional_call``), once per batch; the STN LSTM takes the mask as ``weight_hh_mask``.
Initialisation: embedding (elementary and response) ``U(-0.1, 0.1)``, decoder bias 0, LSTMs as ``nn.LSTM``,
STN gate maps ``N(0, 0.01²)`` (or zero with ``gate_init="zero"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from hpobench_stn.stn.layers import GateInit, StnEmbedding
from hpobench_stn.stn.lstm import StnLSTM

HPARAMS = (
    "dropout_output",
    "dropout_input",
    "dropout_hidden",
    "dropout_embedding",
    "dropconnect",
    "alpha",
    "beta",
)
OUTPUT, INPUT, HIDDEN, EMBEDDING, DROPCONNECT, ALPHA, BETA = range(len(HPARAMS))
EMBEDDING_INIT_RANGE = 0.1

State = list[tuple[Tensor, Tensor]]


class LmOutput(NamedTuple):
    """One forward pass: logits ``(T, B, V)``, the new state, the last layer's raw and dropped outputs (a tuple, so
    that ``torch.func`` transforms can return it)."""

    logits: Tensor
    state: State
    raw: Tensor
    dropped: Tensor


def scaled_mask(shape: tuple[int, ...], keep: Tensor, generator: torch.Generator | None) -> Tensor:
    """A Bernoulli(keep) mask divided by ``keep``; ``keep`` broadcasts against ``shape``."""
    noise = torch.rand(shape, generator=generator, device=keep.device, dtype=keep.dtype)
    return (noise < keep).to(keep.dtype) / keep


def locked_dropout(x: Tensor, rates: Tensor, generator: torch.Generator | None) -> Tensor:
    """Variational dropout of time-major ``x`` ``(T, B, D)``: one mask per sequence, rate ``rates[b]``."""
    keep = (1.0 - rates).to(x.dtype).view(1, -1, 1)
    return x * scaled_mask((1, x.shape[1], x.shape[2]), keep, generator)


class PtbLanguageModel(nn.Module):
    """Tied-weight LSTM language model with the seven regularisers (see the module docstring).

    ``layers`` LSTM layers of ``hidden_size`` units, except the last, which has ``embedding_size`` units (tied
    weights). ``stn=True`` builds the STN layers for ``n_hparams`` hyperparameters.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        layers: int = 2,
        stn: bool = False,
        n_hparams: int = len(HPARAMS),
        gate_init: GateInit = "normal",
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("the language model needs at least one LSTM layer")
        self.vocab_size = vocab_size
        self.stn = stn
        self.sizes = [hidden_size] * (layers - 1) + [embedding_size]
        inputs = [embedding_size, *self.sizes[:-1]]
        if stn:
            self.encoder: nn.Module = StnEmbedding(
                vocab_size, embedding_size, n_hparams, gate_init=gate_init, batch_first=False
            )
            self.rnns = nn.ModuleList(
                StnLSTM(i, h, n_hparams, gate_init=gate_init) for i, h in zip(inputs, self.sizes, strict=True)
            )
        else:
            self.encoder = nn.Embedding(vocab_size, embedding_size)
            self.rnns = nn.ModuleList(nn.LSTM(i, h) for i, h in zip(inputs, self.sizes, strict=True))
        self.decoder = nn.Linear(embedding_size, vocab_size)
        self.decoder.weight = self.embedding_weight
        with torch.no_grad():
            for w in self._embedding_tables():
                w.uniform_(-EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE)
            self.decoder.bias.zero_()

    @property
    def embedding_weight(self) -> nn.Parameter:
        """The (elementary) embedding matrix, shared with the decoder."""
        return self.encoder.weight_e if self.stn else self.encoder.weight  # type: ignore[return-value]

    def _embedding_tables(self) -> list[Tensor]:
        return [self.encoder.weight_e, self.encoder.weight_h] if self.stn else [self.encoder.weight]  # type: ignore[list-item]

    def init_state(self, batch: int) -> State:
        """Zero hidden and cell states, ``(B, H)`` per layer."""
        w = self.decoder.bias
        return [(w.new_zeros(batch, h), w.new_zeros(batch, h)) for h in self.sizes]

    def forward(
        self,
        tokens: Tensor,
        state: State | None,
        values: Tensor,
        gates: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LmOutput:
        """Run over time-major ``tokens`` ``(T, B)`` from ``state`` (zeros when ``None``).

        ``values`` ``(B, 7)``: the hyperparameter values the regularisers use (training mode only). ``gates``
        ``(B, 7)``: what the STN layers' gates see (STN model only). Masks come from ``generator``.
        """
        if self.stn and gates is None:
            raise ValueError("the STN model needs gates (B, n_hparams)")
        batch = tokens.shape[1]
        state = self.init_state(batch) if state is None else state
        drop = self.training
        values = values.to(device=self.decoder.bias.device, dtype=self.decoder.bias.dtype)

        row_mask = None
        if drop:
            keep = 1.0 - values[0, EMBEDDING]
            row_mask = scaled_mask((self.vocab_size,), keep, generator)
        if self.stn:
            x = self.encoder(tokens, gates, row_mask=row_mask)
        else:
            x = self.encoder(tokens)
            if row_mask is not None:
                x = x * F.embedding(tokens, row_mask.view(-1, 1))
        if drop:
            x = locked_dropout(x, values[:, INPUT], generator)

        new_state: State = []
        for layer, rnn in enumerate(self.rnns):
            mask = None
            if drop:
                w_hh = rnn.weight_hh_e if self.stn else rnn.weight_hh_l0
                mask = scaled_mask(tuple(w_hh.shape), 1.0 - values[0, DROPCONNECT], generator)
            x, (h, c) = self._run_layer(rnn, x, state[layer], gates, mask)
            new_state.append((h, c))
            if drop and layer < len(self.rnns) - 1:
                x = locked_dropout(x, values[:, HIDDEN], generator)
        raw = x
        dropped = locked_dropout(raw, values[:, OUTPUT], generator) if drop else raw
        return LmOutput(self.decoder(dropped), new_state, raw, dropped)

    def _run_layer(
        self, rnn: nn.Module, x: Tensor, state: tuple[Tensor, Tensor], gates: Tensor | None, mask: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if self.stn:
            return rnn(x, gates, state, weight_hh_mask=mask)
        hx = (state[0].unsqueeze(0), state[1].unsqueeze(0))
        if mask is None:
            out, (h, c) = rnn(x, hx)
        else:
            out, (h, c) = functional_call(rnn, {"weight_hh_l0": rnn.weight_hh_l0 * mask}, (x, hx))
        return out, (h.squeeze(0), c.squeeze(0))


def lm_loss(out: LmOutput, targets: Tensor, values: Tensor, train: bool) -> Tensor:
    """Mean token cross-entropy; with ``train``, plus α·AR and β·TAR per sequence (see the module docstring)."""
    loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), targets.reshape(-1))
    if not train:
        return loss
    values = values.to(device=loss.device, dtype=loss.dtype)
    loss = loss + (out.dropped.pow(2).mean(dim=(0, 2)) * values[:, ALPHA]).mean()
    if out.raw.shape[0] > 1:
        loss = loss + ((out.raw[1:] - out.raw[:-1]).pow(2).mean(dim=(0, 2)) * values[:, BETA]).mean()
    return loss


def detach_state(state: State) -> State:
    """The state cut from the graph (carried across BPTT windows)."""
    return [(h.detach(), c.detach()) for h, c in state]


def windows(stream: Tensor, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(inputs, targets)`` windows of up to ``bptt`` steps over a batchified stream ``(T, B)``, in order."""
    for start in range(0, stream.shape[0] - 1, bptt):
        length = min(bptt, stream.shape[0] - 1 - start)
        yield stream[start : start + length], stream[start + 1 : start + 1 + length]


def n_windows(stream: Tensor, bptt: int) -> int:
    """How many windows :func:`windows` yields."""
    return -(-(stream.shape[0] - 1) // bptt)


@torch.no_grad()
def evaluate_stream(
    model: PtbLanguageModel, stream: Tensor, bptt: int, values: Tensor, gates: Tensor | None = None
) -> float:
    """Mean token cross-entropy over a batchified stream, state carried across windows, no regularisers.

    The model must be in evaluation mode; one host sync at the end.
    """
    total = torch.zeros((), dtype=torch.float64, device=stream.device)
    state = None
    for inputs, targets in windows(stream, bptt):
        out = model(inputs, state, values, gates)
        total += F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), targets.reshape(-1), reduction="sum")
        state = out.state
    return float(total) / ((stream.shape[0] - 1) * stream.shape[1])

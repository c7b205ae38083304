"""The generic white-box door's conversion: a plain torch network becomes its STN twin, module by module.

:func:`to_stn` replaces, in place and at the same names, every ``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding`` and
``nn.LSTM`` (exactly these types; modules matching ``keep_plain`` stay plain) by an STN layer of
:mod:`hpobench_stn.stn.layers` whose elementary weights are copies of the plain module's (so the STN network starts
where the plain one does; response weights and gate maps are initialised as those layers do), and each declared
dropout module by :class:`ExampleDropout`, which drops every example at its own rate. Other modules (activations,
normalisation, pooling, GRUs) stay as they are. The user's ``forward`` is untouched: the twins read the gates
``(B, n)`` and the values ``(B, n)`` of the current pass from a shared :class:`GateFeed`, so tensors must carry
the batch in their first dimension (an ``nn.LSTM`` follows its own ``batch_first``).

Each twin offers ``squared_norm(name)`` for an L2 penalty on its plain parameter ``name``: the per-example
``||W_e + g_b ⊙ W_h||²`` of the weights example ``b`` actually uses, with ``g_b`` its gates, computed from three
reductions of the weights and two ``(B, units)`` products (:func:`effective_squared_norm`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fnmatch import fnmatchcase

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpobench_stn.errors import UserError
from hpobench_stn.stn.layers import StnConv2d, StnEmbedding, StnLinear
from hpobench_stn.stn.lstm import StnLSTM

__all__ = ["ExampleDropout", "GateFeed", "effective_squared_norm", "to_stn"]


class GateFeed:
    """The gates and values of the forward pass under way, shared by every twin of one network."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.gates: Tensor | None = None
        self.values: Tensor | None = None

    @contextmanager
    def feeding(self, gates: Tensor, values: Tensor | None) -> Iterator[None]:
        """Let the twins see ``gates`` (and, in training, ``values``) for one forward pass."""
        self.gates, self.values = gates, values
        try:
            yield
        finally:
            self.gates = self.values = None

    def gates_for(self, batch: int, name: str) -> Tensor:
        """The gates, checked against the batch size of the tensor reaching module ``name``."""
        if self.gates is None:
            raise RuntimeError(f"STN layer {name!r} ran outside the door's forward pass")
        if self.gates.shape[0] != batch:
            raise UserError(
                f"module {name!r} got a batch of {batch} but the pass has {self.gates.shape[0]} examples: the generic "
                "white-box door needs the batch in the first dimension of every tensor (an nn.LSTM follows its "
                "batch_first); keep this module plain (TorchTask.plain_modules) or write an StnProblem"
            )
        return self.gates


def effective_squared_norm(e: Tensor, h: Tensor, gate_rows: Tensor, gates: Tensor, unit_dim: int = 0) -> Tensor:
    """``Σ ||e + g_b ⊙ h||²`` per example: ``(B,)``, with ``g = gates @ gate_rowsᵀ`` ``(B, units)`` scaling ``h``
    along ``unit_dim`` (the output units of a weight or bias; the embedding dimensions of a table)."""
    dims = [d for d in range(e.dim()) if d != unit_dim]
    eh, hh = e * h, h * h
    if dims:
        eh, hh = eh.sum(dims), hh.sum(dims)
    g = F.linear(gates.to(e.dtype), gate_rows)
    return e.pow(2).sum() + 2.0 * (g @ eh) + (g * g) @ hh


def _norm(e: Tensor, h: Tensor, gate: nn.Linear, rows: slice, unit_dim: int = 0) -> Callable[[Tensor | None], Tensor]:
    def norm(gates: Tensor | None) -> Tensor:
        if gates is None:
            raise RuntimeError("an STN layer's penalty needs the pass's gates")
        return effective_squared_norm(e, h, gate.weight[rows], gates, unit_dim)

    return norm


class _Twin:
    """What every twin keeps: the feed it reads and its name in the network (for error messages)."""

    feed: GateFeed
    twin_name: str

    def _gates(self, batch: int, dtype: torch.dtype) -> Tensor:
        return self.feed.gates_for(batch, self.twin_name).to(dtype)


class GatedLinear(_Twin, StnLinear):
    """``nn.Linear``'s twin: an :class:`StnLinear` that reads its gates from the feed."""

    @classmethod
    def from_plain(cls, m: nn.Linear, n: int, feed: GateFeed, name: str) -> GatedLinear:
        """A twin of ``m`` whose elementary weights are copies of ``m``'s."""
        w = m.weight
        twin = cls(m.in_features, m.out_features, n, bias=m.bias is not None, device=w.device, dtype=w.dtype)
        _copy(twin, m, feed, name, [("weight_e", "weight"), ("bias_e", "bias")])
        return twin

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """The STN linear map with this pass's gates."""
        return super().forward(x, self._gates(x.shape[0] if x.dim() > 1 else -1, self.weight_e.dtype))

    def squared_norm(self, attr: str) -> Callable[[Tensor | None], Tensor]:
        """Per-example squared norm of the effective ``weight`` or ``bias``."""
        return _weight_bias_norm(self, attr, self.out_features)


class GatedConv2d(_Twin, StnConv2d):
    """``nn.Conv2d``'s twin (zero padding only): an :class:`StnConv2d` that reads its gates from the feed."""

    @classmethod
    def from_plain(cls, m: nn.Conv2d, n: int, feed: GateFeed, name: str) -> GatedConv2d:
        """A twin of ``m`` whose elementary weights are copies of ``m``'s."""
        if m.padding_mode != "zeros":
            raise UserError(f"module {name!r}: the generic door converts zero-padded convolutions only")
        w = m.weight
        twin = cls(
            m.in_channels, m.out_channels, m.kernel_size, n, m.stride, m.padding, m.dilation, m.groups,
            bias=m.bias is not None, device=w.device, dtype=w.dtype,
        )  # fmt: skip
        _copy(twin, m, feed, name, [("weight_e", "weight"), ("bias_e", "bias")])
        return twin

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """The STN convolution with this pass's gates."""
        return super().forward(x, self._gates(x.shape[0], self.weight_e.dtype))

    def squared_norm(self, attr: str) -> Callable[[Tensor | None], Tensor]:
        """Per-example squared norm of the effective ``weight`` or ``bias``."""
        return _weight_bias_norm(self, attr, self.out_channels)


class GatedEmbedding(_Twin, StnEmbedding):
    """``nn.Embedding``'s twin (no padding index, max norm or sparse gradients), batch-first."""

    @classmethod
    def from_plain(cls, m: nn.Embedding, n: int, feed: GateFeed, name: str) -> GatedEmbedding:
        """A twin of ``m`` whose elementary table is a copy of ``m``'s."""
        if m.padding_idx is not None or m.max_norm is not None or m.sparse or m.scale_grad_by_freq:
            raise UserError(
                f"module {name!r}: the generic door converts embeddings without padding_idx, max_norm, sparse "
                "or scale_grad_by_freq; keep it plain (TorchTask.plain_modules)"
            )
        w = m.weight
        twin = cls(m.num_embeddings, m.embedding_dim, n, batch_first=True, device=w.device, dtype=w.dtype)
        _copy(twin, m, feed, name, [("weight_e", "weight")])
        return twin

    def forward(self, idx: Tensor) -> Tensor:  # type: ignore[override]
        """Look up ``idx`` ``(B, ...)`` with this pass's gates."""
        return super().forward(idx, self._gates(idx.shape[0] if idx.dim() > 1 else -1, self.weight_e.dtype))

    def squared_norm(self, attr: str) -> Callable[[Tensor | None], Tensor]:
        """Per-example squared norm of the effective table (gated per embedding dimension)."""
        if attr != "weight":
            raise UserError(f"module {self.twin_name!r} has no parameter {attr!r}")
        return _norm(self.weight_e, self.weight_h, self.gate, slice(None), unit_dim=1)


class GatedLSTM(_Twin, nn.Module):
    """``nn.LSTM``'s twin (unidirectional, with biases, no projection): one :class:`StnLSTM` per layer.

    ``forward(x, state=None)`` returns ``(output, (h_n, c_n))`` as ``nn.LSTM`` does, with ``h_n, c_n``
    ``(layers, B, H)``; the gates are per sequence. ``nn.LSTM``'s dropout between layers is kept (fixed rate).
    """

    def __init__(self, m: nn.LSTM, n: int, feed: GateFeed, name: str) -> None:
        super().__init__()
        if m.bidirectional or m.proj_size or not m.bias:
            raise UserError(f"module {name!r}: the generic door converts unidirectional LSTMs with biases only")
        self.feed, self.twin_name = feed, name
        self.batch_first, self.dropout, self.hidden_size = m.batch_first, float(m.dropout), m.hidden_size
        w = m.weight_ih_l0
        sizes = [m.input_size] + [m.hidden_size] * (m.num_layers - 1)
        self.layers = nn.ModuleList(StnLSTM(i, m.hidden_size, n, device=w.device, dtype=w.dtype) for i in sizes)
        with torch.no_grad():
            for k, layer in enumerate(self.layers):
                for dst, src in zip(
                    layer.elementary_lstm_weights(), ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), strict=True
                ):
                    dst.copy_(getattr(m, f"{src}_l{k}"))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run every layer over ``x`` (``(B, T, in)`` when ``batch_first``, else ``(T, B, in)``)."""
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise UserError(f"module {self.twin_name!r}: the generic door's LSTM takes a batched 3-d tensor")
        if self.batch_first:
            x = x.transpose(0, 1)
        gates = self._gates(x.shape[1], self.layers[0].weight_ih_e.dtype)
        hs, cs = [], []
        for k, layer in enumerate(self.layers):
            if k and self.dropout and self.training:
                x = F.dropout(x, self.dropout)
            x, (h, c) = layer(x, gates, None if state is None else (state[0][k], state[1][k]))
            hs.append(h)
            cs.append(c)
        return (x.transpose(0, 1) if self.batch_first else x), (torch.stack(hs), torch.stack(cs))

    def squared_norm(self, attr: str) -> Callable[[Tensor | None], Tensor]:
        """Per-example squared norm of the effective ``weight_ih_lk``, ``weight_hh_lk``, ``bias_ih_lk`` or
        ``bias_hh_lk``."""
        kind, _, k = attr.rpartition("_l")
        if (
            kind not in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            or not k.isdigit()
            or int(k) >= len(self.layers)
        ):
            raise UserError(f"module {self.twin_name!r} has no parameter {attr!r}")
        layer = self.layers[int(k)]
        g4 = 4 * self.hidden_size
        gate = layer.gate_ih if kind.endswith("ih") else layer.gate_hh
        rows = slice(0, g4) if kind.startswith("weight") else slice(g4, 2 * g4)
        return _norm(getattr(layer, f"{kind}_e"), getattr(layer, f"{kind}_h"), gate, rows)


class ExampleDropout(_Twin, nn.Module):
    """A declared dropout module's twin: each example dropped at its own rate ``values[:, column]``.

    Elementwise for ``nn.Dropout``, whole channels for ``nn.Dropout1d/2d/3d``; survivors scaled by ``1/(1-p)``;
    masks drawn from the feed's generator; nothing dropped in evaluation mode.
    """

    def __init__(self, column: int, channels: bool, feed: GateFeed, name: str) -> None:
        super().__init__()
        self.column, self.channels = column, channels
        self.feed, self.twin_name = feed, name

    def forward(self, x: Tensor) -> Tensor:
        """``x`` with this pass's per-example dropout (training mode only)."""
        values = self.feed.values
        if not self.training or values is None:
            return x
        if x.shape[0] != values.shape[0]:
            self.feed.gates_for(x.shape[0], self.twin_name)  # raises the batch-dimension error
        batch = x.shape[0]
        shape = (batch, x.shape[1], *([1] * (x.dim() - 2))) if self.channels else tuple(x.shape)
        keep = (1.0 - values[:, self.column].to(x.dtype)).view(batch, *([1] * (x.dim() - 1)))
        noise = torch.rand(shape, generator=self.feed.generator, device=x.device, dtype=x.dtype)
        return x * (noise < keep).to(x.dtype).div_(keep)

    def extra_repr(self) -> str:
        return f"column={self.column}, channels={self.channels}"


def _copy(twin: nn.Module, plain: nn.Module, feed: GateFeed, name: str, pairs: Sequence[tuple[str, str]]) -> None:
    twin.feed, twin.twin_name = feed, name
    with torch.no_grad():
        for dst, src in pairs:
            if getattr(plain, src) is not None:
                getattr(twin, dst).copy_(getattr(plain, src))


def _weight_bias_norm(twin: StnLinear | StnConv2d, attr: str, out: int) -> Callable[[Tensor | None], Tensor]:
    if attr == "weight":
        return _norm(twin.weight_e, twin.weight_h, twin.gate, slice(0, out))
    if attr == "bias" and twin.bias_e is not None and twin.bias_h is not None:
        return _norm(twin.bias_e, twin.bias_h, twin.gate, slice(out, 2 * out))
    raise UserError(f"module {getattr(twin, 'twin_name', '?')!r} has no parameter {attr!r}")


_CONVERTERS: dict[type, Callable[[nn.Module, int, GateFeed, str], nn.Module]] = {
    nn.Linear: GatedLinear.from_plain,
    nn.Conv2d: GatedConv2d.from_plain,
    nn.Embedding: GatedEmbedding.from_plain,
    nn.LSTM: GatedLSTM,
}


def to_stn(
    model: nn.Module, n_hparams: int, feed: GateFeed, dropouts: dict[str, int], keep_plain: Sequence[str] = ()
) -> nn.Module:
    """Replace ``model``'s convertible layers by their STN twins and its declared dropout modules (name → column
    of the rate) by :class:`ExampleDropout`, in place; returns the model (a new module when the root converts)."""
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    twins: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if id(module) in twins:
            continue
        if name in dropouts:
            channels = type(module) is not nn.Dropout
            twins[id(module)] = ExampleDropout(dropouts[name], channels, feed, name)
        elif type(module) in _CONVERTERS and not any(fnmatchcase(name, p) for p in keep_plain):
            if any(owners[id(p)] > 1 for p in module.parameters(recurse=False)):
                raise UserError(
                    f"module {name!r} shares a parameter with another module (tied weights), which the generic "
                    "door cannot convert: keep both plain (TorchTask.plain_modules) or write an StnProblem"
                )
            twins[id(module)] = _CONVERTERS[type(module)](module, n_hparams, feed, name)
    if id(model) in twins:
        return twins[id(model)]
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in twins:
                parent._modules[child_name] = twins[id(child)]
    return model

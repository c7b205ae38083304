"""Self-Tuning Network layers: linear, 2-d convolution and embedding whose units are gated by λ (the LSTM is in
:mod:`hpobench_stn.stn.lstm`).

An STN layer with input ``x`` (``D_in``), output ``D_out`` and hyperparameter vector ``λ`` (``n`` values) computes

    y = W_e x + b_e + (V λ) ⊙ (W_h x) + (C λ) ⊙ b_h

``W_e, b_e`` are the *elementary* weights (the plain layer), ``W_h, b_h`` the *response* weights of the same shapes,
and ``V, C`` (``D_out x n`` each) are stored together as one bias-free linear map ``gate`` from ``n`` to
``2·D_out``: the first half of its output gates the weight path, the second half the bias. Layers without bias
have a gate of ``D_out`` outputs (weight path only).

Conventions shared by every layer here:

* ``hparams`` holds the *unconstrained* hyperparameter values (see :mod:`hpobench_stn.space`), one row per
  example: shape ``(B, n)``. A single vector of shape ``(n,)`` is accepted too and gates every example alike.
* The elementary part is computed by exactly one ``F.linear`` / ``F.conv2d`` / ``F.embedding`` call (with the
  bias) and the response term is added afterwards, so with the gate map at zero a layer returns *bit for bit*
  what the plain layer returns (the LSTM, whose recurrence is a Python loop instead of the fused kernel,
  matches ``nn.LSTM`` to float rounding).
* Initialisation: ``W_e, b_e, W_h, b_h`` as the corresponding plain ``torch.nn`` layer initialises its weight
  and bias; the gate map ``N(0, gate_std²)`` with ``gate_std = 0.01`` (``gate_init="normal"``, the default:
  small so that the layer starts as the plain layer up to a small perturbation, non-zero so that λ receives a
  gradient from the first step) or exactly zero (``gate_init="zero"``: the layer *is* the plain layer until the
  gate map is trained; λ then gets no gradient until the gates have moved).
* ``elementary_parameters()`` (``W_e, b_e``) and ``response_parameters()`` (``W_h, b_h`` and the gate map)
  partition ``parameters()``: Delta-STN trains the two groups on different losses.
  :func:`stn_parameter_groups` collects them over a whole model; :func:`frozen` runs a forward pass with some
  parameters out of the autograd graph, so that no backward computes gradients nobody asked for.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GateInit",
    "StnConv2d",
    "StnEmbedding",
    "StnLinear",
    "StnModule",
    "frozen",
    "stn_parameter_groups",
]

GateInit = Literal["normal", "zero"]

_IntPair = int | tuple[int, int]


def _pair(v: _IntPair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class StnModule(nn.Module, ABC):
    """Base class of the STN layers: the gate map and the elementary/response split of the parameters.

    Subclasses set ``n_hparams``, ``gate_init`` and ``gate_std`` (through :meth:`_set_gating`) and implement
    :meth:`elementary_parameters` and :meth:`response_parameters`, which together must list every parameter of
    the layer exactly once.
    """

    n_hparams: int
    gate_init: GateInit
    gate_std: float

    @abstractmethod
    def elementary_parameters(self) -> list[nn.Parameter]:
        """The plain layer's weights (``W_e``, ``b_e``)."""

    @abstractmethod
    def response_parameters(self) -> list[nn.Parameter]:
        """The best-response weights (``W_h``, ``b_h``) and the gate map(s)."""

    @staticmethod
    def _check_gate_init(gate_init: str, n_hparams: int) -> None:
        if gate_init not in ("normal", "zero"):
            raise ValueError(f"gate_init must be 'normal' or 'zero', got {gate_init!r}")
        if n_hparams < 1:
            raise ValueError(f"n_hparams must be at least 1, got {n_hparams}")

    def _set_gating(self, n_hparams: int, gate_init: GateInit, gate_std: float) -> None:
        """Check and keep the gate settings every STN layer takes (see the module docstring)."""
        self._check_gate_init(gate_init, n_hparams)
        self.n_hparams = n_hparams
        self.gate_init = gate_init
        self.gate_std = gate_std

    @staticmethod
    def _init_gate(weight: Tensor, gate_init: GateInit, gate_std: float) -> None:
        with torch.no_grad():
            if gate_init == "zero":
                weight.zero_()
            else:
                weight.normal_(0.0, gate_std)

    def _gate_values(self, gate: nn.Linear, hparams: Tensor) -> Tensor:
        """``gate(λ)``: ``(B, k)`` for ``hparams`` ``(B, n)``, ``(k,)`` for a shared ``(n,)``."""
        if hparams.dim() not in (1, 2) or hparams.shape[-1] != self.n_hparams:
            raise ValueError(
                f"hparams must have shape (B, {self.n_hparams}) or ({self.n_hparams},), got {tuple(hparams.shape)}"
            )
        return F.linear(hparams, gate.weight)


def _uniform_bias_(bias: Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(bias, -bound, bound)


def _apply_response(out: Tensor, gw: Tensor, resp: Tensor, gb: Tensor | None, bias_h: Tensor | None) -> Tensor:
    """``out + gw ⊙ resp + gb ⊙ bias_h`` in place on ``out`` (a fresh output whose backward does not need it)."""
    out.addcmul_(gw, resp)
    if gb is not None and bias_h is not None:
        out.add_(gb * bias_h)
    return out


class _StnWeightLayer(StnModule):
    """What :class:`StnLinear` and :class:`StnConv2d` share: one weight tensor and an optional bias of ``out``
    values, each as an elementary and a response copy, a gate map for the weight path (and the bias path), and
    the initialisation of ``nn.Linear``/``nn.Conv2d``."""

    weight_e: nn.Parameter
    weight_h: nn.Parameter
    bias_e: nn.Parameter | None
    bias_h: nn.Parameter | None

    def _make_parameters(self, shape: tuple[int, ...], out: int, bias: bool, fk: dict[str, Any]) -> None:
        """``weight_e``, ``weight_h`` of ``shape``, ``bias_e``, ``bias_h`` of ``out`` (or ``None``), the gate map."""
        self.weight_e = nn.Parameter(torch.empty(shape, **fk))
        self.weight_h = nn.Parameter(torch.empty(shape, **fk))
        if bias:
            self.bias_e = nn.Parameter(torch.empty(out, **fk))
            self.bias_h = nn.Parameter(torch.empty(out, **fk))
        else:
            self.register_parameter("bias_e", None)
            self.register_parameter("bias_h", None)
        self.gate = nn.Linear(self.n_hparams, (2 if bias else 1) * out, bias=False, **fk)

    def _reset_parameters(self, fan_in: int) -> None:
        """Weights Kaiming-uniform and biases ``U(-1/√fan_in, 1/√fan_in)`` as ``nn.Linear``/``nn.Conv2d``; the gate
        map per ``gate_init``."""
        for w in (self.weight_e, self.weight_h):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        for b in (self.bias_e, self.bias_h):
            if b is not None:
                _uniform_bias_(b, fan_in)
        self._init_gate(self.gate.weight, self.gate_init, self.gate_std)

    def elementary_parameters(self) -> list[nn.Parameter]:
        """``[weight_e, bias_e]`` (without the bias when ``bias=False``)."""
        return [p for p in (self.weight_e, self.bias_e) if p is not None]

    def response_parameters(self) -> list[nn.Parameter]:
        """``[weight_h, bias_h, gate.weight]`` (without the bias when ``bias=False``)."""
        return [p for p in (self.weight_h, self.bias_h) if p is not None] + [self.gate.weight]


class StnLinear(_StnWeightLayer):
    """STN fully connected layer ``y = W_e x + b_e + (Vλ) ⊙ (W_h x) + (Cλ) ⊙ b_h``.

    Parameters: ``weight_e``, ``weight_h`` ``(out, in)``; ``bias_e``, ``bias_h`` ``(out,)`` when ``bias``;
    ``gate.weight`` ``(2·out, n)`` (``(out, n)`` without bias), rows ``[:out]`` are ``V``, rows ``[out:]`` are
    ``C``. That is ``out·(2·in + n)`` weights and ``out·(2 + n)`` biases. Initialisation as ``nn.Linear`` for
    ``W_e, b_e, W_h, b_h``; gate map ``N(0, gate_std²)`` or zero (see the module docstring).

    ``forward(x, hparams)``: with ``batch_first=True`` (default) ``x`` is ``(B, in)`` or ``(B, ..., in)`` and
    ``hparams`` ``(B, n)``, broadcast over the middle dimensions; with ``batch_first=False`` ``x`` is
    ``(..., B, in)`` (time-major sequences, ``(T, B, in)``) and the gates broadcast over the leading
    dimensions. Returns ``x``'s shape with ``in`` replaced by ``out``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_hparams: int,
        bias: bool = True,
        gate_init: GateInit = "normal",
        gate_std: float = 0.01,
        batch_first: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._set_gating(n_hparams, gate_init, gate_std)
        fk = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.batch_first = batch_first
        self._make_parameters((out_features, in_features), out_features, bias, fk)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``W_e, b_e, W_h, b_h`` as ``nn.Linear.reset_parameters``; the gate map per ``gate_init``."""
        self._reset_parameters(self.in_features)

    def forward(self, x: Tensor, hparams: Tensor) -> Tensor:
        """Apply the layer to ``x`` with per-example hyperparameters ``hparams`` (see the class docstring)."""
        g = self._gate_values(self.gate, hparams)
        if g.dim() == 2 and self.batch_first and x.dim() > 2:
            g = g.view(g.shape[0], *([1] * (x.dim() - 2)), g.shape[1])
        out = F.linear(x, self.weight_e, self.bias_e)
        resp = F.linear(x, self.weight_h)
        if self.bias_h is None:
            return _apply_response(out, g, resp, None, None)
        gw, gb = g.chunk(2, dim=-1)
        return _apply_response(out, gw, resp, gb, self.bias_h)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, n_hparams={self.n_hparams}, "
            f"bias={self.bias_e is not None}, gate_init={self.gate_init!r}, batch_first={self.batch_first}"
        )


class StnConv2d(_StnWeightLayer):
    """STN 2-d convolution: output channels gated by λ, the gates broadcast over height and width.

    ``y = conv(x, W_e) + b_e + (Vλ) ⊙ conv(x, W_h) + (Cλ) ⊙ b_h`` with ``V, C`` of shape ``(out_ch, n)`` stored as
    ``gate.weight`` ``(2·out_ch, n)`` (``(out_ch, n)`` without bias). ``W_e, W_h`` are
    ``(out_ch, in_ch / groups, k, k)``, so the counts are those of :class:`StnLinear` with
    ``D_in = in_ch / groups · k_h · k_w``. Initialisation as ``nn.Conv2d``; gate map ``N(0, gate_std²)`` or zero.

    ``forward(x, hparams)``: ``x`` ``(B, in_ch, H, W)``, ``hparams`` ``(B, n)`` (or ``(n,)`` shared); returns
    ``(B, out_ch, H', W')`` exactly as ``F.conv2d`` with the same ``stride``, ``padding``, ``dilation`` and
    ``groups``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntPair,
        n_hparams: int,
        stride: _IntPair = 1,
        padding: _IntPair | str = 0,
        dilation: _IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        gate_init: GateInit = "normal",
        gate_std: float = 0.01,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._set_gating(n_hparams, gate_init, gate_std)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels and out_channels must be divisible by groups={groups}")
        fk = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding: tuple[int, int] | str = padding if isinstance(padding, str) else _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self._make_parameters((out_channels, in_channels // groups, *self.kernel_size), out_channels, bias, fk)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``W_e, b_e, W_h, b_h`` as ``nn.Conv2d.reset_parameters``; the gate map per ``gate_init``."""
        self._reset_parameters((self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1])

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor, hparams: Tensor) -> Tensor:
        """Apply the convolution to ``x`` ``(B, C, H, W)`` with per-example ``hparams`` ``(B, n)``."""
        g = self._gate_values(self.gate, hparams)
        g = g.view(*g.shape, 1, 1)  # (B, k, 1, 1) or (k, 1, 1): broadcast over H, W
        out = self._conv(x, self.weight_e, self.bias_e)
        resp = self._conv(x, self.weight_h, None)
        if self.bias_h is None:
            return _apply_response(out, g, resp, None, None)
        gw, gb = g.chunk(2, dim=-3)
        return _apply_response(out, gw, resp, gb, self.bias_h.view(-1, 1, 1))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"n_hparams={self.n_hparams}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, bias={self.bias_e is not None}, "
            f"gate_init={self.gate_init!r}"
        )


class StnEmbedding(StnModule):
    """STN embedding ``y = E_e[idx] + (Vλ) ⊙ E_h[idx]`` (no bias).

    Parameters: ``weight_e``, ``weight_h`` ``(num_embeddings, dim)`` initialised ``N(0, 1)`` as ``nn.Embedding``;
    ``gate.weight`` ``(dim, n)``, ``N(0, gate_std²)`` or zero.

    ``forward(idx, hparams, row_mask=None)``: with ``batch_first=True`` (default) ``idx`` is ``(B, T)`` (or
    ``(B, ...)``) and ``hparams`` ``(B, n)``; with ``batch_first=False`` ``idx`` is ``(T, B)`` (or ``(..., B)``).
    Returns ``idx.shape + (dim,)``. ``row_mask`` (``(num_embeddings,)`` or ``(num_embeddings, 1)``), when given,
    multiplies each looked-up row by its word's factor: the same as multiplying the rows of both ``E_e`` and
    ``E_h`` (embedding/word dropout with a per-minibatch scaled 0/1 mask) without touching the whole table.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        n_hparams: int,
        gate_init: GateInit = "normal",
        gate_std: float = 0.01,
        batch_first: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._set_gating(n_hparams, gate_init, gate_std)
        fk = {"device": device, "dtype": dtype}
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.batch_first = batch_first
        self.weight_e = nn.Parameter(torch.empty(num_embeddings, embedding_dim, **fk))
        self.weight_h = nn.Parameter(torch.empty(num_embeddings, embedding_dim, **fk))
        self.gate = nn.Linear(n_hparams, embedding_dim, bias=False, **fk)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``E_e, E_h`` ``N(0, 1)`` as ``nn.Embedding.reset_parameters``; the gate map per ``gate_init``."""
        nn.init.normal_(self.weight_e)
        nn.init.normal_(self.weight_h)
        self._init_gate(self.gate.weight, self.gate_init, self.gate_std)

    def elementary_parameters(self) -> list[nn.Parameter]:
        """``[weight_e]``."""
        return [self.weight_e]

    def response_parameters(self) -> list[nn.Parameter]:
        """``[weight_h, gate.weight]``."""
        return [self.weight_h, self.gate.weight]

    def forward(self, idx: Tensor, hparams: Tensor, row_mask: Tensor | None = None) -> Tensor:
        """Look up ``idx`` with per-example ``hparams``; optional per-word ``row_mask`` (see the class)."""
        g = self._gate_values(self.gate, hparams)
        if g.dim() == 2 and self.batch_first:
            g = g.view(g.shape[0], *([1] * (idx.dim() - 1)), g.shape[1])
        out = F.embedding(idx, self.weight_e)
        out = _apply_response(out, g, F.embedding(idx, self.weight_h), None, None)
        if row_mask is not None:
            out = out * F.embedding(idx, row_mask.view(self.num_embeddings, 1))
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, n_hparams={self.n_hparams}, "
            f"gate_init={self.gate_init!r}, batch_first={self.batch_first}"
        )


def stn_parameter_groups(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split ``module.parameters()`` into ``(elementary, response)``.

    ``response`` holds the response parameters (response weights and gate maps) of every :class:`StnModule`
    inside ``module``; ``elementary`` holds every other parameter, the STN layers' elementary weights and any
    non-STN parameter (plain layers, normalisation, ...) alike. Both lists follow ``module.parameters()`` order
    and, like it, list a shared parameter once.
    """
    response_ids = {id(p) for m in module.modules() if isinstance(m, StnModule) for p in m.response_parameters()}
    elementary: list[nn.Parameter] = []
    response: list[nn.Parameter] = []
    for p in module.parameters():
        (response if id(p) in response_ids else elementary).append(p)
    return elementary, response


@contextmanager
def frozen(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Within the block, ``params`` do not require gradients: a forward pass run inside builds no graph into them.

    Autograd already skips the gradients of built-in operations that a backward does not ask for, but a custom
    autograd function (the STN LSTM's recurrence) learns what to compute from its inputs' ``requires_grad`` at
    forward time; a hyperparameter step runs its forward inside ``frozen(weights)`` so that its backward computes
    the gradients of λ alone. The flags are restored on exit, also after an exception.
    """
    params = list(params)
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)

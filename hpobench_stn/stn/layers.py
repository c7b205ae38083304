"""Self-Tuning Network layers: linear, 2-d convolution, embedding and LSTM whose units are gated by λ.

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
  :func:`stn_parameter_groups` collects them over a whole model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "GateInit",
    "StnConv2d",
    "StnEmbedding",
    "StnLSTM",
    "StnLinear",
    "StnModule",
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


class _StnLstmRecurrence(torch.autograd.Function):
    """The recurrent part of :class:`StnLSTM` with a hand-written backward.

    Inputs: ``pre`` ``(T, B, 4H)`` (input-to-hidden products and all biases), ``gw`` ``(B, 4H)`` (the
    hidden-to-hidden response gates ``V_hh λ``), ``w_cat`` ``(8H, H)`` (``[W_hh_e; W_hh_h]``), ``h0``, ``c0``
    ``(B, H)``. Outputs: all hidden states ``(T, B, H)`` and the last cell state ``(B, H)``.

    Autograd through the step loop would do one small weight-gradient product per step; this backward runs the
    step loop for the pre-activation gradients only (one ``(B, 8H) x (8H, H)`` product per step) and then forms
    the weight gradient with one ``(8H, T·B) x (T·B, H)`` product, and the gate gradient with one reduction.
    It is differentiable once (no double backward, no ``torch.func`` transforms: :class:`StnLSTM` falls back to
    the autograd loop under those).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, pre: Tensor, gw: Tensor, w_cat: Tensor, h0: Tensor, c0: Tensor
    ) -> tuple[Tensor, Tensor]:
        steps, batch, g4 = pre.shape
        H = g4 // 4
        we_t, wh_t = w_cat[:g4].t(), w_cat[g4:].t()
        acts = torch.empty_like(pre)  # activated gates (i, f, g, o) per step
        zh = torch.empty_like(pre)  # W_hh_h h_{t-1} per step
        hs = pre.new_empty(steps + 1, batch, H)
        cs = pre.new_empty(steps + 1, batch, H)
        tcs = pre.new_empty(steps, batch, H)  # tanh(c_t)
        hs[0] = h0
        cs[0] = c0
        for t in range(steps):
            a = acts[t]
            torch.addmm(pre[t], hs[t], we_t, out=a)
            torch.mm(hs[t], wh_t, out=zh[t])
            a.addcmul_(gw, zh[t])
            a[:, : 2 * H].sigmoid_()
            a[:, 2 * H : 3 * H].tanh_()
            a[:, 3 * H :].sigmoid_()
            c = cs[t + 1]
            torch.mul(a[:, H : 2 * H], cs[t], out=c)
            c.addcmul_(a[:, :H], a[:, 2 * H : 3 * H])
            torch.tanh(c, out=tcs[t])
            torch.mul(a[:, 3 * H :], tcs[t], out=hs[t + 1])
        ctx.save_for_backward(gw, w_cat, acts, zh, hs, cs, tcs)
        return hs[1:], cs[steps]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor, d_ct: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        gw, w_cat, acts, zh, hs, cs, tcs = ctx.saved_tensors
        steps, batch, g4 = acts.shape
        H = g4 // 4
        i, f, g, o = acts.chunk(4, dim=2)
        # Step-independent factors, computed for all steps at once:
        # d a_{i,f,g} = dc_t ⊙ k_{i,f,g},  d a_o = dh_t ⊙ k_o,  dc_t += dh_t ⊙ e.
        k = acts.new_empty(steps, batch, 3, H)
        torch.mul(g, i - i * i, out=k[:, :, 0])
        torch.mul(cs[:-1], f - f * f, out=k[:, :, 1])
        torch.mul(i, 1 - g * g, out=k[:, :, 2])
        k_o = tcs * (o - o * o)
        e = o * (1 - tcs * tcs)
        dz = acts.new_empty(steps, batch, 2 * g4)  # [d pre-activation, d pre-activation ⊙ gw] per step
        dh = d_out[steps - 1].clone()
        dc = d_ct.clone()
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                dh.add_(d_out[t])
            dc.addcmul_(dh, e[t])
            torch.mul(k[t], dc.unsqueeze(1), out=dz[t, :, : 3 * H].view(batch, 3, H))
            torch.mul(dh, k_o[t], out=dz[t, :, 3 * H : g4])
            dc.mul_(f[t])
            torch.mul(dz[t, :, :g4], gw, out=dz[t, :, g4:])
            torch.mm(dz[t], w_cat, out=dh)
        need = ctx.needs_input_grad
        d_pre = dz[:, :, :g4] if need[0] else None
        d_gw = (dz[:, :, :g4] * zh).sum(0) if need[1] else None
        d_w = None
        if need[2]:
            d_w = torch.mm(dz.view(steps * batch, 2 * g4).t(), hs[:-1].reshape(steps * batch, H))
        return d_pre, d_gw, d_w, dh if need[3] else None, dc if need[4] else None


def _fused_recurrence_ok(pre: Tensor, w_cat: Tensor) -> bool:
    """Whether :class:`_StnLstmRecurrence` applies: no ``torch.func`` transform, no autocast, one dtype."""
    transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)
    if transforms_active is None or transforms_active():
        return False
    return pre.dtype == w_cat.dtype and not torch.is_autocast_enabled(pre.device.type)


def _lstm_recurrence_autograd(pre: Tensor, gw: Tensor, w_cat: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Same computation as :class:`_StnLstmRecurrence`, differentiated by autograd (supports ``torch.func``)."""
    g4 = pre.shape[-1]
    H = g4 // 4
    w_t = w_cat.t()
    outputs = []
    for pre_t in pre.unbind(0):
        z = torch.mm(h, w_t)
        gates = torch.addcmul(pre_t + z[:, :g4], gw, z[:, g4:])
        sig = gates.sigmoid()
        c = torch.addcmul(sig[:, H : 2 * H] * c, sig[:, :H], gates[:, 2 * H : 3 * H].tanh())
        h = sig[:, 3 * H :] * c.tanh()
        outputs.append(h)
    return torch.stack(outputs), c


class StnLSTM(StnModule):
    """One-layer STN LSTM: the input-to-hidden and hidden-to-hidden maps are STN linear maps of ``4·hidden``.

    Gate pre-activations (nn.LSTM order ``i, f, g, o``), per example ``b`` with ``λ = hparams[b]``::

        z_t = W_ih_e x_t + b_ih_e + (V_ih λ) ⊙ (W_ih_h x_t) + (C_ih λ) ⊙ b_ih_h
            + W_hh_e h_{t-1} + b_hh_e + (V_hh λ) ⊙ (W_hh_h h_{t-1}) + (C_hh λ) ⊙ b_hh_h

    Parameters: ``weight_ih_e``, ``weight_ih_h`` ``(4H, input)``; ``weight_hh_e``, ``weight_hh_h`` ``(4H, H)``;
    ``bias_ih_e``, ``bias_ih_h``, ``bias_hh_e``, ``bias_hh_h`` ``(4H,)``; ``gate_ih.weight`` and
    ``gate_hh.weight`` ``(8H, n)`` (first half gates the weight path, second half the bias). All weights and
    biases initialised ``U(-1/√H, 1/√H)`` as ``nn.LSTM``; gate maps ``N(0, gate_std²)`` or zero.

    ``forward(x, hparams, state=None, weight_hh_mask=None)``:

    * ``x``: ``(T, B, input)``, **time-major** (as ``nn.LSTM`` with ``batch_first=False``);
    * ``hparams``: ``(B, n)``, one row per sequence, constant over time (or ``(n,)`` shared);
    * ``state``: optional ``(h0, c0)``, each ``(B, H)`` or ``(1, B, H)``; zeros when omitted;
    * ``weight_hh_mask``: optional ``(4H, H)`` multiplicative mask (0/1 or scaled 0/(1/(1-p))) for DropConnect,
      applied to both the elementary and the response hidden-to-hidden weights once for the whole call.

    Returns ``(output, (h_T, c_T))``: ``output`` ``(T, B, H)``, ``h_T`` and ``c_T`` ``(B, H)``.

    The input-to-hidden products (elementary and gated response) and all biases are computed for all ``T``
    steps at once (two matmuls over ``T·B`` rows); the Python loop covers only the recurrent products. The
    hidden-to-hidden gates ``V_hh λ`` are computed once per call. With ``fused=True`` (default) the recurrence
    runs in a custom autograd function whose backward forms the hidden-to-hidden weight gradient with one
    ``(8H, T·B) x (T·B, H)`` matmul instead of one small product per step; it supports a single backward pass
    (no double backward). Under ``torch.func`` transforms (``jvp``, ``vmap``, ``grad``) or autocast, or with
    ``fused=False``, the recurrence is a plain loop differentiated by autograd (same values, slower backward).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        n_hparams: int,
        gate_init: GateInit = "normal",
        gate_std: float = 0.01,
        fused: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._set_gating(n_hparams, gate_init, gate_std)
        fk = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.fused = fused
        g4 = 4 * hidden_size
        self.weight_ih_e = nn.Parameter(torch.empty(g4, input_size, **fk))
        self.weight_hh_e = nn.Parameter(torch.empty(g4, hidden_size, **fk))
        self.bias_ih_e = nn.Parameter(torch.empty(g4, **fk))
        self.bias_hh_e = nn.Parameter(torch.empty(g4, **fk))
        self.weight_ih_h = nn.Parameter(torch.empty(g4, input_size, **fk))
        self.weight_hh_h = nn.Parameter(torch.empty(g4, hidden_size, **fk))
        self.bias_ih_h = nn.Parameter(torch.empty(g4, **fk))
        self.bias_hh_h = nn.Parameter(torch.empty(g4, **fk))
        self.gate_ih = nn.Linear(n_hparams, 2 * g4, bias=False, **fk)
        self.gate_hh = nn.Linear(n_hparams, 2 * g4, bias=False, **fk)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights and biases ``U(-1/√H, 1/√H)`` as ``nn.LSTM.reset_parameters``; gate maps per ``gate_init``."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for p in self.elementary_parameters() + self.response_parameters()[:4]:
            nn.init.uniform_(p, -bound, bound)
        self._init_gate(self.gate_ih.weight, self.gate_init, self.gate_std)
        self._init_gate(self.gate_hh.weight, self.gate_init, self.gate_std)

    def elementary_parameters(self) -> list[nn.Parameter]:
        """``[weight_ih_e, weight_hh_e, bias_ih_e, bias_hh_e]``."""
        return [self.weight_ih_e, self.weight_hh_e, self.bias_ih_e, self.bias_hh_e]

    def response_parameters(self) -> list[nn.Parameter]:
        """``[weight_ih_h, weight_hh_h, bias_ih_h, bias_hh_h, gate_ih.weight, gate_hh.weight]``."""
        return [
            self.weight_ih_h,
            self.weight_hh_h,
            self.bias_ih_h,
            self.bias_hh_h,
            self.gate_ih.weight,
            self.gate_hh.weight,
        ]

    def elementary_lstm_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The elementary weights ``(w_ih, w_hh, b_ih, b_hh)`` in ``nn.LSTM`` layout and gate order (i, f, g, o).

        These are the parameters themselves (no copy): ``nn.LSTM`` with these weights computes this layer with
        the gate maps at zero.
        """
        return self.weight_ih_e, self.weight_hh_e, self.bias_ih_e, self.bias_hh_e

    @torch.no_grad()
    def load_elementary_from_lstm(self, lstm: nn.LSTM) -> None:
        """Copy a one-layer, unidirectional ``nn.LSTM``'s weights into the elementary weights."""
        if (
            lstm.num_layers != 1
            or lstm.bidirectional
            or not lstm.bias
            or lstm.proj_size
            or lstm.input_size != self.input_size
            or lstm.hidden_size != self.hidden_size
        ):
            raise ValueError(f"need a 1-layer unidirectional nn.LSTM({self.input_size}, {self.hidden_size}) with bias")
        for dst, src in zip(
            self.elementary_lstm_weights(),
            (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0),
            strict=True,
        ):
            dst.copy_(src)

    def to_lstm(self) -> nn.LSTM:
        """A new ``nn.LSTM`` (time-major) holding copies of the elementary weights."""
        w_ih = self.weight_ih_e
        lstm = nn.LSTM(self.input_size, self.hidden_size, device=w_ih.device, dtype=w_ih.dtype)
        with torch.no_grad():
            for dst, src in zip(
                (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0),
                self.elementary_lstm_weights(),
                strict=True,
            ):
                dst.copy_(src)
        return lstm

    def forward(
        self,
        x: Tensor,
        hparams: Tensor,
        state: tuple[Tensor, Tensor] | None = None,
        weight_hh_mask: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run the LSTM over time-major ``x`` ``(T, B, input)``; returns ``(output, (h_T, c_T))``."""
        if x.dim() != 3 or x.shape[0] == 0 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must have shape (T, B, {self.input_size}) with T >= 1, got {tuple(x.shape)}")
        H = self.hidden_size
        g4 = 4 * H
        batch = x.shape[1]
        gw_ih, gb_ih = self._gate_values(self.gate_ih, hparams).chunk(2, dim=-1)  # (B, 4H) each
        gw_hh, gb_hh = self._gate_values(self.gate_hh, hparams).chunk(2, dim=-1)

        # Input-to-hidden for all steps: two matmuls over T·B rows; the gates (B, 4H) broadcast over T.
        pre = F.linear(x, self.weight_ih_e, self.bias_ih_e)
        pre.addcmul_(gw_ih, F.linear(x, self.weight_ih_h))
        # All bias terms, constant over time: b_hh_e + (C_ih λ) ⊙ b_ih_h + (C_hh λ) ⊙ b_hh_h.
        bias = torch.addcmul(torch.addcmul(self.bias_hh_e, gb_ih, self.bias_ih_h), gb_hh, self.bias_hh_h)
        pre.add_(bias)

        w_e, w_h = self.weight_hh_e, self.weight_hh_h
        if weight_hh_mask is not None:
            w_e = w_e * weight_hh_mask
            w_h = w_h * weight_hh_mask
        w_cat = torch.cat((w_e, w_h))  # (8H, H): [W_hh_e; W_hh_h]

        if state is None:
            h0 = x.new_zeros(batch, H)
            c0 = x.new_zeros(batch, H)
        else:
            h0, c0 = (s.reshape(batch, H) for s in state)

        if self.fused and _fused_recurrence_ok(pre, w_cat):
            output, c_last = _StnLstmRecurrence.apply(pre, gw_hh.expand(batch, g4), w_cat, h0, c0)
        else:
            output, c_last = _lstm_recurrence_autograd(pre, gw_hh, w_cat, h0, c0)
        return output, (output[-1], c_last)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, n_hparams={self.n_hparams}, gate_init={self.gate_init!r}, "
            f"fused={self.fused}, time-major"
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

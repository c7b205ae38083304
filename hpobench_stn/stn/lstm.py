"""The STN LSTM: a one-layer LSTM whose input-to-hidden and hidden-to-hidden maps are STN linear maps.

:class:`StnLSTM` follows the conventions of :mod:`hpobench_stn.stn.layers` (unconstrained ``hparams`` per example,
elementary/response split, initialisation as the plain layer). Its recurrence runs in
:class:`_StnLstmRecurrence`, an autograd function with a hand-written backward that forms the hidden-to-hidden
weight gradient with one large product, and only when that gradient is asked for: a hyperparameter step that runs
its forward with the weights frozen (:func:`hpobench_stn.stn.layers.frozen`) gets the gradients of the gates and
inputs alone. Under ``torch.func`` transforms or autocast the recurrence is a plain loop differentiated by
autograd.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from hpobench_stn.stn.layers import GateInit, StnModule

__all__ = ["StnLSTM"]


class _StnLstmRecurrence(torch.autograd.Function):
    """The recurrent part of :class:`StnLSTM` with a hand-written backward.

    Inputs: ``pre`` ``(T, B, 4H)`` (input-to-hidden products and all biases), ``gw`` ``(B, 4H)`` (the
    hidden-to-hidden response gates ``V_hh λ``), ``w_cat`` ``(8H, H)`` (``[W_hh_e; W_hh_h]``), ``h0``, ``c0``
    ``(B, H)``. Outputs: all hidden states ``(T, B, H)`` and the last cell state ``(B, H)``.

    Autograd through the step loop would do one small weight-gradient product per step; this backward runs the
    step loop for the pre-activation gradients only (one ``(B, 8H) x (8H, H)`` product per step) and then forms
    the weight gradient with one ``(8H, T·B) x (T·B, H)`` product, and the gate gradient with one reduction.
    It is differentiable once (no double backward, no ``torch.func`` transforms: :class:`StnLSTM` falls back to
    the autograd loop under those). Each gradient is formed only when ``ctx.needs_input_grad`` asks for it, which
    reflects the inputs' ``requires_grad`` when the forward ran, not what a later ``autograd.grad`` asks for: a
    forward inside :func:`~hpobench_stn.stn.layers.frozen` weights skips the weight gradient.
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

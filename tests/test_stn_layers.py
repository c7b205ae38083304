"""Tests of the STN layers: plain-layer equivalence, parameter counts, per-example gating, gradients."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from matrix_products import MatrixProducts
from torch import Tensor, nn

from hpobench_stn.stn.layers import (
    StnConv2d,
    StnEmbedding,
    StnLinear,
    StnModule,
    frozen,
    stn_parameter_groups,
)
from hpobench_stn.stn.lstm import StnLSTM

N_HP = 3


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _hparams(batch: int, n: int = N_HP) -> Tensor:
    return torch.randn(batch, n)


# ---------------------------------------------------------------- builders: (layer, input for a batch of B)


def _linear(gate_init: str = "normal", gate_std: float = 0.5) -> tuple[StnModule, Tensor]:
    return StnLinear(7, 5, N_HP, gate_init=gate_init, gate_std=gate_std), torch.randn(2, 7)


def _conv(gate_init: str = "normal", gate_std: float = 0.5) -> tuple[StnModule, Tensor]:
    layer = StnConv2d(3, 4, 3, N_HP, stride=2, padding=1, gate_init=gate_init, gate_std=gate_std)
    return layer, torch.randn(2, 3, 8, 8)


def _embedding(gate_init: str = "normal", gate_std: float = 0.5) -> tuple[StnModule, Tensor]:
    return StnEmbedding(11, 6, N_HP, gate_init=gate_init, gate_std=gate_std), torch.randint(0, 11, (2, 5))


def _lstm(gate_init: str = "normal", gate_std: float = 0.5, fused: bool = True) -> tuple[StnModule, Tensor]:
    return StnLSTM(4, 6, N_HP, gate_init=gate_init, gate_std=gate_std, fused=fused), torch.randn(5, 2, 4)


def _lstm_unfused(gate_init: str = "normal", gate_std: float = 0.5) -> tuple[StnModule, Tensor]:
    return _lstm(gate_init, gate_std, fused=False)


BUILDERS = {"linear": _linear, "conv2d": _conv, "embedding": _embedding, "lstm": _lstm, "lstm_unfused": _lstm_unfused}


def _run(layer: StnModule, x: Tensor, hp: Tensor) -> Tensor:
    out = layer(x, hp)
    return out[0] if isinstance(layer, StnLSTM) else out


def _select(layer: StnModule, x: Tensor, b: int) -> Tensor:
    """Example ``b`` of the batch, kept as a batch of one (the LSTM is time-major)."""
    return x[:, b : b + 1] if isinstance(layer, StnLSTM) else x[b : b + 1]


# ---------------------------------------------------------------- gate map at zero = the plain layer


@pytest.mark.parametrize("bias", [True, False])
def test_linear_zero_gate_is_plain_linear_bit_for_bit(bias: bool) -> None:
    layer = StnLinear(7, 5, N_HP, bias=bias, gate_init="zero")
    plain = nn.Linear(7, 5, bias=bias)
    with torch.no_grad():
        plain.weight.copy_(layer.weight_e)
        if bias:
            plain.bias.copy_(layer.bias_e)
    for x in (torch.randn(4, 7), torch.randn(4, 6, 7), torch.randn(4, 2, 3, 7)):
        assert torch.equal(layer(x, _hparams(4)), plain(x))
        assert torch.equal(layer(x, _hparams(4)), F.linear(x, layer.weight_e, layer.bias_e))


def test_conv2d_zero_gate_is_plain_conv_bit_for_bit() -> None:
    layer = StnConv2d(3, 4, 3, N_HP, stride=2, padding=1, gate_init="zero")
    plain = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    with torch.no_grad():
        plain.weight.copy_(layer.weight_e)
        plain.bias.copy_(layer.bias_e)
    x = torch.randn(4, 3, 9, 9)
    assert torch.equal(layer(x, _hparams(4)), plain(x))


def test_embedding_zero_gate_is_plain_embedding_bit_for_bit() -> None:
    layer = StnEmbedding(11, 6, N_HP, gate_init="zero")
    idx = torch.randint(0, 11, (4, 5))
    assert torch.equal(layer(idx, _hparams(4)), F.embedding(idx, layer.weight_e))


@pytest.mark.parametrize("fused", [True, False])
def test_lstm_zero_gate_matches_nn_lstm(fused: bool) -> None:
    layer = StnLSTM(4, 6, N_HP, gate_init="zero", fused=fused)
    lstm = layer.to_lstm()
    x, hp = torch.randn(7, 3, 4), _hparams(3)
    state = (torch.randn(3, 6), torch.randn(3, 6))
    out, (h, c) = layer(x, hp, state)
    ref, (h_ref, c_ref) = lstm(x, (state[0][None], state[1][None]))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, h_ref[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(c, c_ref[0], atol=1e-5, rtol=0)
    # And the other way round: weights loaded from an nn.LSTM; a (1, B, H) state is accepted too.
    other = nn.LSTM(4, 6)
    layer.load_elementary_from_lstm(other)
    torch.testing.assert_close(layer(x, hp)[0], other(x)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        layer(x, hp, (state[0][None], state[1][None]))[0],
        other(x, (state[0][None], state[1][None]))[0],
        atol=1e-5,
        rtol=0,
    )


def test_nonzero_gate_differs_from_plain_layer() -> None:
    """Guards the equivalence tests: with the default init the response term is really added."""
    layer = StnLinear(7, 5, N_HP)
    x = torch.randn(4, 7)
    assert not torch.equal(layer(x, _hparams(4)), F.linear(x, layer.weight_e, layer.bias_e))


def _split_gate(gate: nn.Linear, d: int) -> tuple[Tensor, Tensor]:
    return gate.weight[:d], gate.weight[d:]


def test_linear_and_conv_match_the_formula() -> None:
    """y = W_e x + b_e + (Vλ) ⊙ (W_h x) + (Cλ) ⊙ b_h, V the first half of the gate map, C the second."""
    layer, x = _linear()
    hp = _hparams(2)
    v, c = _split_gate(layer.gate, 5)
    ref = x @ layer.weight_e.T + layer.bias_e + (hp @ v.T) * (x @ layer.weight_h.T) + (hp @ c.T) * layer.bias_h
    torch.testing.assert_close(layer(x, hp), ref)

    conv, x = _conv()
    v, c = _split_gate(conv.gate, 4)
    elem = F.conv2d(x, conv.weight_e, conv.bias_e, stride=2, padding=1)
    resp = F.conv2d(x, conv.weight_h, None, stride=2, padding=1)
    ref = elem + (hp @ v.T)[:, :, None, None] * resp + ((hp @ c.T) * conv.bias_h)[:, :, None, None]
    torch.testing.assert_close(conv(x, hp), ref)


def test_embedding_matches_the_formula() -> None:
    layer, idx = _embedding()
    hp = _hparams(2)
    ref = layer.weight_e[idx] + (hp @ layer.gate.weight.T)[:, None, :] * layer.weight_h[idx]
    torch.testing.assert_close(layer(idx, hp), ref)


def test_lstm_matches_the_formula() -> None:
    """A direct transcription of the STN LSTM equations, step by step, example by example."""
    layer, x = _lstm()
    hp = _hparams(2)
    g4 = 24
    v_ih, c_ih = _split_gate(layer.gate_ih, g4)
    v_hh, c_hh = _split_gate(layer.gate_hh, g4)
    outs = []
    for b in range(2):
        lam = hp[b]
        h, c = torch.zeros(6), torch.zeros(6)
        seq = []
        for t in range(x.shape[0]):
            z = (
                layer.weight_ih_e @ x[t, b]
                + layer.bias_ih_e
                + (v_ih @ lam) * (layer.weight_ih_h @ x[t, b])
                + (c_ih @ lam) * layer.bias_ih_h
                + layer.weight_hh_e @ h
                + layer.bias_hh_e
                + (v_hh @ lam) * (layer.weight_hh_h @ h)
                + (c_hh @ lam) * layer.bias_hh_h
            )
            i, f, g, o = z.chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            seq.append(h)
        outs.append(torch.stack(seq))
    out, (h_t, _c_t) = layer(x, hp)
    torch.testing.assert_close(out, torch.stack(outs, dim=1))
    torch.testing.assert_close(h_t, out[-1])


# ---------------------------------------------------------------- parameter counts


def _count(params: list[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def test_linear_parameter_count() -> None:
    din, dout, n = 7, 5, N_HP
    layer = StnLinear(din, dout, n)
    assert _count(list(layer.parameters())) == dout * (2 * din + n) + dout * (2 + n)
    assert _count(layer.elementary_parameters()) == din * dout + dout  # the plain nn.Linear
    assert layer.gate.weight.shape == (2 * dout, n)
    assert layer.gate.bias is None
    no_bias = StnLinear(din, dout, n, bias=False)
    assert _count(list(no_bias.parameters())) == dout * (2 * din + n)


def test_conv2d_parameter_count() -> None:
    cin, cout, k, n = 3, 4, 3, N_HP
    layer = StnConv2d(cin, cout, k, n)
    din = cin * k * k
    assert _count(list(layer.parameters())) == cout * (2 * din + n) + cout * (2 + n)
    assert _count(layer.elementary_parameters()) == _count(list(nn.Conv2d(cin, cout, k).parameters()))


def test_embedding_and_lstm_parameter_counts() -> None:
    emb = StnEmbedding(11, 6, N_HP)
    assert _count(list(emb.parameters())) == 2 * 11 * 6 + 6 * N_HP
    lstm = StnLSTM(4, 6, N_HP)
    assert _count(lstm.elementary_parameters()) == _count(list(nn.LSTM(4, 6).parameters()))
    # Two STN linear maps (input->4H and hidden->4H, each with bias): 4H(2·Din + n) + 4H(2 + n) apiece.
    g4 = 4 * 6
    expected = g4 * (2 * 4 + N_HP) + g4 * (2 + N_HP) + g4 * (2 * 6 + N_HP) + g4 * (2 + N_HP)
    assert _count(list(lstm.parameters())) == expected


# ---------------------------------------------------------------- per-example gating


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_batch_equals_examples_run_alone(kind: str) -> None:
    layer, x = BUILDERS[kind]()
    hp = _hparams(2)
    batched = _run(layer, x, hp)
    alone = [_run(layer, _select(layer, x, b), hp[b : b + 1]) for b in range(2)]
    dim = 1 if kind.startswith("lstm") else 0
    torch.testing.assert_close(batched, torch.cat(alone, dim=dim), atol=1e-6, rtol=1e-6)
    # The gates matter: example 0 run with example 1's λ gives a different output.
    swapped = _run(layer, _select(layer, x, 0), hp[1:2])
    assert (swapped - alone[0]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_shared_hparams_vector_equals_repeated_rows(kind: str) -> None:
    layer, x = BUILDERS[kind]()
    hp = torch.randn(N_HP)
    torch.testing.assert_close(_run(layer, x, hp), _run(layer, x, hp.expand(2, N_HP)), atol=1e-6, rtol=1e-6)


def test_linear_gates_broadcast_over_middle_dims() -> None:
    layer, _ = _linear()
    x, hp = torch.randn(2, 4, 7), _hparams(2)
    rows = [layer(x[b], hp[b].expand(4, N_HP)) for b in range(2)]
    torch.testing.assert_close(layer(x, hp), torch.stack(rows), atol=1e-6, rtol=1e-6)


def test_time_major_linear_and_embedding() -> None:
    x, idx, hp = torch.randn(2, 4, 7), torch.randint(0, 11, (2, 4)), _hparams(2)
    lin = StnLinear(7, 5, N_HP, gate_std=0.5)
    lin_tm = StnLinear(7, 5, N_HP, batch_first=False)
    lin_tm.load_state_dict(lin.state_dict())
    torch.testing.assert_close(lin_tm(x.transpose(0, 1), hp), lin(x, hp).transpose(0, 1))
    emb = StnEmbedding(11, 6, N_HP, gate_std=0.5)
    emb_tm = StnEmbedding(11, 6, N_HP, batch_first=False)
    emb_tm.load_state_dict(emb.state_dict())
    torch.testing.assert_close(emb_tm(idx.t(), hp), emb(idx, hp).transpose(0, 1))


def test_embedding_row_mask_equals_masked_tables() -> None:
    layer, idx = _embedding()
    hp = _hparams(2)
    mask = (torch.rand(11) > 0.5).float() / 0.5
    ref = StnEmbedding(11, 6, N_HP)
    ref.load_state_dict(layer.state_dict())
    with torch.no_grad():
        ref.weight_e.mul_(mask[:, None])
        ref.weight_h.mul_(mask[:, None])
    torch.testing.assert_close(layer(idx, hp, row_mask=mask), ref(idx, hp))


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_gradient_flows_to_hparams(kind: str) -> None:
    layer, x = BUILDERS[kind](gate_std=0.01)
    hp = _hparams(2).requires_grad_()
    _run(layer, x, hp).square().sum().backward()
    assert hp.grad is not None
    assert (hp.grad.abs().sum(dim=1) > 0).all()  # every example's λ gets a gradient
    # With the gate map at zero λ has no influence at all.
    layer_zero, _ = BUILDERS[kind](gate_init="zero")
    hp_zero = _hparams(2).requires_grad_()
    _run(layer_zero, x, hp_zero).square().sum().backward()
    assert hp_zero.grad is not None
    assert torch.equal(hp_zero.grad, torch.zeros_like(hp_zero))


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_gradcheck(kind: str) -> None:
    """The in-place response update is differentiated correctly (inputs, λ and all parameters)."""
    layer, x = BUILDERS[kind]()
    layer = layer.double()
    x = x.double().requires_grad_() if x.is_floating_point() else x
    hp = _hparams(2).double().requires_grad_()
    params = dict(layer.named_parameters())

    def f(x: Tensor, hp: Tensor, *ps: Tensor) -> Tensor:
        out = torch.func.functional_call(layer, dict(zip(params, ps, strict=True)), (x, hp))
        return out[0] if isinstance(out, tuple) else out

    inputs = (x, hp, *(p.detach().clone().requires_grad_() for p in params.values()))
    assert torch.autograd.gradcheck(f, inputs)


def test_lstm_fused_and_autograd_recurrence_agree() -> None:
    """The hand-written backward of the fused recurrence gives autograd's gradients (all inputs, λ, weights)."""
    fused, x = _lstm()
    loop = StnLSTM(4, 6, N_HP, fused=False)
    loop.load_state_dict(fused.state_dict())
    hp = _hparams(2)
    state = (torch.randn(2, 6), torch.randn(2, 6))
    mask = (torch.rand(24, 6) > 0.3).float() / 0.7
    grads = []
    for layer in (fused, loop):
        inputs = [t.clone().requires_grad_() for t in (x, hp, *state)]
        out, (h, c) = layer(inputs[0], inputs[1], (inputs[2], inputs[3]), weight_hh_mask=mask)
        (out.sin().sum() + h.square().sum() + c.cos().sum()).backward()
        grads.append([out, h, c] + [t.grad for t in inputs] + [p.grad for p in layer.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")
def test_lstm_supports_torch_func_jvp() -> None:
    """Delta-STN linearises the response with torch.func.jvp: the LSTM then uses the autograd loop."""
    layer, x = _lstm()
    hp, tangent = _hparams(2), torch.randn(2, N_HP)
    out, jvp_out = torch.func.jvp(lambda h: layer(x, h)[0], (hp,), (tangent,))
    eps = 1e-3
    fd = (layer(x, hp + eps * tangent)[0] - layer(x, hp - eps * tangent)[0]) / (2 * eps)
    torch.testing.assert_close(out, layer(x, hp)[0])
    torch.testing.assert_close(jvp_out, fd, atol=1e-3, rtol=1e-2)


# ---------------------------------------------------------------- parameter partition


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_elementary_response_partition(kind: str) -> None:
    layer, _ = BUILDERS[kind]()
    elem = [id(p) for p in layer.elementary_parameters()]
    resp = [id(p) for p in layer.response_parameters()]
    assert len(set(elem)) == len(elem) and len(set(resp)) == len(resp)
    assert not set(elem) & set(resp)
    assert set(elem) | set(resp) == {id(p) for p in layer.parameters()}
    assert len(elem) + len(resp) == len(list(layer.parameters()))


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = StnEmbedding(11, 6, N_HP)
        self.lstm = StnLSTM(6, 6, N_HP)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Sequential(StnLinear(6, 6, N_HP), nn.ReLU(), nn.Linear(6, 11))
        self.head[2].weight = self.emb.weight_e  # tied weights, counted once


def test_stn_parameter_groups() -> None:
    model = _Model()
    elementary, response = stn_parameter_groups(model)
    expected_response = model.emb.response_parameters() + model.lstm.response_parameters()
    expected_response += model.head[0].response_parameters()
    assert {id(p) for p in response} == {id(p) for p in expected_response}
    assert len(response) == len(expected_response)
    all_ids = [id(p) for p in model.parameters()]
    assert sorted(id(p) for p in elementary + response) == sorted(all_ids)
    elem_ids = {id(p) for p in elementary}
    assert id(model.norm.weight) in elem_ids and id(model.head[2].bias) in elem_ids
    assert id(model.lstm.weight_hh_e) in elem_ids


# ---------------------------------------------------------------- DropConnect on the LSTM


@pytest.mark.parametrize("fused", [True, False])
def test_lstm_all_ones_mask_equals_no_mask(fused: bool) -> None:
    layer, x = _lstm(fused=fused)
    hp = _hparams(2)
    out, (h, c) = layer(x, hp)
    out_m, (h_m, c_m) = layer(x, hp, weight_hh_mask=torch.ones(24, 6))
    assert torch.equal(out, out_m) and torch.equal(h, h_m) and torch.equal(c, c_m)


def test_lstm_mask_applies_to_elementary_and_response_weights() -> None:
    layer, x = _lstm()
    hp = _hparams(2)
    state = (torch.randn(2, 6), torch.randn(2, 6))
    mask = (torch.rand(24, 6) > 0.5).float() / 0.5
    ref = StnLSTM(4, 6, N_HP)
    ref.load_state_dict(layer.state_dict())
    with torch.no_grad():
        ref.weight_hh_e.mul_(mask)
        ref.weight_hh_h.mul_(mask)
    torch.testing.assert_close(layer(x, hp, state, weight_hh_mask=mask)[0], ref(x, hp, state)[0])
    assert not torch.allclose(layer(x, hp, state, weight_hh_mask=mask)[0], layer(x, hp, state)[0])


# ---------------------------------------------------------------- argument checks


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="gate_init"):
        StnLinear(3, 2, N_HP, gate_init="uniform")  # type: ignore[arg-type]
    layer = StnLinear(3, 2, N_HP)
    with pytest.raises(ValueError, match="hparams"):
        layer(torch.randn(4, 3), torch.randn(4, N_HP + 1))
    with pytest.raises(ValueError, match="x must have shape"):
        StnLSTM(3, 2, N_HP)(torch.randn(4, 3), torch.randn(4, N_HP))


def test_lstm_lambda_gradient_with_frozen_weights_forms_no_recurrent_weight_gradient() -> None:
    lstm = StnLSTM(4, 6, N_HP)
    x = torch.randn(5, 2, 4)
    hp = _hparams(2).requires_grad_()

    def lambda_gradient(freeze: bool) -> tuple[Tensor, list[tuple[int, ...]]]:
        with frozen(lstm.parameters()) if freeze else contextlib.nullcontext():
            out, _ = lstm(x, hp)
        with MatrixProducts() as products:
            (grad,) = torch.autograd.grad(out.square().sum(), hp)
        return grad, products.shapes

    recurrent = (2 * 4 * 6, 6)  # the gradient of [W_hh_e; W_hh_h]
    asked, shapes = lambda_gradient(freeze=False)
    assert recurrent in shapes  # formed and thrown away: the function cannot see what autograd.grad asks for
    skipped, shapes = lambda_gradient(freeze=True)
    assert recurrent not in shapes
    assert torch.equal(skipped, asked)
    assert all(p.requires_grad for p in lstm.parameters())


def test_frozen_restores_the_flags_after_an_exception() -> None:
    layer = StnLinear(3, 2, N_HP)
    layer.bias_h.requires_grad_(False)
    with pytest.raises(RuntimeError), frozen(layer.parameters()):
        assert not any(p.requires_grad for p in layer.parameters())
        raise RuntimeError
    assert [p.requires_grad for p in layer.parameters()] == [p is not layer.bias_h for p in layer.parameters()]

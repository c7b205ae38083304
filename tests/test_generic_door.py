"""The generic torch door: conversion to STN twins, per-example regularisers, declarations, the black-box trial."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.digits import DigitsTask
from hpobench_stn import registry
from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.errors import UserError
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.regularisers import L2, Augment, Dropout, LossTerm, Regularisers
from hpobench_stn.space import Float, Rate
from hpobench_stn.stn.convert import ExampleDropout, GateFeed, effective_squared_norm, to_stn
from hpobench_stn.stn.layers import StnModule
from hpobench_stn.task import Task
from tasks.quadratic.task import QuadraticTask

pytestmark = pytest.mark.usefixtures("one_thread")

N = 3


class SequenceNet(nn.Module):
    """Embedding, a 2-layer batch-first LSTM, a linear read-out of the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.lstm = nn.LSTM(6, 5, num_layers=2, batch_first=True)
        self.out = nn.Linear(5, 4)

    def forward(self, tokens: Tensor) -> Tensor:
        h, _ = self.lstm(self.emb(tokens))
        return self.out(h[:, -1])


def image_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Dropout2d(),
        nn.Flatten(),
        nn.Linear(3 * 6 * 6, 8),
        nn.Dropout(),
        nn.Linear(8, 4, bias=False),
    )


NETS = {
    "sequence": (SequenceNet, lambda: torch.randint(0, 11, (5, 7))),
    "image": (image_net, lambda: torch.randn(5, 1, 6, 6)),
}


def _convert(plain: nn.Module, dropouts: dict[str, int] | None = None) -> tuple[nn.Module, GateFeed]:
    feed = GateFeed(torch.Generator().manual_seed(0))
    return to_stn(copy.deepcopy(plain), N, feed, dropouts or {}), feed


def _gate_maps(model: nn.Module) -> list[Tensor]:
    return [p for name, p in model.named_parameters() if name.split(".")[-2].startswith("gate")]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- conversion ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("net", sorted(NETS))
def test_twin_with_zero_gate_maps_is_the_plain_network(net):
    build, inputs = NETS[net]
    plain = build().eval()
    stn, feed = _convert(plain)
    stn.eval()
    plain_types = (nn.Linear, nn.Conv2d, nn.Embedding, nn.LSTM)
    left = [n for n, m in stn.named_modules() if type(m) in plain_types and not n.split(".")[-1].startswith("gate")]
    assert not left  # every convertible layer converted (the gate maps are the twins' own nn.Linear)
    n_stn = sum(isinstance(m, StnModule) for m in stn.modules())
    assert n_stn == (4 if net == "sequence" else 3)  # the LSTM's two layers count once each
    x = inputs()
    gates = torch.randn(x.shape[0], N)
    with torch.no_grad():
        for p in _gate_maps(stn):
            p.zero_()
        with feed.feeding(gates, None):
            out = stn(x)
    torch.testing.assert_close(out, plain(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("net", sorted(NETS))
def test_gates_act_per_example(net):
    build, inputs = NETS[net]
    stn, feed = _convert(build())
    stn.eval()
    with torch.no_grad():
        for p in _gate_maps(stn):
            p.normal_(0.0, 0.5)
    x = inputs()[:1].expand(2, *inputs().shape[1:])  # the same input twice
    gates = torch.tensor([[0.0] * N, [1.0] * N])
    with torch.no_grad(), feed.feeding(gates, None):
        out = stn(x)
    assert not torch.allclose(out[0], out[1])


def _explicit_norms(e: Tensor, h: Tensor, g: Tensor, unit_dim: int) -> Tensor:
    shape = [1] * e.dim()
    shape[unit_dim] = -1
    effective = e.unsqueeze(0) + g.view(g.shape[0], *shape) * h.unsqueeze(0)  # (B, *e.shape): every example's weights
    return effective.pow(2).flatten(1).sum(1)


def test_effective_squared_norm_is_the_norm_of_each_examples_weights():
    stn, _ = _convert(SequenceNet())
    gates = torch.randn(4, N)
    with torch.no_grad():
        for p in _gate_maps(stn):
            p.normal_(0.0, 0.5)
    out = stn.out
    g = F.linear(gates, out.gate.weight)
    expected = _explicit_norms(out.weight_e, out.weight_h, g[:, :4], 0)
    torch.testing.assert_close(out.squared_norm("weight")(gates), expected)
    torch.testing.assert_close(out.squared_norm("bias")(gates), _explicit_norms(out.bias_e, out.bias_h, g[:, 4:], 0))
    emb = stn.emb
    expected = _explicit_norms(emb.weight_e, emb.weight_h, F.linear(gates, emb.gate.weight), 1)
    torch.testing.assert_close(stn.emb.squared_norm("weight")(gates), expected)
    layer = stn.lstm.layers[1]
    g_hh = F.linear(gates, layer.gate_hh.weight)
    expected = _explicit_norms(layer.weight_hh_e, layer.weight_hh_h, g_hh[:, :20], 0)
    torch.testing.assert_close(stn.lstm.squared_norm("weight_hh_l1")(gates), expected)
    expected = _explicit_norms(layer.bias_hh_e, layer.bias_hh_h, g_hh[:, 20:], 0)
    torch.testing.assert_close(stn.lstm.squared_norm("bias_hh_l1")(gates), expected)
    conv, _ = _convert(image_net())
    gc = F.linear(gates, conv[0].gate.weight)
    expected = _explicit_norms(conv[0].weight_e, conv[0].weight_h, gc[:, :3], 0)
    torch.testing.assert_close(conv[0].squared_norm("weight")(gates), expected)
    assert torch.equal(
        effective_squared_norm(out.weight_e, out.weight_h, out.gate.weight[:4], gates * 0),
        out.weight_e.pow(2).sum().expand(4),
    )


def test_tied_weights_and_time_major_tensors_are_refused_with_a_fix():
    tied = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5))
    tied[1].weight = tied[0].weight
    with pytest.raises(UserError, match=r"tied weights.*plain_modules"):
        _convert(tied)
    feed_model, feed = _convert(nn.Linear(3, 2))
    with pytest.raises(UserError, match="batch in the first dimension"), feed.feeding(torch.zeros(4, N), None):
        feed_model(torch.randn(7, 4, 3))  # (T, B, in): the batch is not first


# --- per-example dropout ---------------------------------------------------------------------------------------
def test_example_dropout_drops_each_example_at_its_own_rate():
    rates = torch.tensor([0.0, 0.5, 0.9, 0.25])
    values = torch.zeros(4, N)
    values[:, 1] = rates
    feed = GateFeed(torch.Generator().manual_seed(0))
    drop = ExampleDropout(1, channels=False, feed=feed, name="d").train()
    x = torch.ones(4, 20000)
    with feed.feeding(torch.zeros(4, N), values):
        y = drop(x)
    dropped = (y == 0).float().mean(1)
    assert torch.allclose(dropped, rates, atol=0.02)
    kept = y != 0
    assert torch.allclose(y[kept], (1.0 / (1.0 - rates)).view(4, 1).expand_as(y)[kept])
    channel = ExampleDropout(1, channels=True, feed=feed, name="c").train()
    with feed.feeding(torch.zeros(4, N), values):
        z = channel(torch.ones(4, 500, 3, 3))
    assert torch.all(z.amax((2, 3)) == z.amin((2, 3)))  # whole channels
    assert torch.allclose((z[:, :, 0, 0] == 0).float().mean(1), rates, atol=0.06)
    with feed.feeding(torch.zeros(4, N), values):
        assert torch.equal(drop.eval()(x), x)


# --- declarations ----------------------------------------------------------------------------------------------
def test_declarations_that_act_on_nothing_are_refused():
    model = image_net()
    regs = Regularisers((Dropout(Rate("p", 0.0, 0.9), modules="fc*"),))
    with pytest.raises(UserError, match=r"no dropout module of the model matches 'fc\*'.*2, 5"):
        regs.dropout_columns(model)
    regs = Regularisers((L2(Float("wd", 1e-5, 1.0, log=True), params="*.kernel"),))
    with pytest.raises(UserError, match=r"hyperparameter 'wd': no parameter.*'\*\.kernel'"):
        regs.penalty_names(model)
    with pytest.raises(UserError, match="duplicate"):
        Regularisers((Dropout(Rate("p"), "*"), L2(Float("p", 0.1, 1.0), "*")))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(Rate("p", 0.0, 1.0), "*")


def test_augmentations_and_loss_terms_get_each_examples_values():
    seen = []

    def augment(x, values, generator):
        seen.append(values.clone())
        return x + values[:, :1]

    regs = Regularisers(
        (
            Augment(Float("shift", 0.0, 1.0), augment),
            LossTerm(Float("alpha", 0.0, 1.0), lambda out, y: out.pow(2).sum(1)),
        )
    )
    values = torch.tensor([[0.0, 0.5], [1.0, 2.0]])
    x = regs.augment(torch.zeros(2, 3), values, torch.Generator())
    assert torch.equal(seen[0], values[:, :1]) and torch.equal(x, torch.tensor([[0.0] * 3, [1.0] * 3]))
    loss = regs.training_loss(torch.tensor(1.0), x, None, values, [], None)
    assert float(loss) == pytest.approx(1.0 + (0.5 * 0.0 + 2.0 * 3.0) / 2)


# --- both doors of one definition --------------------------------------------------------------------------------
def test_black_box_trial_applies_the_configuration():
    task = DigitsTask("tiny")
    trial = task.make_trial({"dropout": 0.3, "weight_decay": 0.01}, seed=0)
    assert [m.p for m in trial.model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    x, y = task.data.train
    trial.model.eval()
    with torch.no_grad():
        out = trial.model(x)
        weights = sum(m.weight.pow(2).sum() for m in trial.model.modules() if isinstance(m, nn.Linear))
        loss = task.regularisers.training_loss(task.loss(out, y), out, y, trial.values, trial.penalties, None)
    assert float(loss) == pytest.approx(float(F.cross_entropy(out, y) + 0.5 * 0.01 * weights), rel=1e-6)
    trial.set_config({"dropout": 0.6, "weight_decay": 0.01})
    assert [m.p for m in trial.model.modules() if isinstance(m, nn.Dropout)] == [0.6, 0.6]


def test_black_box_trial_resumes_exactly_dropout_included():
    task = DigitsTask("tiny")
    config = {"dropout": 0.5, "weight_decay": 1e-3}
    whole = task.make_trial(config, seed=3)
    meter = BudgetMeter(Budget(epochs=100), task.train_size)
    reports = [whole.train_epoch(meter).val_loss for _ in range(2)]
    first = task.make_trial(config, seed=3)
    first.train_epoch(meter)
    state = first.state_dict()
    torch.rand(100)  # the global random state moves between checkpoint and restore
    resumed = task.make_trial(config, seed=3)
    resumed.load_state_dict(state)
    assert resumed.train_epoch(meter).val_loss == reports[1]


def test_stn_network_starts_from_the_black_box_initialisation():
    task = DigitsTask("tiny")
    plain = task.make_trial(task.space.default(), seed=5).model
    stn = task.stn_problem(5).model
    for i in (0, 3, 6):
        assert torch.equal(stn[i].weight_e, plain[i].weight) and torch.equal(stn[i].bias_e, plain[i].bias)
    assert isinstance(stn[2], ExampleDropout) and isinstance(stn[5], ExampleDropout)


def test_a_task_without_a_door_says_how_to_add_one():
    class NoDoor(QuadraticTask):
        stn_problem = Task.stn_problem

    with pytest.raises(UserError, match=r"has no white-box door.*TorchTask.*README.*Adding a task"):
        NoDoor("tiny").stn_problem(0)


@pytest.mark.parametrize(
    ("method", "args"),
    [("random", {}), ("stn", {}), ("delta-stn", {}), ("delta-stn", {"linearize": True})],
)
def test_every_method_runs_on_an_embedding_and_lstm_task(tmp_path, monkeypatch, method, args):
    monkeypatch.setitem(registry.BUILTIN_TASKS, "digit-rows", "generic_tasks:DigitRows")
    spec = RunSpec("digit-rows", method, seed=0, budget="40ep", out=tmp_path, method_args=args)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed" and summary["epochs"] <= 40  # compute-weighted: Delta-STN pays ~4-7x
    assert summary["incumbent"]["test_metrics"]["loss"] < 2.3  # better than chance (ln 10)

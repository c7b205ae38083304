"""Compute-weighted budgets: the cost factors, and every pass through a network charged at its cost."""

import json

import pytest
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.utils.flop_counter import FlopCounterMode

from hpobench_stn.cost import _formulas, cost_factors
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.registry import method_names
from hpobench_stn.store import read_events
from tasks.cifar.model import GatedNet
from tasks.cifar.task import CifarTask
from tasks.quadratic.task import QuadraticTask

RAY_METHODS = {"asha", "hyperband", "pbt"}  # their trials run in Ray workers: see test_ray.py
IN_PROCESS = [name for name in method_names() if name not in RAY_METHODS]


def test_quadratic_factors_are_the_counted_products():
    """Per example, d = n = 10: the fixed step is two matrix-vector products (4d FLOPs); STN's weight step is the
    three products of its layer (elementary, response, gate: 2d + 2d + 2nd) and their weight gradients (as many)."""
    costs = cost_factors(QuadraticTask("tiny"))
    d = n = 10
    assert costs.flops["fixed"] == 4 * d
    assert costs.flops["stn_train"] == 2 * (2 * d + 2 * d + 2 * n * d)
    assert costs.flops["stn_hyper"] == (2 * d + 2 * d + 2 * n * d) + 2 * n * d  # forward, then the gate's λ-gradient
    assert costs.factor("stn_train") == 12.0 and costs.factor("fixed") == 1.0
    assert costs is cost_factors(QuadraticTask("tiny"))  # measured once per process


def test_cifar_stn_step_costs_about_two_fixed_steps():
    costs = cost_factors(CifarTask("tiny"))
    assert 1.8 < costs.factor("stn_train") < 2.3  # an STN layer does two products per plain one, plus its gates
    assert costs.factor("stn_hyper") < costs.factor("stn_train")  # no weight gradients
    assert costs.factor("delta_train") > costs.factor("stn_train")  # two passes
    assert costs.factor("delta_linearized_train") > costs.factor("delta_train")  # one of them a Jacobian-vector pass


def _count(step):
    with FlopCounterMode(display=False, custom_mapping=_formulas()) as counter:
        step()
    return counter.get_total_flops()


def test_fused_lstm_is_counted_as_its_matrix_products():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6)
    x = torch.randn(5, 3, 4, requires_grad=True)
    h0, c0 = torch.zeros(1, 3, 6, requires_grad=True), torch.zeros(1, 3, 6, requires_grad=True)

    def fused():
        lstm(x, (h0, c0))[0].sum().backward()

    def by_hand():
        h, c, outs = h0[0], c0[0], []
        for x_t in x:
            gates = x_t @ lstm.weight_ih_l0.t() + h @ lstm.weight_hh_l0.t() + lstm.bias_ih_l0 + lstm.bias_hh_l0
            i, f, g, o = gates.chunk(4, 1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
            outs.append(h)
        torch.stack(outs).sum().backward()

    assert _count(fused) == _count(by_hand) == 3 * 2 * 5 * 3 * (24 * 4 + 24 * 6)


@pytest.mark.parametrize("method", ["stn", "delta-stn"])
def test_stn_spends_at_most_its_budget_and_records_its_costs(tmp_path, method):
    task = QuadraticTask("tiny")
    spec = RunSpec("quadratic", method, seed=0, budget="100ep", out=tmp_path)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed" and summary["stop_reason"] == "budget"
    assert 100 - 18 * 8 / task.train_size <= summary["epochs"] <= 100  # less than one minibatch's cost left
    assert summary["raw_epochs"] == summary["examples"] / task.train_size
    assert summary["raw_epochs"] < summary["epochs"] / 8  # a pass costs 9 to 12 fixed-network examples here
    meta = json.loads((spec.path / "metadata.json").read_text())
    assert meta["cost_factors"]["factors"]["fixed"] == 1.0 and meta["cost_factors"]["unit"]
    assert set(meta["cost_factors"]["flops_per_example"]) >= {"fixed", "stn_train", "delta_linearized_train"}
    events = read_events(spec.path)
    assert all(e["raw_epochs"] == e["examples"] / task.train_size for e in events)
    reports = [e for e in events if e["event"] == "report"]
    assert reports and all(isinstance(e["train_loss"], float) for e in reports)


@pytest.fixture(scope="module")
def cifar_schedule(tmp_path_factory):
    """A finished STN run on CIFAR-10 tiny, whose schedule the replay method follows."""
    spec = RunSpec("cifar", "stn", seed=0, budget="8ep", out=tmp_path_factory.mktemp("source"), threads=1)
    execute(spec, progress=False)
    return str(spec.path)


@pytest.fixture
def passes():
    """The examples of every forward pass through a CIFAR network that builds a graph for a backward pass."""
    cost_factors(CifarTask("tiny"))  # measured (outside any run's budget) before the counting starts
    seen: list[int] = []

    def count(module, args, output):
        if isinstance(module, GatedNet) and torch.is_grad_enabled():
            seen.append(int(args[0].shape[0]))

    handle = register_module_forward_hook(count)
    yield seen
    handle.remove()


CASES = [(name, {}) for name in IN_PROCESS] + [("delta-stn", {"linearize": True})]


@pytest.mark.parametrize(("method", "args"), CASES, ids=[f"{m}{'-linearized' if a else ''}" for m, a in CASES])
def test_every_pass_through_the_network_is_charged(method, args, tmp_path, passes, cifar_schedule):
    """Black-box trials, STN's weight and λ steps, Delta-STN's two passes: the raw examples charged are the examples
    that went through the network with a backward pass to follow (training or λ steps; not evaluation)."""
    args = {"schedule": cifar_schedule, **args} if method == "replay" else args
    budget = 8 if args else 4  # the linearised variant's epoch costs about 6 fixed-network epochs
    spec = RunSpec("cifar", method, seed=0, budget=f"{budget}ep", out=tmp_path, method_args=args, threads=1)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed", summary.get("error")
    assert passes and sum(passes) == summary["examples"]
    assert summary["epochs"] <= budget
    reports = [e for e in read_events(spec.path) if e["event"] == "report"]
    assert all(isinstance(e["train_loss"], float) for e in reports)

"""The generic door can express the quadratic task: at a fixed λ, and along a training, it gives the hand-written
door's losses (STN, Delta-STN, and Delta-STN linearised)."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.regularisers import L2
from hpobench_stn.space import Float
from hpobench_stn.stn.settings import DeltaStnSettings, StnSettings
from hpobench_stn.stn.trainer import StnTrainer, cycle_batches
from hpobench_stn.task import Preset
from hpobench_stn.torch_task import Splits, TorchTask
from tasks.quadratic.task import PENALTY_HIGH, PENALTY_INIT, PENALTY_LOW, QuadraticTask

pytestmark = pytest.mark.usefixtures("one_thread")

D = 10  # features of the tiny and cpu presets


class WeightVector(nn.Module):
    """The linear model whose weight j is the output of a 1→1 linear map of a constant 1: under the generic door
    each becomes an STN layer, which is the hand-written door's ``StnLinear(1, d)`` split by rows."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.ModuleList(nn.Linear(1, 1, bias=False, dtype=torch.float64) for _ in range(D))

    def forward(self, x: Tensor) -> Tensor:
        ones = x.new_ones(x.shape[0], 1)
        return (x * torch.cat([m(ones) for m in self.w], dim=1)).sum(1)


class GenericQuadratic(TorchTask):
    """The quadratic task written against the generic door: one L2 declaration per weight."""

    name = "quadratic-generic"
    description = "the quadratic task through the generic door"
    presets: ClassVar[dict[str, Preset]] = QuadraticTask.presets
    hyperparameters = tuple(
        L2(Float(f"penalty_{j}", PENALTY_LOW, PENALTY_HIGH, log=True, init=PENALTY_INIT), params=f"w.{j}.weight")
        for j in range(D)
    )

    def build_model(self) -> nn.Module:
        return WeightVector()

    def load_data(self) -> Splits:
        d = QuadraticTask(self.preset.name).data
        return Splits((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test))

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return 0.5 * (outputs - targets).pow(2).mean()


def _pair(preset: str, seed: int = 0):
    hand = QuadraticTask(preset).stn_problem(seed)
    generic = GenericQuadratic(preset).stn_problem(seed)
    assert generic.space.names == hand.space.names
    layer = hand.model.weights
    with torch.no_grad():  # the same network: row j of the hand-written layer is the generic door's layer j
        for j, twin in enumerate(generic.model.w):
            twin.weight_e.copy_(layer.weight_e[j : j + 1])
            twin.weight_h.copy_(layer.weight_h[j : j + 1])
            twin.gate.weight.copy_(layer.gate.weight[j : j + 1])
    return hand, generic


def test_same_losses_at_a_fixed_lambda():
    hand, generic = _pair("tiny")
    batch = next(iter(hand.train_batches(torch.Generator().manual_seed(0))))
    u = torch.randn(batch[0].shape[0], D, generator=torch.Generator().manual_seed(1))
    values = torch.exp(u)  # penalties of every size, one row per example
    for train in (True, False):
        expected = float(hand.loss(batch, u, values, train).detach())
        assert float(generic.loss(batch, u, values, train).detach()) == pytest.approx(expected, rel=1e-12)
    trainer = StnTrainer(hand, StnSettings().resolved(hand, 10), 0)
    for split in ("val", "test"):
        expected = hand.evaluate(split, trainer.centre_gates)["loss"]
        assert generic.evaluate(split, trainer.centre_gates)["loss"] == pytest.approx(expected, rel=1e-12)


def _trajectory(problem, settings: StnSettings, epochs: int) -> tuple[list[float], Tensor]:
    delta = isinstance(settings, DeltaStnSettings)
    trainer = StnTrainer(problem, settings.resolved(problem, epochs, delta=delta), seed=0)
    meter = BudgetMeter(Budget(epochs=1e9), problem.train_size)
    val = cycle_batches(problem, trainer.generator)
    losses = []
    for _ in range(epochs):
        for batch in problem.train_batches(trainer.generator):
            losses.append(float(trainer.train_step(batch, meter)))
            if trainer.steps > settings.warmup_steps and trainer.steps % settings.t_train == 0:
                losses.append(float(trainer.hyper_step(next(val), meter)))
    return losses, trainer.hyper.u.detach().clone()


@pytest.mark.parametrize(
    "settings",
    [StnSettings, DeltaStnSettings, lambda **kw: DeltaStnSettings(linearize=True, **kw)],
    ids=["stn", "delta-stn", "delta-stn-linearized"],
)
def test_same_training_as_the_hand_written_door(settings):
    settings = settings(warmup_steps=20, lr=1e-2, hyper_lr=3e-2, sigma_init=1.0, tune_sigma=True)
    hand, generic = _pair("tiny")
    hand_losses, hand_u = _trajectory(hand, settings, 4)
    generic_losses, generic_u = _trajectory(generic, settings, 4)
    assert len(generic_losses) == len(hand_losses) == 100 + 40
    assert generic_losses == pytest.approx(hand_losses, rel=1e-5)
    assert not torch.allclose(hand_u, torch.full((D,), hand_u[0].item()))  # λ moved, differently per feature
    torch.testing.assert_close(generic_u, hand_u, rtol=1e-5, atol=1e-6)

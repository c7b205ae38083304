"""Task conformance: every registered task (built-ins and plugins), at its ``tiny`` preset.

* A black-box trial charges exactly one epoch of examples per epoch, never trains past its epoch budget, and
  every example that goes through the network's forward in training mode was charged first (counted by a forward
  pre-hook on the trial's ``model``, along its batch dimension: 1 for a time-major network, i.e. one with a
  recurrent layer that is not ``batch_first``, as PyTorch's own convention; 0 otherwise).
* The signature is the same for two builds of the task.
* A task with a white-box door trains one STN epoch with finite λ-gradients, non-zero for every hyperparameter,
  and every hyperparameter acts on the training loss: the loss of one batch at the same gates and the same random
  draws differs between the hyperparameter's lowest and highest value. The λ-gradient alone cannot catch a
  hyperparameter that acts on nothing, since every STN layer's gates see every hyperparameter; the second check
  does (``test_the_check_fails_for_a_hyperparameter_without_effect``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from generic_tasks import DigitRows
from torch import nn

from examples.digits import DigitsTask
from hpobench_stn import registry
from hpobench_stn.budget import Budget, BudgetExhausted, BudgetMeter
from hpobench_stn.errors import UserError
from hpobench_stn.regularisers import LossTerm
from hpobench_stn.space import Float
from hpobench_stn.stn.lstm import StnLSTM
from hpobench_stn.stn.settings import StnSettings
from hpobench_stn.stn.trainer import StnTrainer, cycle_batches

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = registry.task_names()


def _task(name: str) -> Any:
    return registry.get_task(name)("tiny")


def _batch_dim(model: nn.Module) -> int:
    recurrent = (nn.RNNBase, StnLSTM)
    return int(any(isinstance(m, recurrent) and not getattr(m, "batch_first", False) for m in model.modules()))


@contextmanager
def _counting_forward(model: nn.Module) -> Iterator[list[int]]:
    """Counts the examples of every training-mode forward pass of ``model``."""
    dim, counted = _batch_dim(model), [0]

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module.training:
            x = args[0] if args else next(iter(kwargs.values()))
            counted[0] += int(x.shape[dim])

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counted
    finally:
        handle.remove()


# --- the black-box door ------------------------------------------------------------------------------------------
def check_trial_budget(task: Any) -> None:
    """One epoch charges ``train_size`` examples; the next is refused at the budget of 1.5 epochs."""
    trial = task.make_trial(task.space.default(), seed=0)
    meter = BudgetMeter(Budget(epochs=1.5), task.train_size)
    trial.train_epoch(meter)
    assert meter.examples == task.train_size, "one epoch must charge exactly train_size examples"
    with pytest.raises(BudgetExhausted):
        trial.train_epoch(meter)
    assert task.train_size < meter.examples <= 1.5 * task.train_size and trial.epoch == 1


def check_trial_charges_what_it_trains(task: Any) -> None:
    """Every example through the training-mode forward of the trial's model was charged before it went."""
    trial = task.make_trial(task.space.default(), seed=0)
    with _counting_forward(trial.model) as counted:
        meter = BudgetMeter(Budget(epochs=1.5), task.train_size)
        with pytest.raises(BudgetExhausted):
            for _ in range(2):
                trial.train_epoch(meter)
    assert counted[0] == meter.examples, f"{counted[0]} examples trained, {meter.examples} charged"


@pytest.mark.parametrize("name", TASKS)
def test_trial_respects_its_epoch_budget(name):
    check_trial_budget(_task(name))


@pytest.mark.parametrize("name", TASKS)
def test_trial_charges_every_example_it_trains(name):
    task = _task(name)
    if not isinstance(getattr(task.make_trial(task.space.default(), seed=0), "model", None), nn.Module):
        pytest.skip(f"{name}: its trial has no torch module to count through (plain tensor algebra)")
    check_trial_charges_what_it_trains(task)


@pytest.mark.parametrize("name", TASKS)
def test_signature_is_stable_across_builds(name):
    cls = registry.get_task(name)
    assert cls("tiny").signature() == cls("tiny").signature()


# --- the white-box door ------------------------------------------------------------------------------------------
@contextmanager
def _same_randomness(problem: Any) -> Iterator[Any]:
    """A context factory that starts every use from the same random state: the global one and every generator
    the problem holds."""
    generators = [g for g in vars(problem).values() if isinstance(g, torch.Generator)]
    saved = [g.get_state() for g in generators]

    @contextmanager
    def fresh() -> Iterator[None]:
        for g, state in zip(generators, saved, strict=True):
            g.set_state(state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            yield

    yield fresh


def check_stn_door(task: Any) -> None:
    """One STN epoch with finite, non-zero λ-gradients; every hyperparameter acts on the training loss."""
    problem = task.stn_problem(0)
    names = problem.space.names
    settings = StnSettings(epochs=1, warmup_steps=0).resolved(problem, task.max_epochs)
    trainer = StnTrainer(problem, settings, seed=0)
    meter = BudgetMeter(Budget(epochs=1e9), task.train_size)
    val = cycle_batches(problem, trainer.generator)
    total = torch.zeros(len(names))
    for batch in problem.train_batches(trainer.generator):
        assert torch.isfinite(torch.tensor(trainer.train_step(batch, meter)))
        if trainer.steps % settings.t_train == 0:
            trainer.hyper_step(next(val), meter)
            grad = trainer.hyper.u.grad
            assert torch.isfinite(grad).all(), f"non-finite λ-gradient {dict(zip(names, grad.tolist(), strict=True))}"
            total += grad.abs()
    assert trainer.steps >= settings.t_train, "one epoch must reach a hyperparameter step"
    dead = [n for n, g in zip(names, total.tolist(), strict=True) if g == 0.0]
    assert not dead, f"no λ-gradient for {dead}"

    batch = next(iter(problem.train_batches(torch.Generator().manual_seed(1))))
    gates, values = trainer.centre_gates(problem.batch_size(batch))
    problem.model.train()
    without_effect = []
    with _same_randomness(problem) as fresh, torch.no_grad():
        for k, hp in enumerate(problem.space):
            losses = []
            for v in (hp.low, hp.high):
                at = values.clone()
                at[:, k] = float(hp.cast(v))
                with fresh():
                    losses.append(float(problem.loss(batch, gates, at, train=True)))
            assert all(torch.isfinite(torch.tensor(losses)))
            if losses[0] == losses[1]:
                without_effect.append(hp.name)
    assert not without_effect, f"declared hyperparameters without effect on the training loss: {without_effect}"


@pytest.mark.parametrize("name", TASKS)
def test_white_box_door_tunes_every_declared_hyperparameter(name):
    task = _task(name)
    try:
        task.stn_problem(0)
    except UserError as exc:
        pytest.skip(f"{name}: {exc}")
    check_stn_door(task)


class DigitsWithAnIdleHyperparameter(DigitsTask):
    """The digits task declaring a third hyperparameter whose loss term is always zero: it acts on nothing."""

    name = "digits-idle"
    hyperparameters = (
        *DigitsTask.hyperparameters,
        LossTerm(Float("idle", 0.0, 1.0, init=0.5), lambda outputs, targets: outputs.new_zeros(())),
    )


def test_the_check_fails_for_a_hyperparameter_without_effect():
    task = DigitsWithAnIdleHyperparameter("tiny")
    with pytest.raises(AssertionError, match=r"without effect on the training loss: \['idle'\]"):
        check_stn_door(task)


def test_a_task_using_every_kind_of_declaration_conforms():
    task = DigitRows("tiny")  # embedding, LSTM, linear; dropout, L2, augmentation, loss term
    check_trial_budget(task)
    check_trial_charges_what_it_trains(task)
    assert task.signature() == DigitRows("tiny").signature()
    check_stn_door(task)

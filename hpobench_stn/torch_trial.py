"""The black-box door for a torch network: what a :class:`~hpobench_stn.task.Trial` of any ``nn.Module`` trained
by a ``torch.optim`` optimizer does the same way, whatever the task.

* :class:`NonMonotonicRule`: the STN reference code's "non-monotonic" learning-rate rule, applied after every
  epoch's validation. The tasks' reference codes decay the learning rate differently (PTB divides it by 4, CIFAR
  multiplies it by 0.1: not the same floats), so a task subclasses it with its own :meth:`NonMonotonicRule.decayed`.
* :class:`TorchTrial`: keeps the best checkpoint's weights and evaluates them for the test metrics, applies the
  learning-rate rule, and checkpoints the model, the optimizer (its learning rate included), the trial's random
  generators, the rule's history, the best weights and the base's progress. A task supplies the training, the
  evaluation of the current weights, and which generators it draws from.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from hpobench_stn.budget import BudgetMeter
from hpobench_stn.space import Config
from hpobench_stn.task import EpochReport, Task, Trial


class NonMonotonicRule(ABC):
    """The STN reference code's learning-rate rule: decay when the validation loss stops improving.

    After each epoch's validation, with ``history`` the validation losses of the earlier epochs, the rule fires when
    ``len(history) > nonmono and val_loss > min(history[:-nonmono])``: when this epoch is worse than the best epoch
    older than the last ``nonmono`` ones. Firing replaces every parameter group's learning rate by
    :meth:`decayed` of it. ``history`` is the rule's whole state; ``history`` given: the list to record into.
    """

    def __init__(self, nonmono: int, history: list[float] | None = None) -> None:
        self.nonmono = nonmono
        self.history: list[float] = [] if history is None else history

    @abstractmethod
    def decayed(self, lr: float) -> float:
        """The learning rate after the rule fires at ``lr``."""

    def step(self, optimizer: torch.optim.Optimizer, val_loss: float) -> bool:
        """Record this epoch's validation loss; decay the learning rate when the rule fires (returns whether)."""
        fire = len(self.history) > self.nonmono and val_loss > min(self.history[: -self.nonmono])
        if fire:
            for group in optimizer.param_groups:
                group["lr"] = self.decayed(group["lr"])
        self.history.append(val_loss)
        return fire


class TorchTrial(Trial):
    """A trial of a torch network: the best checkpoint's weights, the learning-rate rule and checkpoint/restore.

    Subclasses set ``model``, ``optimizer`` and ``decay`` (the learning-rate rule) in ``__init__`` after calling
    this one, and implement :meth:`generators`, :meth:`_train_one_epoch` and :meth:`_evaluate_model`.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    decay: NonMonotonicRule

    def __init__(self, task: Task, config: Config, seed: int) -> None:
        super().__init__(task, config, seed)
        self.best_state: dict[str, Tensor] | None = None

    @property
    @abstractmethod
    def generators(self) -> dict[str, torch.Generator]:
        """The random generators the training draws from, by their key in :meth:`state_dict`."""

    @abstractmethod
    def _evaluate_model(self, split: str) -> dict[str, float]:
        """Metrics of the model's current weights on ``split`` ("val" or "test"), with ``loss`` among them."""

    def train_epoch(self, meter: BudgetMeter) -> EpochReport:
        """One epoch and its validation (see :meth:`Trial.train_epoch`), then the learning-rate rule."""
        report = super().train_epoch(meter)
        self.decay.step(self.optimizer, report.val_loss)
        return report

    def _evaluate(self, split: str, best: bool = False) -> dict[str, float]:
        if not best or self.best_state is None:
            return self._evaluate_model(split)
        current = copy.deepcopy(self.model.state_dict())
        self.model.load_state_dict(self.best_state)
        try:
            return self._evaluate_model(split)
        finally:
            self.model.load_state_dict(current)

    def _remember_best(self) -> None:
        self.best_state = copy.deepcopy(self.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer (learning rate included), generators, rule history, best checkpoint, epoch, config."""
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            **{name: generator.get_state() for name, generator in self.generators.items()},
            "history": list(self.decay.history),
            "best_state": copy.deepcopy(self.best_state),
            **self._progress_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, generator in self.generators.items():
            generator.set_state(state[name])
        self.decay.history = list(state["history"])
        self.best_state = copy.deepcopy(state["best_state"])
        self._load_progress_state(state)

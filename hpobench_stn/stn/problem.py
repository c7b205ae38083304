"""The white-box door: what a task exposes so that STN can train its model with per-example hyperparameters.

A task's :meth:`~hpobench_stn.task.Task.stn_problem` returns an :class:`StnProblem`. The model is the task's own
network built with STN layers; the problem feeds it a batch together with two (B, n) tensors:

* ``gates``: what the STN layers' gates see (unconstrained λ̃ for STN, the centred λ̃ − λ for Delta-STN);
* ``values``: the hyperparameter values the regularisers use (dropout rates, augmentation strengths, penalties;
  integers already floored), one row per example.

``loss(batch, gates, values, train=True)`` applies the regularisers at ``values`` (dropout, augmentation,
penalties); with ``train=False`` it is the plain loss (validation: no dropout, no augmentation). The trainer puts
the model in training or evaluation mode around it.

Delta-STN's linearised variant needs the loss split in two, which a problem may offer: ``outputs(batch, gates,
values, train)``, the network's output (a tensor or a tuple of tensors, so that ``torch.func.jvp`` can run it), and
``criterion(output, batch, values, train)``, such that ``loss`` is ``criterion(outputs(...), ...)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hpobench_stn.space import SearchSpace

GateFn = Callable[[int], tuple[Tensor, Tensor]]


class StnProblem(ABC):
    """A task's model with STN layers, its data, and its losses (see the module docstring)."""

    model: nn.Module
    space: SearchSpace
    train_size: int
    #: Trainer settings this task prefers (learning rates, warm-up, epochs); the user's --method-arg wins.
    defaults: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def train_batches(self, generator: torch.Generator) -> Iterator[Any]:
        """One epoch of training minibatches in a seeded order."""

    @abstractmethod
    def val_batches(self, generator: torch.Generator) -> Iterator[Any]:
        """One pass of validation minibatches (the trainer cycles it for hyperparameter steps)."""

    @abstractmethod
    def batch_size(self, batch: Any) -> int:
        """Number of examples in a batch (what the budget meter is charged)."""

    @abstractmethod
    def loss(self, batch: Any, gates: Tensor, values: Tensor, train: bool) -> Tensor:
        """Mean loss over the batch; ``train`` applies the regularisers at ``values``."""

    @abstractmethod
    def evaluate(self, split: str, gates: GateFn) -> dict[str, float]:
        """Metrics (``loss`` among them) over a whole split at unperturbed λ; ``gates(B)`` gives (gates, values)."""

    def weight_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The optimizer of the network weights (default: Adam)."""
        return torch.optim.Adam(params, lr=lr)

    def clip_gradients(self, params: list[nn.Parameter]) -> None:  # noqa: B027 - optional hook
        """Clip weight gradients before a step (PTB clips at 0.25; default: nothing)."""

    def on_epoch_end(self, optimizer: torch.optim.Optimizer, epoch: int, val_loss: float) -> None:  # noqa: B027
        """Learning-rate rule after each epoch's validation (default: constant)."""

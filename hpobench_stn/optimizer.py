"""The method contracts: ask/tell optimizers that the harness drives, and self-driving methods (STN, Ray Tune).

An :class:`Optimizer` proposes configurations (``ask``), hears every per-epoch report (``on_report``, where a
multi-fidelity method may stop a trial) and receives the outcome (``tell``). The harness owns the loop and the
budget meter; an optimizer never sees the meter. A :class:`Method` that is not an ask/tell optimizer runs the whole
study itself through :meth:`Method.run` with a :class:`~hpobench_stn.harness.RunContext` (it must still charge the
context's meter for every example it trains on).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hpobench_stn.space import Config, SearchSpace

if TYPE_CHECKING:
    from hpobench_stn.harness import RunContext


class SearchExhausted(Exception):
    """Raised by ``Optimizer.ask`` when it has nothing left to propose (a finished grid); the run ends early."""


@dataclass(frozen=True)
class Outcome:
    """What ``tell`` receives: the trial's best validation loss (``None`` unless ``status == "ok"``)."""

    value: float | None
    status: str  # "ok", "diverged", "failed", "cut"
    epochs: int


class Method(ABC):
    """Anything that can be run as the ``--method`` of a run. Settings are keyword arguments of ``__init__``."""

    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int) -> None:
        self.space = space
        self.seed = seed
        self.max_epochs = max_epochs

    def settings(self) -> dict[str, Any]:
        """The method's settings as stored with the run (override to list them)."""
        return {}

    @abstractmethod
    def run(self, ctx: RunContext) -> None:
        """Spend the run's budget; record every report through ``ctx``."""


class Optimizer(Method):
    """An ask/tell optimizer; the harness runs the loop (:func:`hpobench_stn.harness.ask_tell_loop`)."""

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int) -> None:
        super().__init__(space, seed, max_epochs)
        self.rng = np.random.default_rng(seed)

    @abstractmethod
    def ask(self, trial_id: int) -> Config:
        """Propose the configuration for trial ``trial_id`` (ids count up from 0)."""

    def on_report(self, trial_id: int, epoch: int, val_loss: float) -> bool:
        """Hear a per-epoch report; return ``False`` to stop the trial there. Default: train to the end."""
        return True

    def tell(self, trial_id: int, config: Config, outcome: Outcome) -> None:
        """Receive a finished trial's outcome (default: ignore)."""

    def run(self, ctx: RunContext) -> None:
        """Run the harness's ask/tell loop with this optimizer."""
        from hpobench_stn.harness import ask_tell_loop

        ask_tell_loop(self, ctx)

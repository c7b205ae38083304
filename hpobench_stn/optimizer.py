"""The method contracts: ask/tell optimizers that the harness drives, and self-driving methods (STN, Ray Tune).

An :class:`Optimizer` proposes configurations (``ask``), hears every per-epoch report (``on_report``, where a
multi-fidelity method may stop a trial) and receives the outcome (``tell``). The harness owns the loop and the
budget meter; an optimizer never sees the meter. A :class:`Method` that is not an ask/tell optimizer runs the whole
study itself through :meth:`Method.run` with a :class:`~hpobench_stn.run_context.RunContext` (it must still charge the
context's meter for every example it trains on, which :func:`~hpobench_stn.trial_runner.run_trial` does).

A method's settings are declared once, as a frozen dataclass (:class:`~hpobench_stn.settings.MethodSettings`) named
by the class attribute ``Settings``; ``Method(space, seed, max_epochs, **settings)`` checks them and keeps them as
``self.options``.

A method's own random streams come from :meth:`Method.stream_seed`, i.e. from the run's seed and the method's name
(:mod:`hpobench_stn.seeds`): two methods at one seed never share a random start; the trials' seeds are common to all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hpobench_stn.seeds import method_seed
from hpobench_stn.settings import MethodSettings
from hpobench_stn.space import Config, SearchSpace
from hpobench_stn.status import TrialStatus

if TYPE_CHECKING:
    from hpobench_stn.run_context import RunContext
    from hpobench_stn.task import Task


#: Who proposed a trial of a model-based optimizer: its random start (the initial configuration included) or its model.
START, MODEL = "start", "model"


class SearchExhausted(Exception):
    """Raised by ``Optimizer.ask`` when it has nothing left to propose (a finished grid); the run ends early."""


@dataclass(frozen=True)
class Outcome:
    """What ``tell`` receives: the trial's best validation loss (``None`` unless the status has a value: completed
    or stopped early), how it ended, and the epochs it trained."""

    value: float | None
    status: TrialStatus
    epochs: int

    @property
    def ok(self) -> bool:
        """Whether ``value`` is a result to learn from."""
        return self.value is not None and TrialStatus(self.status).has_value


class Method(ABC):
    """Anything that can be run as the ``--method`` of a run; its settings are the dataclass ``Settings``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Settings: ClassVar[type[MethodSettings]] = MethodSettings

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, **settings: Any) -> None:
        self.space = space
        self.seed = seed
        self.max_epochs = max_epochs
        self.options = self.Settings.from_args(settings, getattr(self, "name", type(self).__name__))

    def settings(self) -> dict[str, Any]:
        """The method's settings as stored with the run: every field of its ``Settings``."""
        return self.options.to_dict()

    def stream_seed(self, *stream: int) -> int:
        """The seed of one of this method's own random streams: from the run's seed and the method's name (and
        ``stream``), so that another method at the same seed draws differently (see :mod:`hpobench_stn.seeds`)."""
        return method_seed(self.seed, getattr(self, "name", type(self).__name__), *stream)

    def summary_fields(self) -> dict[str, Any]:
        """What the method adds to the run's ``summary.json`` (default: nothing)."""
        return {}

    def check_task(self, task: Task) -> None:  # noqa: B027 - optional hook
        """Refuse (with a ``UserError``) a task this method cannot run on, before the run's folder exists."""

    @abstractmethod
    def run(self, ctx: RunContext) -> None:
        """Spend the run's budget; record every report through ``ctx``."""


class Optimizer(Method):
    """An ask/tell optimizer; the harness runs the loop (:func:`hpobench_stn.ask_tell.ask_tell_loop`).

    A model-based optimizer (``has_model``) notes in ``origins`` who proposed each trial it asks for: its random start
    (``"start"``, the initial configuration included) or its model (``"model"``); the run's summary counts them as
    ``proposals``, so a table can say when a sampler never left its random start.
    """

    has_model: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, **settings: Any) -> None:
        super().__init__(space, seed, max_epochs, **settings)
        self.rng = np.random.default_rng(self.stream_seed())
        self.origins: dict[int, str] = {}

    @abstractmethod
    def ask(self, trial_id: int) -> Config:
        """Propose the configuration for trial ``trial_id`` (ids count up from 0)."""

    def on_report(self, trial_id: int, epoch: int, val_loss: float) -> bool:
        """Hear a per-epoch report; return ``False`` to stop the trial there. Default: train to the end."""
        return True

    def tell(self, trial_id: int, config: Config, outcome: Outcome) -> None:
        """Receive a finished trial's outcome (default: ignore)."""

    def proposals(self) -> dict[str, int] | None:
        """How many of the trials asked for the random start and the model proposed (None without a model)."""
        if not self.has_model:
            return None
        kinds = list(self.origins.values())
        return {kind: kinds.count(kind) for kind in (START, MODEL)}

    def summary_fields(self) -> dict[str, Any]:
        """``proposals`` (see :meth:`proposals`) for a model-based optimizer."""
        counts = self.proposals()
        return {} if counts is None else {"proposals": counts}

    def run(self, ctx: RunContext) -> None:
        """Run the harness's ask/tell loop with this optimizer."""
        from hpobench_stn.ask_tell import ask_tell_loop

        ask_tell_loop(self, ctx)

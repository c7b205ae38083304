"""The Task contract: a problem with a search space, data splits, presets and two doors.

* The black-box door: :meth:`Task.make_trial` builds a :class:`Trial`, one configuration trained epoch by epoch,
  reporting validation metrics after each epoch, with checkpoint/restore (PBT needs it). :meth:`Task.train` is the
  HPOBench-style contract on top of it: configuration + epochs + seed in, metrics + cost out, with a callback
  after every epoch that can ask to stop.
* The white-box door for STN: :meth:`Task.stn_problem` returns the same model built with STN layers (see
  ``hpobench_stn.stn``). Tasks without one say so.

The test split is only touched through :meth:`Trial.test_metrics`, which the harness calls for reporting.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, SupportsFloat

from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.errors import UserError
from hpobench_stn.space import Config, SearchSpace
from hpobench_stn.status import TrialStatus


@dataclass
class EpochReport:
    """What a trial reports after each epoch: validation loss (the objective), any other metrics, and the epoch's
    mean training loss when the trial keeps it."""

    epoch: int
    val_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    train_loss: float | None = None

    @property
    def diverged(self) -> bool:
        """True when the objective is NaN or infinite."""
        return not math.isfinite(self.val_loss)


@dataclass
class TrialResult:
    """The outcome of a black-box training: best validation loss, its metrics, test metrics and cost."""

    config: Config
    status: TrialStatus
    epochs_trained: int
    best_val_loss: float
    best_epoch: int
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    cost_epochs: float
    cost_seconds: float
    reports: list[EpochReport] = field(default_factory=list)


class Trial(ABC):
    """One configuration being trained through the black-box door, one epoch at a time.

    Subclasses implement :meth:`_train_one_epoch`, :meth:`_evaluate`, :meth:`_remember_best`, :meth:`state_dict`
    and :meth:`load_state_dict`; this base keeps the epoch counter and the best checkpoint's validation metrics,
    and checkpoints them for the subclass through :meth:`_progress_state` and :meth:`_load_progress_state`.
    :class:`hpobench_stn.torch_trial.TorchTrial` does all but the training and the evaluation for a torch network.
    """

    def __init__(self, task: Task, config: Config, seed: int) -> None:
        self.task = task
        self.config = dict(config)
        self.seed = seed
        self.epoch = 0
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.best_metrics: dict[str, float] = {}

    def train_epoch(self, meter: BudgetMeter) -> EpochReport:
        """Train one epoch (charging ``meter`` per minibatch), then validate; keep the best checkpoint."""
        train_loss = self._train_one_epoch(meter)
        self.epoch += 1
        metrics = self._evaluate("val")  # validation costs wall-clock, as it does STN's (no epochs)
        train_loss = None if train_loss is None else float(train_loss)  # the epoch's one read of it
        report = EpochReport(self.epoch, float(metrics.pop("loss")), metrics, train_loss=train_loss)
        if not report.diverged and report.val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = report.val_loss, self.epoch
            self.best_metrics = dict(metrics)
            self._remember_best()
        return report

    def set_config(self, config: Config) -> None:
        """Continue training with new hyperparameters (PBT's explore step)."""
        self.config = dict(self.task.space.validate(config))

    def test_metrics(self) -> dict[str, float]:
        """Test-split metrics of the best checkpoint (for reporting only; never used for a decision)."""
        return {k: float(v) for k, v in self._evaluate("test", best=True).items()}

    @abstractmethod
    def _train_one_epoch(self, meter: BudgetMeter) -> SupportsFloat | None:
        """One pass over the training data; call ``meter.charge(batch_size)`` before every minibatch.

        May return the epoch's mean training loss (a device tensor: it is read once, after the epoch).
        """

    @abstractmethod
    def _evaluate(self, split: str, best: bool = False) -> dict[str, float]:
        """Metrics on ``split`` ("val" or "test"), with ``loss`` among them; ``best``: at the best checkpoint."""

    @abstractmethod
    def _remember_best(self) -> None:
        """Keep the current weights as the best checkpoint."""

    def _progress_state(self) -> dict[str, Any]:
        """The part of :meth:`state_dict` this base keeps: epoch, configuration, the best checkpoint's results."""
        return {
            "epoch": self.epoch,
            "config": dict(self.config),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "best_metrics": dict(self.best_metrics),
        }

    def _load_progress_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_progress_state` saved."""
        self.epoch, self.config = state["epoch"], dict(state["config"])
        self.best_val_loss, self.best_epoch = state["best_val_loss"], state["best_epoch"]
        self.best_metrics = dict(state["best_metrics"])

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (weights, optimizer, RNG, epoch, best checkpoint)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""


@dataclass(frozen=True)
class Preset:
    """A named size of a task: ``tiny`` (tests, seconds), ``cpu`` (this class of machine), ``paper``."""

    name: str
    description: str
    max_epochs: int
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_defaults(
        cls, name: str, description: str, max_epochs: int, defaults: Mapping[str, Any], settings: Mapping[str, Any]
    ) -> Preset:
        """A preset whose settings are a task's ``defaults`` overridden by ``settings``; a setting that is not among
        the defaults raises ``ValueError`` (a misspelt one would otherwise be silently ignored)."""
        unknown = set(settings) - set(defaults)
        if unknown:
            raise ValueError(f"unknown preset settings {sorted(unknown)}")
        return cls(name, description, max_epochs, {**defaults, **settings})

    def with_settings(self, settings: Mapping[str, Any], task: str = "task") -> Preset:
        """This preset with some settings replaced (``--task-arg``): only known ones, each of its default's type
        (a ``UserError`` naming the setting otherwise)."""
        if not settings:
            return self
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            valid = ", ".join(f"{k} (default {v!r})" for k, v in self.settings.items())
            raise UserError(f"task {task!r} has no setting {', '.join(map(repr, unknown))}; its settings: {valid}")
        merged = dict(self.settings)
        for key, value in settings.items():
            default = self.settings[key]
            if default is not None and not isinstance(value, type(default)):
                if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                else:
                    raise UserError(
                        f"task {task!r}: setting {key}={value!r} is not allowed; {key} takes a "
                        f"{type(default).__name__} (default {default!r})"
                    )
            merged[key] = value
        return replace(self, settings=merged)


ReportCallback = Callable[[EpochReport], bool | None]


class Task(ABC):
    """A problem: search space, metric, data splits, presets, and the black-box and white-box doors."""

    name: ClassVar[str]
    description: ClassVar[str]
    presets: ClassVar[dict[str, Preset]]
    metric: ClassVar[str] = "val_loss"

    def __init__(
        self,
        preset: str = "tiny",
        *,
        data_dir: str | Path | None = None,
        device: str = "cpu",
        download: bool = False,
        trial_epochs: int | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if preset not in self.presets:
            raise UserError(
                f"unknown preset {preset!r} for task {self.name!r}; valid presets: {', '.join(self.presets)}"
            )
        self.preset = self.presets[preset].with_settings(settings or {}, self.name)
        if trial_epochs is not None and (isinstance(trial_epochs, bool) or not int(trial_epochs) == trial_epochs >= 1):
            raise UserError(f"--trial-epochs {trial_epochs} is not allowed: a trial is a whole number of epochs >= 1")
        self.trial_epochs = None if trial_epochs is None else int(trial_epochs)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.device = device
        self.download = download

    @property
    @abstractmethod
    def space(self) -> SearchSpace:
        """The search space every optimizer (and STN) is derived from."""

    @property
    @abstractmethod
    def train_size(self) -> int:
        """Number of training examples: one epoch-equivalent."""

    @property
    def max_epochs(self) -> int:
        """Length of one black-box trial: the run's ``--trial-epochs`` if given, else the preset's."""
        return self.preset.max_epochs if self.trial_epochs is None else self.trial_epochs

    @abstractmethod
    def make_trial(self, config: Config, seed: int) -> Trial:
        """A fresh model at ``config`` (validated), seeded, ready to train epoch by epoch."""

    @property
    def has_white_box_door(self) -> bool:
        """Whether STN methods can run on this task (it overrides :meth:`stn_problem`)."""
        return type(self).stn_problem is not Task.stn_problem

    def stn_problem(self, seed: int) -> Any:
        """The white-box door for STN; tasks that have one override this."""
        raise UserError(
            f"task {self.name!r} has no white-box door, so STN methods cannot run on it; to add one, derive the task "
            'from hpobench_stn.torch_task.TorchTask and declare how each hyperparameter acts (README, "Adding a '
            'task"), or return an hpobench_stn.stn.problem.StnProblem from stn_problem()'
        )

    def probe_configs(self) -> dict[str, Config]:
        """The configurations :meth:`signature` probes: ``default``, ``low`` (every bound low), ``high`` (high)."""
        return {
            "default": self.space.default(),
            "low": self.space.from_unit([0.0] * len(self.space)),
            "high": self.space.from_unit([1.0] * len(self.space)),
        }

    def signature(self) -> dict[str, float]:
        """Losses at fixed probe configurations, to catch drift in data or preprocessing (see tests)."""
        out: dict[str, float] = {}
        for probe, config in self.probe_configs().items():
            trial = self.make_trial(config, seed=0)
            meter = BudgetMeter(Budget(epochs=1), self.train_size)
            out[probe] = trial.train_epoch(meter).val_loss
        return out

    def summary_extras(self, config: Config, hparams: dict[str, float] | None = None) -> dict[str, Any]:
        """Extra summary fields for the incumbent (the quadratic task adds its exact regret)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the task instance (stored in run metadata)."""
        return {
            "name": self.name,
            "preset": self.preset.name,
            "max_epochs": self.max_epochs,
            "settings": dict(self.preset.settings),
            "train_size": self.train_size,
            "space": self.space.describe(),
        }

    def train(
        self,
        config: Mapping[str, Any],
        epochs: int | None = None,
        seed: int = 0,
        callback: ReportCallback | None = None,
        meter: BudgetMeter | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> TrialResult:
        """Train at a fixed configuration for up to ``epochs`` (default: the preset's), reporting each epoch: the
        HPOBench-style contract (configuration + epochs + seed in, metrics + cost out) on the one trial runner.

        ``callback(report)`` returning ``False`` stops the trial early; an exception inside the training is raised.
        ``checkpoint`` (from :meth:`Trial.state_dict`) resumes a previous training. A NaN/inf validation loss ends the
        trial as diverged. Returns the best checkpoint's validation and test metrics and the cost.
        """
        from hpobench_stn.trial_runner import train_epochs

        config = self.space.validate(config)
        epochs = self.max_epochs if epochs is None else epochs
        meter = meter or BudgetMeter(Budget(epochs=float(epochs) + 1e-9), self.train_size)
        start_seconds, start_examples = meter.elapsed, meter.examples
        trial = self.make_trial(config, seed)
        if checkpoint is not None:
            trial.load_state_dict(checkpoint)

        def hear(report: EpochReport) -> bool | None:
            return None if report.diverged or callback is None else callback(report)

        end = train_epochs(trial, meter, epochs, hear)
        if end.exception is not None:
            raise end.exception
        reports, status = end.reports, end.status
        with meter.paused():
            test = trial.test_metrics() if trial.best_epoch > 0 else {}
        return TrialResult(
            config=config,
            status=status,
            epochs_trained=trial.epoch,
            best_val_loss=trial.best_val_loss,
            best_epoch=trial.best_epoch,
            val_metrics=dict(trial.best_metrics),
            test_metrics=test,
            cost_epochs=(meter.examples - start_examples) / self.train_size,
            cost_seconds=meter.elapsed - start_seconds,
            reports=reports,
        )

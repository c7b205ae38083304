"""The one trial runner: a configuration trained epoch by epoch through a task's black-box door.

:func:`train_epochs` is the epoch loop every black-box trial runs, wherever it runs (the ask/tell loop, schedule
replay, a Ray Tune worker, :meth:`Task.train <hpobench_stn.task.Task.train>`): train an epoch under the meter,
report, ask whether to go on, and map every ending to one :class:`~hpobench_stn.status.TrialStatus`.
:func:`run_trial` wraps it for a run: it records the trial's start, reports and end in the run's context, keeps the
incumbent, and takes the test metrics at the best checkpoint with the clock paused.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpobench_stn.budget import BudgetExhausted
from hpobench_stn.signals import INTERRUPTIONS, signal_name
from hpobench_stn.space import Config
from hpobench_stn.status import TrialStatus

if TYPE_CHECKING:
    from hpobench_stn.run_context import RunContext
    from hpobench_stn.task import EpochReport, Trial

#: Hears each epoch's report; returning ``False`` stops the trial there.
ReportHook = Callable[["EpochReport"], "bool | None"]
#: Runs before each epoch (a replay sets the epoch's configuration; a Ray worker takes its grant).
EpochHook = Callable[["Trial"], None]


def short_error(exc: BaseException) -> str:
    """``Type: message at file:line`` of the innermost frame: what an event log records of an exception."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def trial_seed(run_seed: int, trial_id: int) -> int:
    """The training seed of one trial, derived from the run's seed so that every trial differs, and the same for
    every method's trial ``trial_id`` (common random numbers; see :mod:`hpobench_stn.seeds`)."""
    return int(np.random.SeedSequence([run_seed, trial_id]).generate_state(1)[0])


@dataclass
class TrialEnd:
    """How :func:`train_epochs` ended: the status, the error of a failed trial (and its exception), every report."""

    status: TrialStatus
    error: str | None = None
    reports: list[EpochReport] = field(default_factory=list)
    exception: Exception | None = field(default=None, repr=False)


def train_epochs(
    trial: Trial,
    meter: Any,
    epochs: int,
    on_report: ReportHook | None = None,
    before_epoch: EpochHook | None = None,
) -> TrialEnd:
    """Train ``trial`` until it has ``epochs`` epochs, charging ``meter``; ``on_report`` hears every report.

    Ends ``completed`` (all epochs), ``stopped`` (``on_report`` returned ``False``), ``diverged`` (a NaN/inf
    validation loss; reported, then ended), ``cut`` (the meter refused a minibatch, or ``before_epoch`` raised
    :class:`~hpobench_stn.budget.BudgetExhausted`) or ``failed`` (any other exception).
    """
    end = TrialEnd(TrialStatus.COMPLETED)
    try:
        while trial.epoch < epochs:
            if before_epoch is not None:
                before_epoch(trial)
            report = trial.train_epoch(meter)
            end.reports.append(report)
            verdict = on_report(report) if on_report is not None else None
            if report.diverged:
                end.status = TrialStatus.DIVERGED
                break
            if verdict is False:
                end.status = TrialStatus.STOPPED
                break
    except BudgetExhausted:
        end.status = TrialStatus.CUT
    except Exception as exc:
        end.status, end.error, end.exception = TrialStatus.FAILED, short_error(exc), exc
    return end


@dataclass(frozen=True)
class TrialOutcome:
    """A finished trial of a run: how it ended, its best validation loss (``None`` before any good epoch), the
    epochs it trained, and its error if it failed."""

    status: TrialStatus
    best_val_loss: float | None
    epochs: int
    error: str | None = None

    @property
    def value(self) -> float | None:
        """The result an optimizer may learn from: the best validation loss of a completed or stopped trial."""
        return self.best_val_loss if self.status.has_value else None


def run_trial(
    ctx: RunContext,
    trial_id: int,
    config: Config,
    seed: int,
    epochs: int,
    *,
    on_report: ReportHook | None = None,
    before_epoch: EpochHook | None = None,
    schedule: bool = False,
) -> TrialOutcome:
    """One trial of the run in ``ctx``: built at ``config`` with ``seed``, trained for up to ``epochs``.

    Every report is recorded (``schedule``: with the configuration that trained the epoch as ``hparams``), the
    incumbent is kept, and the test metrics of the best checkpoint are taken, clock paused, when this trial holds the
    incumbent. ``on_report`` is the method's say after each non-diverged report (``False`` stops the trial).
    """
    ctx.trial_start(trial_id, config, seed)
    try:
        return _train_and_report(ctx, trial_id, config, seed, epochs, on_report, before_epoch, schedule)
    except INTERRUPTIONS as exc:  # the run stops here; the trial is cut and will be trained again on resume
        if trial_id not in ctx.trial_status:  # not when the signal landed while its end was being recorded
            ctx.trial_end(trial_id, TrialStatus.CUT, None, f"interrupted by {signal_name(exc)}")
        raise


def _train_and_report(
    ctx: RunContext,
    trial_id: int,
    config: Config,
    seed: int,
    epochs: int,
    on_report: ReportHook | None,
    before_epoch: EpochHook | None,
    schedule: bool,
) -> TrialOutcome:
    try:
        trial = ctx.task.make_trial(config, seed)
    except Exception as exc:
        error = short_error(exc)
        ctx.trial_end(trial_id, TrialStatus.FAILED, None, error)
        return TrialOutcome(TrialStatus.FAILED, None, 0, error)

    def record(report: EpochReport) -> bool | None:
        ctx.report(trial_id, trial.config, report, hparams=dict(trial.config) if schedule else None)
        if report.diverged or on_report is None:
            return None
        return on_report(report)

    end = train_epochs(trial, ctx.meter, epochs, record, before_epoch)
    best = trial.best_val_loss if trial.best_epoch > 0 else None
    error, test = end.error, None
    if best is not None and ctx.is_incumbent(trial_id):
        with ctx.meter.paused():
            try:
                test = trial.test_metrics()
            except Exception as exc:
                error = f"test evaluation failed: {short_error(exc)}"
    ctx.trial_end(trial_id, end.status, best, error, test)
    return TrialOutcome(end.status, best, trial.epoch, error)

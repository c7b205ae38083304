"""What the Ray Tune methods run in Ray's workers: the trainable (the task's black-box door, one epoch per
``ray.tune.report``) and the ledger actor that keeps all trials together within the run's budget.

Every epoch the trainable asks the ledger for one epoch of examples and the wall-clock left, trains under a local
:class:`~hpobench_stn.budget.BudgetMeter` with that grant (:class:`EpochGrants`), refunds what it did not use, and
reports the validation loss with a checkpoint (the trial's ``state_dict`` and the Tune trial id that wrote it). An
exception inside the task is reported as a ``failed`` result (the driver's stopper then ends the trial), so Tune
itself only sees errors of the infrastructure. When the budget is spent the trainable waits for the driver to end the
experiment.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpobench_stn.budget import Budget, BudgetExhausted, BudgetMeter
from hpobench_stn.clock import CpuClock, WallClock, process_cpu_seconds

if TYPE_CHECKING:
    from hpobench_stn.space import Config
    from hpobench_stn.task import EpochReport, Task, Trial

METRIC = "objective"  # the validation loss as Tune sees it (non-finite values replaced by a huge number)
TIME_ATTR = "epoch"
SEED_KEY = "_seed"
REPORT_KEY = "report_id"  # unique per report, so that the driver can tell Tune's repeats of a result
STATE_FILE = "trial_state.pt"
HUGE = sys.float_info.max
PARK_POLL_SECONDS = 0.05


class Ledger:
    """The run's remaining budget, shared by the trainables (a Ray actor).

    ``grant`` hands a trial at most the examples asked for and the seconds left. After the epoch the trainable
    ``refund``s what it did not use; what it used stays outstanding until the driver has recorded the report
    (``confirm``), so that the driver never ends the experiment while a report is on its way. An epoch cut by the
    budget is settled with ``cut`` (spent, never reported) and closes the ledger: what is left is less than a
    minibatch. A trial whose worker died with a grant outstanding is written off by the driver with ``abandon``.
    """

    def __init__(self, examples_left: float, deadline: float, cpu_seconds_left: float | None = None) -> None:
        self.left = examples_left
        self.deadline = deadline
        self.cpu_left = cpu_seconds_left  # a CPU-time budget: seconds left by the driver's CPU meter
        self.outstanding: dict[str, int] = {}
        self.unreported = 0
        self.unreported_cpu = 0.0
        self.closed = False
        self.ended = False

    def seconds_left(self) -> float:
        """Seconds left of the budget's clock: wall-clock to the deadline, or CPU-seconds."""
        return self.deadline - time.time() if self.cpu_left is None else self.cpu_left

    def grant(self, trial: str, want: int) -> tuple[int, float, str]:
        """Up to ``want`` examples for ``trial`` (0 once the budget's examples or seconds are spent), the seconds
        left, and which clock they count (``"wall"`` or ``"cpu"``)."""
        seconds = self.seconds_left()
        n = 0 if seconds <= 0 or self.closed else int(min(want, self.left))
        self.left -= n
        self.outstanding[trial] = self.outstanding.get(trial, 0) + n
        return n, seconds, "wall" if self.cpu_left is None else "cpu"

    def refund(self, trial: str, unused: int) -> None:
        """Return the part of a grant an epoch did not use."""
        self.left += unused
        self.outstanding[trial] = self.outstanding.get(trial, 0) - unused

    def confirm(self, trial: str, examples: int) -> None:
        """The driver recorded a report of ``examples``."""
        self.outstanding[trial] = self.outstanding.get(trial, 0) - examples

    def cut(self, trial: str, granted: int, used: int, cpu_seconds: float = 0.0) -> None:
        """The budget cut an epoch after ``used`` of its ``granted`` examples and ``cpu_seconds``: spent, never
        reported."""
        self.refund(trial, granted - used)
        self.outstanding[trial] -= used
        self.unreported += used
        self.unreported_cpu += cpu_seconds
        self.closed = True

    def abandon(self, trial: str) -> None:
        """Count a dead trial's outstanding grant as spent and unreported."""
        self.unreported += self.outstanding.pop(trial, 0)

    def end(self) -> None:
        """The experiment is over: waiting trainables return."""
        self.ended = True

    def is_ended(self) -> bool:
        """True once :meth:`end` was called."""
        return self.ended

    def set_deadline(self, deadline: float) -> None:
        """Move the wall-clock deadline (the driver's meter pauses while it reports)."""
        self.deadline = deadline

    def set_cpu_left(self, seconds: float) -> None:
        """The CPU-seconds the driver's meter has left (a CPU-time budget)."""
        self.cpu_left = seconds

    def state(self) -> dict[str, float]:
        """Examples left (0 once closed), granted and not settled, spent and never reported; seconds left."""
        return {
            "left": 0 if self.closed else self.left,
            "outstanding": sum(self.outstanding.values()),
            "unreported": self.unreported,
            "unreported_cpu": self.unreported_cpu,
            "seconds": self.seconds_left(),
        }


def resume_trial(task: Task, config: Config, seed: int, saved: dict[str, Any] | None) -> Trial:
    """A task trial at ``config``; continued from a saved state (a checkpoint, possibly another trial's) if given.

    The state carries the configuration it was trained with; the trial goes on with ``config`` (PBT's explore).
    """
    trial = task.make_trial(config, seed)
    if saved is not None:
        trial.load_state_dict(saved["state"])
        trial.set_config(config)
    return trial


def load_state(folder: str | Path) -> dict[str, Any]:
    """The saved trial state in a checkpoint folder."""
    import torch

    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)


def _park(ledger: Any) -> None:
    """Wait until the driver ends the experiment (a trial returning without a report would upset Tune's
    schedulers; the driver ends it as soon as every epoch in flight has settled)."""
    import ray

    while not ray.get(ledger.is_ended.remote()):
        time.sleep(PARK_POLL_SECONDS)


def _failure(exc: BaseException, epoch: int, examples: int) -> dict[str, Any]:
    return {
        REPORT_KEY: uuid.uuid4().hex,
        METRIC: HUGE,
        "val_loss": None,
        TIME_ATTR: epoch,
        "examples": examples,
        "failed": f"{type(exc).__name__}: {exc}",
    }


class EpochGrants:
    """The meter a Ray trial trains under: before each epoch (:meth:`open`) a grant of at most one epoch of
    examples and the wall-clock left, from the run's ledger; minibatches are charged against the open grant."""

    def __init__(self, ledger: Any, trial: str, train_size: int) -> None:
        self.ledger = ledger
        self.trial = trial
        self.train_size = train_size
        self.granted = 0
        self.meter: BudgetMeter | None = None
        self._cpu_start = process_cpu_seconds()

    def open(self, _trial: Trial) -> None:
        """Take the next epoch's grant; raise :class:`BudgetExhausted` when the ledger grants nothing."""
        import ray

        self.granted, seconds, clock = ray.get(self.ledger.grant.remote(self.trial, self.train_size))
        self.meter = None
        if self.granted <= 0:
            raise BudgetExhausted
        budget = Budget(seconds=max(seconds, 1e-9), epochs=self.granted / self.train_size, clock=clock)
        self.meter = BudgetMeter(budget, self.train_size, clock=CpuClock() if clock == "cpu" else WallClock())

    def cpu_seconds(self) -> float:
        """CPU-seconds this process spent on the trial since the last call (reported with each epoch)."""
        now = process_cpu_seconds()
        spent, self._cpu_start = now - self._cpu_start, now
        return spent

    @property
    def used(self) -> int:
        """Examples the open grant has paid for."""
        return 0 if self.meter is None else self.meter.examples

    def charge(self, examples: int, cost: float = 1.0) -> None:
        """Charge a minibatch against the open grant."""
        assert self.meter is not None
        self.meter.charge(examples, cost)

    def refund(self) -> None:
        """Give the part of the grant the epoch did not use back to the ledger (once)."""
        self.ledger.refund.remote(self.trial, self.granted - self.used)
        self.granted = self.used

    def cut(self) -> None:
        """Settle an epoch the budget cut (nothing to settle when no grant was open)."""
        if self.meter is not None:
            self.ledger.cut.remote(self.trial, self.granted, self.used, self.cpu_seconds())


def train_trial(
    config: dict[str, Any], task: Task, names: list[str], max_epochs: int, ledger: Any, threads: int
) -> None:
    """The Ray Tune trainable: one configuration trained epoch by epoch through the black-box door (the one trial
    runner's epoch loop), each epoch reported to Tune with a checkpoint."""
    import torch
    from ray import tune

    from hpobench_stn.status import TrialStatus
    from hpobench_stn.trial_runner import train_epochs

    torch.set_num_threads(max(1, threads))
    me = tune.get_context().get_trial_id()
    hp_config = {name: config[name] for name in names}
    try:
        checkpoint = tune.get_checkpoint()
        saved = None
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                saved = load_state(folder)
        trial = resume_trial(task, hp_config, int(config[SEED_KEY]), saved)
    except Exception as exc:
        tune.report(_failure(exc, 0, 0))
        return
    grants = EpochGrants(ledger, me, task.train_size)
    restored_from = None if saved is None else saved["trial"]

    def report_to_tune(report: EpochReport) -> None:
        nonlocal restored_from
        grants.refund()
        metrics = {
            REPORT_KEY: uuid.uuid4().hex,
            METRIC: report.val_loss if math.isfinite(report.val_loss) else HUGE,
            "val_loss": report.val_loss,
            TIME_ATTR: trial.epoch,
            "examples": grants.used,
            "cpu_seconds": grants.cpu_seconds(),
            "val_metrics": dict(report.metrics),
            "trained_config": dict(trial.config),
            "restored_from": restored_from,
        }
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"state": trial.state_dict(), "trial": me}, Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        restored_from = None

    end = train_epochs(trial, grants, max_epochs, report_to_tune, before_epoch=grants.open)
    if end.status == TrialStatus.CUT:
        grants.cut()
        _park(ledger)
    elif end.status == TrialStatus.FAILED:
        grants.refund()
        failure = _failure(end.exception or RuntimeError(end.error), trial.epoch, grants.used)
        tune.report({**failure, "cpu_seconds": grants.cpu_seconds()})

"""What a method sees of a run: the task, the budget meter, the seed, and the recorder of events and incumbent.

Every event is stamped with the budget spent so far (seconds since start, raw examples and raw epochs, costed
epoch-equivalents), so anytime curves can be drawn in any unit. The incumbent is the best trial so far by validation
loss; its test metrics arrive with its trial's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpobench_stn.budget import BudgetMeter
from hpobench_stn.space import Config
from hpobench_stn.status import TrialStatus
from hpobench_stn.store import RunStore

if TYPE_CHECKING:
    from hpobench_stn.cost import CostFactors
    from hpobench_stn.progress import Progress
    from hpobench_stn.resume import FinishedTrial
    from hpobench_stn.task import EpochReport, Task


@dataclass
class Incumbent:
    """The best trial so far by validation loss, with its test metrics once known."""

    trial: int
    config: Config
    epoch: int
    val_loss: float
    val_metrics: dict[str, float]
    test_metrics: dict[str, float] = field(default_factory=dict)
    hparams: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the summary's ``incumbent``)."""
        return {
            "trial": self.trial,
            "config": self.config,
            "epoch": self.epoch,
            "val_loss": self.val_loss,
            "val_metrics": self.val_metrics,
            "test_metrics": self.test_metrics,
            "hparams": self.hparams,
        }


class RunContext:
    """The run as a method sees it: ``task``, ``meter``, ``seed``, ``store``, and the event recorder.

    ``replay`` holds the trials an earlier, interrupted attempt of this run finished (ask/tell methods feed them back
    to their optimizer on resume). ``stop_reason`` says why the method stopped (``budget`` unless it sets another).
    ``costs``: the task's per-example cost factors (:mod:`hpobench_stn.cost`), which a method that trains another
    network than the fixed one charges its steps at.
    """

    def __init__(
        self,
        task: Task,
        meter: BudgetMeter,
        store: RunStore,
        seed: int,
        progress: Progress | None = None,
        replay: list[FinishedTrial] | None = None,
        costs: CostFactors | None = None,
    ) -> None:
        self.task = task
        self.costs = costs
        self.meter = meter
        self.store = store
        self.seed = seed
        self.progress = progress
        self.replay = replay or []
        self.incumbent: Incumbent | None = None
        self.trial_status: dict[int, TrialStatus] = {}
        self.stop_reason = "budget"
        self.load_average_start: list[float] | None = None

    def stamp(self) -> dict[str, Any]:
        """The budget spent so far, as every event records it: ``t`` wall-clock and ``cpu_t`` CPU seconds (pauses
        excluded), raw ``examples`` and ``raw_epochs``, and ``epochs``, the budget's compute-weighted epochs."""
        wall, cpu = self.meter.seconds("wall"), self.meter.seconds("cpu")
        stamp: dict[str, Any] = {"t": round(self.meter.elapsed if wall is None else wall, 4)}
        if cpu is not None:
            stamp["cpu_t"] = round(cpu, 4)
        stamp["examples"] = self.meter.examples
        stamp["raw_epochs"] = round(self.meter.raw_epochs, 6)
        stamp["epochs"] = round(self.meter.epochs, 6)
        return stamp

    def log(self, event: str, **fields: Any) -> None:
        """Append an event with the budget stamp."""
        self.store.event(event=event, **self.stamp(), **fields)

    def trial_start(self, trial_id: int, config: Config, seed: int) -> None:
        """Record that a trial starts."""
        self.log("trial_start", trial=trial_id, config=config, seed=seed)

    def offer(
        self, trial_id: int, config: Config, report: EpochReport, hparams: dict[str, float] | None = None
    ) -> bool:
        """Make this report the incumbent if it beats the current one (no event); returns whether it did."""
        improved = not report.diverged and (self.incumbent is None or report.val_loss < self.incumbent.val_loss)
        if improved:
            self.incumbent = Incumbent(
                trial_id, dict(config), report.epoch, report.val_loss, dict(report.metrics), hparams=hparams
            )
        return improved

    def report(
        self, trial_id: int, config: Config, report: EpochReport, hparams: dict[str, float] | None = None
    ) -> bool:
        """Record a per-epoch report; returns True when it is the new incumbent."""
        extra = {} if report.train_loss is None else {"train_loss": report.train_loss}
        self.log(
            "report",
            trial=trial_id,
            config=config,
            epoch=report.epoch,
            val_loss=report.val_loss,
            metrics=report.metrics,
            hparams=hparams,
            **extra,
        )
        improved = self.offer(trial_id, config, report, hparams)
        self.show_progress()
        return improved

    def settle(self, trial_id: int, status: TrialStatus, test_metrics: dict[str, float] | None = None) -> None:
        """Note how a trial ended (no event); ``test_metrics`` go to the incumbent when it is this trial."""
        self.trial_status[trial_id] = TrialStatus(status)
        if test_metrics and self.incumbent is not None and self.incumbent.trial == trial_id:
            self.incumbent.test_metrics = dict(test_metrics)

    def trial_end(
        self,
        trial_id: int,
        status: TrialStatus,
        best_val_loss: float | None = None,
        error: str | None = None,
        test_metrics: dict[str, float] | None = None,
    ) -> None:
        """Record a trial's end; ``test_metrics`` are attached to the incumbent when it is this trial."""
        self.settle(trial_id, status, test_metrics)
        self.log(
            "trial_end",
            trial=trial_id,
            status=TrialStatus(status),
            best_val_loss=best_val_loss,
            error=error,
            test_metrics=test_metrics,
        )
        self.store.sync()
        self.show_progress()

    def is_incumbent(self, trial_id: int) -> bool:
        """Whether trial ``trial_id`` holds the incumbent."""
        return self.incumbent is not None and self.incumbent.trial == trial_id

    def note(self, event: str, **fields: Any) -> None:
        """Record any other event (optimizer errors, method-specific notes)."""
        self.log(event, **fields)

    def show_progress(self, force: bool = False) -> None:
        """Refresh the progress bar, if there is one."""
        if self.progress is None:
            return
        best = None if self.incumbent is None else self.incumbent.val_loss
        self.progress.show(
            self.meter.fraction(), len(self.trial_status), self.meter.epochs, self.meter.elapsed, best, force=force
        )

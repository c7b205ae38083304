"""The driver side of the Ray Tune methods: Tune's results become the run's events and meter charges, and a
stopper ends the experiment when the run's budget is spent. Imports Ray; loaded only when such a method runs.

Tune pickles its callbacks and stoppers with the experiment state, so :class:`BridgeCallback` and
:class:`BudgetStopper` hold only a key into :data:`LIVE`, where the :class:`Bridge` (run context, meter, ledger)
lives in the driver process.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback, Stopper

from baselines.ray_trainable import REPORT_KEY, SEED_KEY, TIME_ATTR, load_state, resume_trial
from hpobench_stn.status import TrialStatus
from hpobench_stn.task import EpochReport

if TYPE_CHECKING:
    from hpobench_stn.run_context import RunContext
    from hpobench_stn.space import Config

LEDGER_POLL_SECONDS = 0.2
STALL_SECONDS = 600.0  # no report for this long (and 20x the slowest epoch seen): the experiment has stalled
LIVE: dict[str, Bridge] = {}


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


class Bridge:
    """Records a Tune experiment into a run: integer trial ids, reports, exploits, trial ends, incumbent tests."""

    def __init__(
        self, ctx: RunContext, ledger: Any, names: list[str], max_epochs: int, schedule: bool, scratch: Path
    ) -> None:
        self.ctx = ctx
        self.ledger = ledger
        self.names = names
        self.max_epochs = max_epochs
        self.schedule = schedule
        self.scratch = scratch
        self.ids: dict[str, int] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.best: dict[str, float] = {}
        self.ended: set[str] = set()
        self.seen: set[str] = set()
        self.incumbent_pending: str | None = None
        self.incumbent_checkpoint: Path | None = None
        self.stalled = False
        self._ledger_state: dict[str, float] = {}
        self._polled = -math.inf
        self._last_activity = time.monotonic()
        self._slowest_epoch = 0.0
        self._over = contextlib.ExitStack()
        self._is_over = False

    # budget ---------------------------------------------------------------------------------------------------
    def ledger_state(self, fresh: bool = False) -> dict[str, float]:
        """The ledger's state, asked for at most every ``LEDGER_POLL_SECONDS`` unless ``fresh``."""
        import ray

        now = time.monotonic()
        if fresh or now - self._polled > LEDGER_POLL_SECONDS:
            self._ledger_state = ray.get(self.ledger.state.remote())
            self._polled = now
        return self._ledger_state

    def dry(self, fresh: bool = False) -> bool:
        """True when the ledger grants nothing more (examples or wall-clock spent)."""
        state = self.ledger_state(fresh)
        return state["left"] < 1 or state["seconds"] <= 0

    def spent(self) -> bool:
        """Whether the experiment should end: the run's meter is exhausted, or the ledger is dry and no epoch is in
        flight, or nothing has happened for too long. From then on the meter is paused (Ray stopping the trials is
        not the method's work) and waiting trainables are released."""
        if self._is_over:
            return True
        stall = max(STALL_SECONDS, 20 * self._slowest_epoch)
        self.stalled = time.monotonic() - self._last_activity > stall
        drained = self.dry() and self.ledger_state()["outstanding"] <= 0
        if not (self.ctx.meter.exhausted or self.stalled or drained):
            return False
        if self.stalled:
            self.ctx.note("stalled", seconds_without_report=round(stall, 1))
        self._over.enter_context(self.ctx.meter.paused())
        self._is_over = True
        self.ledger.end.remote()
        return True

    def sync_deadline(self) -> None:
        """Tell the ledger the seconds the run's meter has left: a wall-clock deadline (the meter pauses while the
        driver reports), or the CPU-seconds left of a CPU-time budget."""
        budget = self.ctx.meter.budget
        if budget.seconds is None:
            return
        left = budget.seconds - self.ctx.meter.elapsed
        if budget.clock == "cpu":
            self.ledger.set_cpu_left.remote(left)
        else:
            self.ledger.set_deadline.remote(time.time() + left)

    # events ---------------------------------------------------------------------------------------------------
    def start(self, tune_id: str, config: dict[str, Any]) -> None:
        """A trial started (restarts after a pause or an exploit are the same trial)."""
        self._last_activity = time.monotonic()
        if tune_id in self.ids:
            return
        self.ids[tune_id] = len(self.ids)
        self.ctx.trial_start(self.ids[tune_id], {n: config[n] for n in self.names}, int(config[SEED_KEY]))

    def result(self, tune_id: str, result: dict[str, Any]) -> bool:
        """Charge and record one report; returns True to stop the trial (it diverged or failed).

        Each report carries a unique id: Tune passes a finished trial's last result once more (flattened, and after
        a PBT exploit possibly the donor's), and such repeats are neither charged nor recorded again.
        """
        if REPORT_KEY not in result or tune_id not in self.ids:
            return False
        if result[REPORT_KEY] in self.seen:  # a repeat (Tune passes a finished trial's last result again)
            return bool(result.get("failed")) or not math.isfinite(_float(result.get("val_loss")))
        self.seen.add(result[REPORT_KEY])
        previous = self.last.get(tune_id)
        self._last_activity = time.monotonic()
        self._slowest_epoch = max(self._slowest_epoch, float(result.get("time_this_iter_s") or 0.0))
        tid = self.ids[tune_id]
        self.ctx.meter.record(int(result["examples"]))
        self.ctx.meter.add_cpu(float(result.get("cpu_seconds") or 0.0))
        self.ledger.confirm.remote(tune_id, int(result["examples"]))
        if self.ctx.meter.budget.clock == "cpu":
            self.sync_deadline()
        self.last[tune_id] = result
        if result.get("failed"):
            return True
        if result.get("restored_from") and result["restored_from"] != tune_id:
            donor = self.ids.get(result["restored_from"])
            self.ctx.note("exploit", trial=tid, donor=donor, config=result["trained_config"], epoch=result[TIME_ATTR])
        elif result.get("restored_from") == tune_id:
            self.ctx.note("trial_resumed", trial=tid, epoch=result[TIME_ATTR])
        elif previous is not None and not previous.get("failed") and result[TIME_ATTR] <= previous[TIME_ATTR]:
            self.ctx.note("restart_without_checkpoint", trial=tid, epoch=result[TIME_ATTR])
        config = result["trained_config"]
        val = _float(result["val_loss"])
        report = EpochReport(int(result[TIME_ATTR]), val, dict(result.get("val_metrics") or {}))
        if self.ctx.report(tid, config, report, hparams=dict(config) if self.schedule else None):
            self.incumbent_pending = tune_id
        if not report.diverged:
            self.best[tune_id] = min(self.best.get(tune_id, math.inf), val)
        return report.diverged

    def checkpoint(self, tune_id: str, checkpoint: Any) -> None:
        """Keep a copy of the checkpoint that came with a new incumbent's report."""
        if tune_id != self.incumbent_pending:
            return
        self.incumbent_pending = None
        target = self.scratch / "incumbent"
        with self.ctx.meter.paused():
            shutil.rmtree(target, ignore_errors=True)
            checkpoint.to_directory(str(target))
        self.incumbent_checkpoint = target
        self.sync_deadline()

    def end(self, tune_id: str, error: str | None = None) -> None:
        """A trial ended: completed, stopped (by the scheduler), diverged, failed, or cut (by the budget)."""
        if tune_id not in self.ids or tune_id in self.ended:
            return
        self.ended.add(tune_id)
        tid = self.ids[tune_id]
        last = self.last.get(tune_id) or {}
        error = error or last.get("failed")
        if error:
            status = TrialStatus.FAILED
        elif last and not math.isfinite(_float(last["val_loss"])):
            status = TrialStatus.DIVERGED
        elif last and last[TIME_ATTR] >= self.max_epochs:
            status = TrialStatus.COMPLETED
        elif self.ctx.meter.exhausted or self.dry(fresh=True):
            status = TrialStatus.CUT
        else:
            status = TrialStatus.STOPPED
        test = None
        inc = self.ctx.incumbent
        if inc is not None and inc.trial == tid and self.incumbent_checkpoint is not None:
            test = self.test_metrics(inc.config)
        self.ctx.trial_end(tid, status, self.best.get(tune_id), error, test)

    def recover(self, tune_id: str) -> None:
        """A trial's worker failed and Tune restarts the trial from its last checkpoint."""
        self.ledger.abandon.remote(tune_id)
        self.ctx.note("trial_restarted", trial=self.ids.get(tune_id), reason="Ray worker error")

    def error(self, tune_id: str, message: str) -> None:
        """A trial's worker failed (not the task: that is reported as a result); its grant counts as spent."""
        self.ledger.abandon.remote(tune_id)
        self.end(tune_id, error=message)

    def test_metrics(self, config: Config) -> dict[str, float]:
        """Test metrics of the incumbent's checkpoint, evaluated here (paused out of the wall-clock)."""
        assert self.incumbent_checkpoint is not None
        with self.ctx.meter.paused():
            trial = resume_trial(self.ctx.task, config, 0, load_state(self.incumbent_checkpoint))
            test = trial.test_metrics()
        self.sync_deadline()
        return test

    def finish(self) -> None:
        """After the experiment: charge the examples never reported, end the trials Tune left open (cut), and
        restart the meter's clock."""
        state = self.ledger_state(fresh=True)
        self.ctx.meter.record(int(state["unreported"] + state["outstanding"]))
        self.ctx.meter.add_cpu(state["unreported_cpu"])
        for tune_id in list(self.ids):
            self.end(tune_id)
        self._over.close()
        if self.stalled:
            self.ctx.stop_reason = "stalled"


class BridgeCallback(Callback):
    """Forwards trial starts, checkpoints and ends to the bridge."""

    def __init__(self, key: str) -> None:
        self.key = key

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial (re)started."""
        LIVE[self.key].start(trial.trial_id, trial.config)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        """A reported checkpoint was registered."""
        LIVE[self.key].checkpoint(trial.trial_id, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial finished or was stopped."""
        LIVE[self.key].end(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial's worker failed."""
        error = trial.get_error()
        message = str(error).strip().splitlines()[-1] if error is not None else "the trial's worker failed"
        LIVE[self.key].error(trial.trial_id, f"Ray worker error: {message}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial's worker failed; Tune retries the trial from its last checkpoint."""
        LIVE[self.key].recover(trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Give trials that never started their folder: Tune's result grid fails on them otherwise (Ray 2.60)."""
        for trial in trials:
            if not trial.storage.trial_dir_name:
                trial.init_local_path()


class BudgetStopper(Stopper):
    """Charges each report into the run's meter; stops everything once the run's budget is spent."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Record one report; stop the trial when it diverged or failed."""
        return LIVE[self.key].result(trial_id, result)

    def stop_all(self) -> bool:
        """True once the budget is spent."""
        return LIVE[self.key].spent()

"""The harness: runs one (task, preset, method, seed, budget), meters the budget, records everything.

:func:`execute` builds the task and the method (checking every setting before the run folder exists), resumes
what an earlier attempt left (:mod:`hpobench_stn.resume`), runs the method under the run's meter through a
:class:`~hpobench_stn.run_context.RunContext`, and writes the summary. A run folder with a completion marker is not
run again.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpobench_stn import metadata as run_metadata
from hpobench_stn import resume
from hpobench_stn.budget import Budget, BudgetExhausted, BudgetMeter
from hpobench_stn.clock import CpuClock, WallClock
from hpobench_stn.cost import cost_factors
from hpobench_stn.errors import UserError
from hpobench_stn.lock import RunLock
from hpobench_stn.optimizer import Method, Optimizer
from hpobench_stn.registry import build_method, build_task
from hpobench_stn.run_context import RunContext
from hpobench_stn.signals import INTERRUPTIONS, signal_name
from hpobench_stn.status import RunStatus, TrialStatus
from hpobench_stn.store import SUMMARY, RunStore, is_complete, run_dir
from hpobench_stn.task import Task
from hpobench_stn.threads import configure_threads
from hpobench_stn.trial_runner import short_error, trial_seed

__all__ = ["RunSpec", "execute", "trial_seed"]


@dataclass
class RunSpec:
    """Everything that defines one run."""

    task: str
    method: str
    seed: int = 0
    budget: str = "30s"
    preset: str = "tiny"
    out: Path = Path("results/runs")
    method_args: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    device: str = "cpu"
    download: bool = False
    threads: int | None = None
    clock: str = "wall"
    trial_epochs: int | None = None
    task_args: dict[str, Any] = field(default_factory=dict)

    @property
    def budget_value(self) -> Budget:
        """The parsed budget, its seconds counted by :attr:`clock`."""
        return Budget.parse(self.budget, self.clock)

    @property
    def path(self) -> Path:
        """This run's folder, named by its identity: task, preset and task settings, method and the settings that
        differ from its defaults (and the trial length when one is given), budget, seed."""
        from hpobench_stn.registry import method_settings

        settings = method_settings(self.method, self.method_args).non_default()
        if self.trial_epochs is not None:
            settings["trial_epochs"] = self.trial_epochs
        budget = str(self.budget_value)
        return run_dir(self.out, self.task, self.preset, self.method, budget, self.seed, settings, self.task_args)


def execute(spec: RunSpec, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) one run and return its summary; a complete run is not run again."""
    budget = spec.budget_value
    path = spec.path
    if is_complete(path):
        return json.loads((path / SUMMARY).read_text())
    threads = configure_threads(spec.threads)
    # Everything that can refuse the run (the task's data, the method's settings and door) before its folder exists.
    task = build_task(
        spec.task,
        spec.preset,
        data_dir=spec.data_dir,
        device=spec.device,
        download=spec.download,
        trial_epochs=spec.trial_epochs,
        settings=spec.task_args,
    )
    method = build_method(spec.method, task, spec.seed, spec.method_args)
    costs = cost_factors(task)  # measured once per task and preset in this process, before the folder exists
    meta = {**run_metadata.collect(spec, task, method, budget, threads), "cost_factors": costs.to_dict()}
    with RunLock(path):  # one writer per run folder (hpobench_stn.lock): a second one exits naming this one
        if is_complete(path):  # finished by another process while this one was starting
            return json.loads((path / SUMMARY).read_text())
        store = RunStore(path)
        resumed, replay, spent = resume.prepare(path, isinstance(method, Optimizer))
        store.write_metadata(meta)
        meter = _meter(budget, task.train_size, spent)
        bar = _progress_bar(spec) if progress else None
        ctx = RunContext(task, meter, store, spec.seed, bar, replay, costs)
        ctx.load_average_start = meta["load_average_start"]
        ctx.log("run_start", resumed=resumed, replayed_trials=len(replay))
        interruption: BaseException | None = None
        try:
            status, error = _run_method(method, ctx)
        except INTERRUPTIONS as exc:
            interruption, status, error = exc, RunStatus.INTERRUPTED, f"interrupted by {signal_name(exc)}"
            ctx.stop_reason = "interrupted"
        if bar is not None:
            ctx.show_progress(force=True)
            bar.close()
        if status == RunStatus.COMPLETED and ctx.incumbent is None:
            status, error = RunStatus.NO_RESULT, _why_no_result(ctx)
        summary = _summary(ctx, task, status, error) | method.summary_fields()
        ctx.log("run_end", status=status, stop_reason=ctx.stop_reason)
        store.finish(summary, complete=_is_final(status, ctx))
        if interruption is not None:
            raise interruption
        return summary


def _meter(budget: Budget, train_size: int, spent: resume.Spent) -> BudgetMeter:
    """The run's meter: its seconds by the budget's clock, watching wall-clock and CPU time both."""
    watches = {"wall": WallClock(), "cpu": CpuClock()}
    return BudgetMeter(
        budget,
        train_size,
        clock=watches[budget.clock],
        watches=watches,
        spent_seconds=spent.seconds(budget.clock),
        spent_watches={"wall": spent.wall, "cpu": spent.cpu},
        spent_examples=spent.examples,
        spent_epochs=spent.epochs,
    )


def _is_final(status: RunStatus, ctx: RunContext) -> bool:
    """Whether the run is done for good. Not when the method crashed (Ray failing to start on a starved machine,
    say), was interrupted, or ran out of budget before any trial finished an epoch: its summary says why, and running
    the same command again tries it again, keeping this attempt's events. A run whose every trial diverged or failed
    is final: trying again would repeat it."""
    if status == RunStatus.NO_RESULT:
        return bool(ctx.trial_status) and all(st != TrialStatus.CUT for st in ctx.trial_status.values())
    return status == RunStatus.COMPLETED


def _why_no_result(ctx: RunContext) -> str:
    statuses = set(ctx.trial_status.values())
    if statuses and TrialStatus.CUT not in statuses:
        kinds = " or ".join(sorted(statuses))
        return f"no incumbent: every trial {kinds} before a finite validation loss"
    budget = ctx.meter.budget
    return (
        f"no incumbent: the budget ({budget}) ended before any trial finished an epoch "
        f"({ctx.meter.epochs:.2f} epochs, {ctx.meter.elapsed:.0f} s spent); give a larger --budget, or fewer "
        "--threads when other work shares the machine"
    )


def _run_method(method: Method, ctx: RunContext) -> tuple[RunStatus, str | None]:
    try:
        method.run(ctx)
        if ctx.stop_reason == "budget" and not ctx.meter.exhausted:
            ctx.stop_reason = "finished"
    except BudgetExhausted:
        pass
    except UserError:
        ctx.store.close()
        raise
    except Exception as exc:
        error = short_error(exc)
        ctx.note("method_error", error=error, traceback=traceback.format_exc())
        return RunStatus.FAILED, error
    return RunStatus.COMPLETED, None


def _progress_bar(spec: RunSpec) -> Any:
    from hpobench_stn.progress import Progress

    return Progress(f"{spec.task}/{spec.method} seed {spec.seed}")


def _summary(ctx: RunContext, task: Task, status: RunStatus, error: str | None) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for st in ctx.trial_status.values():
        counts[st] = counts.get(st, 0) + 1
    inc = ctx.incumbent
    summary: dict[str, Any] = {
        "status": status,
        "error": error,
        "stop_reason": "error" if status == RunStatus.FAILED else ctx.stop_reason,
        "seconds": round(ctx.meter.elapsed, 4),
        "clock": ctx.meter.budget.clock,
        "wall_seconds": round(ctx.meter.seconds("wall") or 0.0, 4),
        "cpu_seconds": round(ctx.meter.seconds("cpu") or 0.0, 4),
        "load_average_start": ctx.load_average_start,
        "load_average_end": run_metadata.load_average(),
        "epochs": ctx.meter.epochs,
        "raw_epochs": ctx.meter.raw_epochs,
        "examples": ctx.meter.examples,
        "trials": len(ctx.trial_status),
        "trials_by_status": counts,
        "incumbent": None,
    }
    if inc is not None:
        summary["incumbent"] = inc.to_dict()
        summary["val_loss"] = inc.val_loss
        summary["test_loss"] = inc.test_metrics.get("loss")
        summary.update(task.summary_extras(inc.config, inc.hparams))
    return summary

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
from hpobench_stn.cost import cost_factors
from hpobench_stn.errors import UserError
from hpobench_stn.optimizer import Method, Optimizer
from hpobench_stn.registry import build_method, build_task
from hpobench_stn.run_context import RunContext
from hpobench_stn.status import RunStatus
from hpobench_stn.store import SUMMARY, RunStore, is_complete, run_dir
from hpobench_stn.task import Task
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

    @property
    def path(self) -> Path:
        """This run's folder (its settings part named by the method's settings that differ from the defaults)."""
        from hpobench_stn.registry import method_settings

        settings = method_settings(self.method, self.method_args).non_default()
        return run_dir(
            self.out, self.task, self.preset, self.method, str(Budget.parse(self.budget)), self.seed, settings
        )


def execute(spec: RunSpec, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) one run and return its summary; a complete run is not run again."""
    budget = Budget.parse(spec.budget)
    path = spec.path
    if is_complete(path):
        return json.loads((path / SUMMARY).read_text())
    if spec.threads is not None:
        import torch

        torch.set_num_threads(spec.threads)
    task = build_task(spec.task, spec.preset, data_dir=spec.data_dir, device=spec.device, download=spec.download)
    method = build_method(spec.method, task, spec.seed, spec.method_args)
    costs = cost_factors(task)
    store = RunStore(path)
    resumed, replay, spent = resume.prepare(path, isinstance(method, Optimizer))
    store.write_metadata({**run_metadata.collect(spec, task, method, budget), "cost_factors": costs.to_dict()})
    meter = BudgetMeter(
        budget, task.train_size, spent_seconds=spent.seconds, spent_examples=spent.examples, spent_epochs=spent.epochs
    )
    bar = _progress_bar(spec) if progress else None
    ctx = RunContext(task, meter, store, spec.seed, bar, replay, costs)
    ctx.log("run_start", resumed=resumed, replayed_trials=len(replay))
    status, error = _run_method(method, ctx)
    if bar is not None:
        ctx.show_progress(force=True)
        bar.close()
    summary = _summary(ctx, task, status, error)
    ctx.log("run_end", status=status, stop_reason=ctx.stop_reason)
    # A run whose method crashed (Ray failing to start on a starved machine, say) is not complete: its summary
    # says why, and running the same command again tries it again, keeping this attempt's events.
    store.finish(summary, complete=status != RunStatus.FAILED)
    return summary


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
        "stop_reason": ctx.stop_reason if status == RunStatus.COMPLETED else "error",
        "seconds": round(ctx.meter.elapsed, 4),
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

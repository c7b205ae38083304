"""The harness: runs one (task, preset, method, seed, budget), meters the budget, records everything.

The run loop is robust in the manner of Bayesmark: an exception inside the optimizer is recorded and a random
proposal takes its place; an exception inside a trial marks it failed; a NaN/inf loss marks it diverged; the
study goes on until the budget is spent. A run folder without a completion marker is resumed: ask/tell methods
replay the trials that finished (same proposals, same budget spent), other methods start over, and the earlier
partial event log is kept beside the new one.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpobench_stn import metadata as run_metadata
from hpobench_stn.budget import Budget, BudgetExhausted, BudgetMeter
from hpobench_stn.errors import UserError
from hpobench_stn.optimizer import Method, Optimizer, Outcome, SearchExhausted
from hpobench_stn.registry import get_method, get_task
from hpobench_stn.space import Config
from hpobench_stn.store import EVENTS, RunStore, is_complete, read_events, run_dir
from hpobench_stn.task import EpochReport, Task

MAX_CONSECUTIVE_FAILURES = 20
PROGRESS_INTERVAL = 0.5  # seconds between progress-bar refreshes


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
        """This run's folder."""
        return run_dir(
            self.out,
            self.task,
            self.preset,
            self.method,
            str(Budget.parse(self.budget)),
            self.seed,
            self.method_args,
        )


def trial_seed(run_seed: int, trial_id: int) -> int:
    """The training seed of one trial, derived from the run's seed so that every trial differs."""
    return int(np.random.SeedSequence([run_seed, trial_id]).generate_state(1)[0])


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


class RunContext:
    """What a method sees of a run: the task, the meter, the seed, and the recorder of events."""

    def __init__(
        self,
        task: Task,
        meter: BudgetMeter,
        store: RunStore,
        seed: int,
        progress: Any = None,
        replay: list[dict[str, Any]] | None = None,
    ) -> None:
        self.task = task
        self.meter = meter
        self.store = store
        self.seed = seed
        self.progress = progress
        self.replay = replay or []
        self.incumbent: Incumbent | None = None
        self.trial_status: dict[int, str] = {}
        self.stop_reason = "budget"
        self._last_refresh = -math.inf

    def _stamp(self) -> dict[str, Any]:
        return {
            "t": round(self.meter.elapsed, 4),
            "examples": self.meter.examples,
            "epochs": round(self.meter.epochs, 6),
        }

    def log(self, event: str, **fields: Any) -> None:
        """Append an event with the budget stamp (seconds since start, examples, epoch-equivalents)."""
        self.store.event(event=event, **self._stamp(), **fields)

    def trial_start(self, trial_id: int, config: Config, seed: int) -> None:
        """Record that a trial starts."""
        self.log("trial_start", trial=trial_id, config=config, seed=seed)

    def report(
        self, trial_id: int, config: Config, report: EpochReport, hparams: dict[str, float] | None = None
    ) -> bool:
        """Record a per-epoch report; returns True when it is the new incumbent."""
        self.log(
            "report",
            trial=trial_id,
            config=config,
            epoch=report.epoch,
            val_loss=report.val_loss,
            metrics=report.metrics,
            hparams=hparams,
        )
        improved = not report.diverged and (self.incumbent is None or report.val_loss < self.incumbent.val_loss)
        if improved:
            self.incumbent = Incumbent(
                trial_id, dict(config), report.epoch, report.val_loss, dict(report.metrics), hparams=hparams
            )
        self._update_progress()
        return improved

    def trial_end(
        self,
        trial_id: int,
        status: str,
        best_val_loss: float | None = None,
        error: str | None = None,
        test_metrics: dict[str, float] | None = None,
    ) -> None:
        """Record a trial's end; ``test_metrics`` are attached to the incumbent when it is this trial."""
        self.trial_status[trial_id] = status
        if test_metrics is not None and self.incumbent is not None and self.incumbent.trial == trial_id:
            self.incumbent.test_metrics = dict(test_metrics)
        self.log(
            "trial_end",
            trial=trial_id,
            status=status,
            best_val_loss=best_val_loss,
            error=error,
            test_metrics=test_metrics,
        )
        self.store.sync()
        self._update_progress()

    def note(self, event: str, **fields: Any) -> None:
        """Record any other event (optimizer errors, method-specific notes)."""
        self.log(event, **fields)

    def _update_progress(self) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self._last_refresh < PROGRESS_INTERVAL:
            return
        self._last_refresh = now
        self.progress.n = round(100 * self.meter.fraction(), 1)
        best = "-" if self.incumbent is None else f"{self.incumbent.val_loss:.4g}"
        self.progress.set_postfix_str(
            f"trials {len(self.trial_status)} · {self.meter.epochs:.1f} ep · {self.meter.elapsed:.0f}s · best {best}",
            refresh=False,
        )
        self.progress.refresh()


def _short_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _finished_trials(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials that ended in an earlier attempt, with their reports, in order (for replay on resume)."""
    trials: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.get("event") == "trial_start":
            trials[ev["trial"]] = {"trial": ev["trial"], "config": ev["config"], "reports": [], "end": None}
        elif ev.get("event") == "report" and ev.get("trial") in trials:
            trials[ev["trial"]]["reports"].append(ev)
        elif ev.get("event") == "trial_end" and ev.get("trial") in trials:
            trials[ev["trial"]]["end"] = ev
    return [t for t in trials.values() if t["end"] is not None and t["end"]["status"] != "cut"]


def _safe_ask(optimizer: Optimizer, ctx: RunContext, trial_id: int, fallback: np.random.Generator) -> Config:
    try:
        return ctx.task.space.validate(optimizer.ask(trial_id))
    except SearchExhausted:
        raise
    except Exception as exc:  # an optimizer crash must not end the study
        ctx.note("optimizer_error", trial=trial_id, where="ask", error=_short_error(exc))
        return ctx.task.space.sample(fallback)


def _safe_call(ctx: RunContext, where: str, trial_id: int, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        ctx.note("optimizer_error", trial=trial_id, where=where, error=_short_error(exc))
        return None


def _replay(optimizer: Optimizer, ctx: RunContext, fallback: np.random.Generator) -> int:
    """Feed the trials a killed attempt finished back to the optimizer; returns the next trial id."""
    next_id = 0
    for done in ctx.replay:
        tid = done["trial"]
        _safe_ask(optimizer, ctx, tid, fallback)  # advances the optimizer exactly as the first attempt did
        for rep in done["reports"]:
            _safe_call(ctx, "on_report", tid, optimizer.on_report, tid, rep["epoch"], rep["val_loss"])
            val = rep["val_loss"]
            if (
                isinstance(val, int | float)
                and math.isfinite(val)
                and (ctx.incumbent is None or val < ctx.incumbent.val_loss)
            ):
                ctx.incumbent = Incumbent(tid, done["config"], rep["epoch"], val, rep.get("metrics") or {})
        end = done["end"]
        if ctx.incumbent is not None and ctx.incumbent.trial == tid and end.get("test_metrics"):
            ctx.incumbent.test_metrics = end["test_metrics"]
        ctx.trial_status[tid] = end["status"]
        value = end.get("best_val_loss") if end["status"] in ("completed", "stopped") else None
        outcome = Outcome(value, "ok" if value is not None else end["status"], len(done["reports"]))
        _safe_call(ctx, "tell", tid, optimizer.tell, tid, done["config"], outcome)
        next_id = tid + 1
    return next_id


def ask_tell_loop(optimizer: Optimizer, ctx: RunContext) -> None:
    """The harness's loop for ask/tell optimizers: propose, train epoch by epoch, report, tell; until the budget
    ends (the running trial is cut there) or the optimizer has nothing left to propose."""
    task, meter = ctx.task, ctx.meter
    fallback = np.random.default_rng([ctx.seed, 0xFA11])
    trial_id = _replay(optimizer, ctx, fallback)
    failures = 0
    while not meter.exhausted:
        try:
            config = _safe_ask(optimizer, ctx, trial_id, fallback)
        except SearchExhausted:
            ctx.stop_reason = "exhausted"
            return
        seed = trial_seed(ctx.seed, trial_id)
        ctx.trial_start(trial_id, config, seed)
        status, error, trial = "completed", None, None
        try:
            trial = task.make_trial(config, seed)
            while trial.epoch < task.max_epochs:
                report = trial.train_epoch(meter)
                ctx.report(trial_id, config, report)
                if report.diverged:
                    status = "diverged"
                    break
                if (
                    _safe_call(
                        ctx,
                        "on_report",
                        trial_id,
                        optimizer.on_report,
                        trial_id,
                        report.epoch,
                        report.val_loss,
                    )
                    is False
                ):
                    status = "stopped"
                    break
        except BudgetExhausted:
            status = "cut"
        except Exception as exc:
            status, error = "failed", _short_error(exc)
        best = trial.best_val_loss if trial is not None and trial.best_epoch > 0 else None
        test = None
        if best is not None and ctx.incumbent is not None and ctx.incumbent.trial == trial_id:
            with meter.paused():
                try:
                    test = trial.test_metrics()
                except Exception as exc:
                    error = f"test evaluation failed: {_short_error(exc)}"
        ctx.trial_end(trial_id, status, best, error, test)
        if status == "cut":
            return
        failures = failures + 1 if status == "failed" else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            ctx.stop_reason = "too many failed trials"
            return
        value = best if status in ("completed", "stopped") else None
        outcome = Outcome(value, "ok" if value is not None else status, trial.epoch if trial else 0)
        _safe_call(ctx, "tell", trial_id, optimizer.tell, trial_id, config, outcome)
        trial_id += 1


def build_method(spec: RunSpec, task: Task) -> Method:
    """Instantiate the method with its ``--method-arg`` settings (unknown keys: a clear error)."""
    import inspect

    cls = get_method(spec.method)
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p not in ("self", "space", "seed", "max_epochs")]
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in spec.method_args if k not in allowed]
    if unknown and not accepts_any:
        raise UserError(
            f"method {spec.method!r} has no setting {', '.join(map(repr, unknown))}; "
            f"valid settings: {', '.join(allowed) or 'none'}"
        )
    try:
        return cls(task.space, spec.seed, task.max_epochs, **spec.method_args)
    except (TypeError, ValueError) as exc:
        raise UserError(f"method {spec.method!r}: bad setting ({exc})") from None


def build_task(spec: RunSpec) -> Task:
    """Instantiate the task at the run's preset."""
    cls = get_task(spec.task)
    return cls(spec.preset, data_dir=spec.data_dir, device=spec.device, download=spec.download)


def execute(spec: RunSpec, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) one run and return its summary; a complete run is not run again."""
    from hpobench_stn.store import SUMMARY

    budget = Budget.parse(spec.budget)
    path = spec.path
    if is_complete(path):
        import json

        return json.loads((path / SUMMARY).read_text())
    if spec.threads is not None:
        import torch

        torch.set_num_threads(spec.threads)
    task = build_task(spec)
    method = build_method(spec, task)
    store = RunStore(path)
    previous = read_events(path)
    replay: list[dict[str, Any]] = []
    spent_seconds, spent_examples = 0.0, 0
    if previous:
        if isinstance(method, Optimizer):
            replay = _finished_trials(previous)
            ends = [
                ev
                for ev in previous
                if ev.get("event") == "trial_end" and any(ev["trial"] == r["trial"] for r in replay)
            ]
            if ends:
                spent_seconds, spent_examples = ends[-1]["t"], ends[-1]["examples"]
        else:
            attempt = 1
            while (path / f"events.attempt-{attempt}.jsonl").exists():
                attempt += 1
            (path / EVENTS).rename(path / f"events.attempt-{attempt}.jsonl")
    store.write_metadata(run_metadata.collect(spec, task, method, budget))
    meter = BudgetMeter(budget, task.train_size, spent_seconds=spent_seconds, spent_examples=spent_examples)
    bar = _progress_bar(spec) if progress else None
    ctx = RunContext(task, meter, store, spec.seed, bar, replay)
    ctx.log("run_start", resumed=bool(previous), replayed_trials=len(replay))
    status, error = "completed", None
    try:
        method.run(ctx)
        if ctx.stop_reason == "budget" and not meter.exhausted:
            ctx.stop_reason = "finished"
    except BudgetExhausted:
        pass
    except UserError:
        store.close()
        raise
    except Exception as exc:
        status, error = "failed", _short_error(exc)
        ctx.note("method_error", error=error, traceback=traceback.format_exc())
    finally:
        if bar is not None:
            ctx._last_refresh = -math.inf
            ctx._update_progress()
            bar.close()
    summary = _summary(ctx, status, error)
    ctx.log("run_end", status=status, stop_reason=ctx.stop_reason)
    # A run whose method crashed (Ray failing to start on a starved machine, say) is not complete: its summary
    # says why, and running the same command again tries it again, keeping this attempt's events.
    store.finish(summary, complete=status != "failed")
    return summary


def _progress_bar(spec: RunSpec) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=100,
        desc=f"{spec.task}/{spec.method} seed {spec.seed}",
        unit="%",
        file=sys.stderr,
        bar_format="{desc}: {percentage:3.0f}% of budget |{bar:20}|{postfix}",
        mininterval=0.5,
    )


def _summary(ctx: RunContext, status: str, error: str | None) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for st in ctx.trial_status.values():
        counts[st] = counts.get(st, 0) + 1
    inc = ctx.incumbent
    summary: dict[str, Any] = {
        "status": status,
        "error": error,
        "stop_reason": ctx.stop_reason if status == "completed" else "error",
        "seconds": round(ctx.meter.elapsed, 4),
        "epochs": ctx.meter.epochs,
        "examples": ctx.meter.examples,
        "trials": len(ctx.trial_status),
        "trials_by_status": counts,
        "incumbent": None,
    }
    if inc is not None:
        summary["incumbent"] = {
            "trial": inc.trial,
            "config": inc.config,
            "epoch": inc.epoch,
            "val_loss": inc.val_loss,
            "val_metrics": inc.val_metrics,
            "test_metrics": inc.test_metrics,
            "hparams": inc.hparams,
        }
        summary["val_loss"] = inc.val_loss
        summary["test_loss"] = inc.test_metrics.get("loss")
        summary.update(ctx.task.summary_extras(inc.config, inc.hparams))
    return summary

"""The harness's loop for ask/tell optimizers, robust in the manner of Bayesmark.

Propose, train through the trial runner, tell; until the budget ends (the running trial is cut there) or the
optimizer has nothing left to propose. An exception inside the optimizer is recorded as an ``optimizer_error``
event and a random proposal takes its place; an exception inside a trial marks it failed; the study stops after
``MAX_CONSECUTIVE_FAILURES`` failed trials in a row. On resume the trials an earlier attempt finished are fed back to
the optimizer first, so it proposes what an uninterrupted run would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from hpobench_stn.optimizer import Optimizer, Outcome, SearchExhausted
from hpobench_stn.space import Config
from hpobench_stn.status import TrialStatus
from hpobench_stn.task import EpochReport
from hpobench_stn.trial_runner import run_trial, short_error, trial_seed

if TYPE_CHECKING:
    from hpobench_stn.run_context import RunContext

MAX_CONSECUTIVE_FAILURES = 20


def _safe_ask(optimizer: Optimizer, ctx: RunContext, trial_id: int, fallback: np.random.Generator) -> Config:
    try:
        return ctx.task.space.validate(optimizer.ask(trial_id))
    except SearchExhausted:
        raise
    except Exception as exc:  # an optimizer crash must not end the study
        ctx.note("optimizer_error", trial=trial_id, where="ask", error=short_error(exc))
        return ctx.task.space.sample(fallback)


def _safe_call(ctx: RunContext, where: str, trial_id: int, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        ctx.note("optimizer_error", trial=trial_id, where=where, error=short_error(exc))
        return None


def _replay(optimizer: Optimizer, ctx: RunContext, fallback: np.random.Generator) -> int:
    """Feed the trials a killed attempt finished back to the optimizer; returns the next trial id."""
    next_id = 0
    for done in ctx.replay:
        tid = done.trial
        _safe_ask(optimizer, ctx, tid, fallback)  # advances the optimizer exactly as the first attempt did
        for rep in done.reports:
            _safe_call(ctx, "on_report", tid, optimizer.on_report, tid, rep["epoch"], rep["val_loss"])
            val = rep["val_loss"]
            if isinstance(val, int | float) and math.isfinite(val):
                ctx.offer(tid, done.config, EpochReport(rep["epoch"], val, rep.get("metrics") or {}))
        end = done.end
        ctx.settle(tid, done.status, end.get("test_metrics"))
        value = end.get("best_val_loss") if done.status.has_value else None
        _safe_call(ctx, "tell", tid, optimizer.tell, tid, done.config, Outcome(value, done.status, len(done.reports)))
        next_id = tid + 1
    return next_id


def ask_tell_loop(optimizer: Optimizer, ctx: RunContext) -> None:
    """Run the study: propose, train, tell, until the budget ends or the optimizer is exhausted."""
    fallback = np.random.default_rng([ctx.seed, 0xFA11])
    trial_id = _replay(optimizer, ctx, fallback)
    failures = 0
    while not ctx.meter.exhausted:
        try:
            config = _safe_ask(optimizer, ctx, trial_id, fallback)
        except SearchExhausted:
            ctx.stop_reason = "exhausted"
            return

        def hear(report: EpochReport, tid: int = trial_id) -> bool | None:
            return _safe_call(ctx, "on_report", tid, optimizer.on_report, tid, report.epoch, report.val_loss)

        outcome = run_trial(ctx, trial_id, config, trial_seed(ctx.seed, trial_id), ctx.task.max_epochs, on_report=hear)
        if outcome.status == TrialStatus.CUT:
            return
        failures = failures + 1 if outcome.status == TrialStatus.FAILED else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            ctx.stop_reason = "too many failed trials"
            return
        told = Outcome(outcome.value, outcome.status, outcome.epochs)
        _safe_call(ctx, "tell", trial_id, optimizer.tell, trial_id, config, told)
        trial_id += 1

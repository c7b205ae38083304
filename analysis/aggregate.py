"""Aggregation over seeds per (task, preset, budget, method): how many seeds completed, failed or found no
incumbent; mean, standard error and 95% Student-t interval of each metric; and each method tested against the best
of its group (unpaired, Holm-corrected; see :mod:`analysis.stats`).

Works on the DataFrame of :func:`hpobench_stn.store.load_runs` (one row per run). Never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.stats import ALPHA, against_best, t_interval

GROUP = ["task", "preset", "budget", "method"]
COMPLETED, FAILED, NO_INCUMBENT = "completed", "failed", "no incumbent"


@dataclass(frozen=True)
class Metric:
    """A column of the runs table that a comparison reports."""

    column: str
    label: str
    higher_is_better: bool = False


METRICS = [
    Metric("val_loss", "val loss"),
    Metric("test_loss", "test loss"),
    Metric("incumbent.val_metrics.perplexity", "val ppl"),
    Metric("incumbent.test_metrics.perplexity", "test ppl"),
    Metric("incumbent.test_metrics.accuracy", "test acc", higher_is_better=True),
    Metric("regret", "regret"),
]
COST = [Metric("seconds", "seconds"), Metric("epochs", "epochs"), Metric("trials", "trials")]
#: Trials a model-based sampler's model proposed (the summary's ``proposals``; see ``Optimizer.proposals``).
PROPOSED = "proposals.model"


def standard_error(values: pd.Series) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); NaN for fewer than two values."""
    values = values.dropna()
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def available(runs: pd.DataFrame, metrics: list[Metric]) -> list[Metric]:
    """The metrics that have at least one value in ``runs``."""
    return [m for m in metrics if m.column in runs and pd.to_numeric(runs[m.column], errors="coerce").notna().any()]


def outcome(runs: pd.DataFrame) -> pd.Series:
    """Per run: ``"failed"`` (the method crashed; summary status failed), ``"no incumbent"`` (it ended without a
    finite validation loss: every trial diverged, or the budget ended before the first report) or
    ``"completed"``."""
    status = runs["status"] if "status" in runs else pd.Series("completed", index=runs.index)
    val = pd.to_numeric(runs["val_loss"], errors="coerce") if "val_loss" in runs else pd.Series(np.nan, runs.index)
    finite = pd.Series(np.isfinite(val.to_numpy(dtype=float)), index=runs.index)
    out = pd.Series(COMPLETED, index=runs.index)
    out[~finite | (status == "no_result")] = NO_INCUMBENT
    out[status == "failed"] = FAILED
    return out


def metric_values(group: pd.DataFrame, column: str) -> pd.Series:
    """The finite values of ``column`` over the runs of ``group`` that completed with an incumbent."""
    if column not in group:
        return pd.Series(dtype=float)
    values = pd.to_numeric(group.loc[outcome(group) == COMPLETED, column], errors="coerce")
    return values[np.isfinite(values)]


def summarize(runs: pd.DataFrame, metrics: list[Metric] | None = None) -> pd.DataFrame:
    """One row per (task, preset, budget, method): ``runs``, ``failed``, ``no_incumbent``, ``n`` (runs that
    completed with an incumbent: the seeds every mean is over) and per metric ``.mean``, ``.se``, ``.ci`` (half-width
    of the 95% Student-t interval). Cost columns (seconds, epochs, trials) average over every run that did not
    fail. Where runs count their proposals (model-based samplers), ``proposals.runs`` (runs that did, among those
    that did not fail) and ``start_only`` (those whose model proposed no trial: they never left the random start)."""
    metrics = available(runs, metrics or METRICS)
    cost = available(runs, COST)
    rows = []
    for key, group in runs.groupby(GROUP, sort=True):
        kinds = outcome(group)
        row = dict(zip(GROUP, key, strict=True))
        row |= {"runs": len(group), "n": int((kinds == COMPLETED).sum())}
        row |= {"failed": int((kinds == FAILED).sum()), "no_incumbent": int((kinds == NO_INCUMBENT).sum())}
        for m in metrics:
            values = metric_values(group, m.column)
            row[f"{m.column}.mean"], row[f"{m.column}.ci"] = t_interval(values.tolist())
            row[f"{m.column}.se"] = standard_error(values)
        for m in cost:
            row[f"{m.column}.mean"] = float(pd.to_numeric(group.loc[kinds != FAILED, m.column], errors="coerce").mean())
        if PROPOSED in runs:  # runs made before summaries counted proposals have no such column: nothing is added
            model = pd.to_numeric(group.loc[kinds != FAILED, PROPOSED], errors="coerce").dropna()
            row |= {"proposals.runs": len(model), "start_only": int((model == 0).sum())}
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Mark:
    """The verdict on one cell: ``kind`` is "best", "worse" (differs from the best after Holm), "ns" (no
    significant difference), "nd" (no difference could be detected with these seeds) or "" (no values), with the
    raw and Holm-adjusted p-values."""

    kind: str
    p: float = math.nan
    p_holm: float = math.nan


def compare(runs: pd.DataFrame, metric: Metric, alpha: float = ALPHA) -> dict[tuple, dict[str, Mark]]:
    """Per comparison group (task, preset, budget): the method with the best mean, and every other method tested
    against it (two-sided Mann-Whitney U, Holm's correction over the group's comparisons). Returns
    ``{(task, preset, budget): {method: Mark}}``."""
    out: dict[tuple, dict[str, Mark]] = {}
    if metric.column not in runs:
        return out
    for key, group in runs.groupby(GROUP[:-1], sort=True):
        samples = {m: metric_values(g, metric.column).tolist() for m, g in group.groupby("method", sort=True)}
        means = {m: float(np.mean(v)) for m, v in samples.items() if v}
        if not means:
            continue
        pick = max if metric.higher_is_better else min
        best = pick(sorted(means), key=lambda m: means[m])
        tests = against_best({m: v for m, v in samples.items() if v}, best, alpha)
        marks = {m: Mark("") for m in samples}
        marks[best] = Mark("best")
        for m, test in tests.items():
            kind = "worse" if test.rejected else "ns" if test.detectable else "nd"
            marks[m] = Mark(kind, test.p, test.p_holm)
        out[key] = marks
    return out


def detectable_groups(marks: dict[tuple, dict[str, Mark]]) -> dict[tuple, bool]:
    """Per group: whether any of its comparisons could have shown a difference with its seeds."""
    return {key: any(mark.kind in ("worse", "ns") for mark in group.values()) for key, group in marks.items()}

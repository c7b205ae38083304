"""Aggregation over seeds: mean ± standard error per (task, preset, budget, method), and paired significance.

Works on the DataFrame of :func:`hpobench_stn.store.load_runs` (one row per run). Never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

GROUP = ["task", "preset", "budget", "method"]


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


def standard_error(values: pd.Series) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); NaN for fewer than two values."""
    values = values.dropna()
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def available(runs: pd.DataFrame, metrics: list[Metric]) -> list[Metric]:
    """The metrics that have at least one value in ``runs``."""
    return [m for m in metrics if m.column in runs and runs[m.column].notna().any()]


def summarize(runs: pd.DataFrame, metrics: list[Metric] | None = None) -> pd.DataFrame:
    """One row per (task, preset, budget, method): ``n`` seeds and ``<column>.mean`` / ``<column>.se``."""
    metrics = available(runs, (metrics or METRICS) + COST)
    rows = []
    for key, group in runs.groupby(GROUP, sort=True):
        row = dict(zip(GROUP, key, strict=True))
        row["n"] = int(group["seed"].nunique())
        for m in metrics:
            values = pd.to_numeric(group[m.column], errors="coerce")
            row[f"{m.column}.mean"] = float(values.mean())
            row[f"{m.column}.se"] = standard_error(values)
        rows.append(row)
    return pd.DataFrame(rows)


def best_and_ties(runs: pd.DataFrame, metric: Metric, alpha: float = 0.05) -> dict[tuple, dict[str, bool]]:
    """Per comparison group (task, preset, budget): which method is best by mean, and which are not
    significantly worse than it (one-sided Wilcoxon signed-rank test paired over seeds, p ≥ ``alpha``).

    Returns ``{(task, preset, budget): {method: {"best": bool, "tie": bool}}}``. With fewer than two paired seeds,
    or all paired differences zero, a method is not significantly worse. With n paired seeds the smallest
    attainable one-sided p is 2^-n, so at least five seeds are needed for p < 0.05.
    """
    out: dict[tuple, dict[str, dict[str, bool]]] = {}
    if metric.column not in runs:
        return out
    for key, group in runs.groupby(GROUP[:-1], sort=True):
        table = group.pivot_table(index="seed", columns="method", values=metric.column, aggfunc="first")
        means = table.mean()
        if means.dropna().empty:
            continue
        best = means.idxmax() if metric.higher_is_better else means.idxmin()
        marks: dict[str, dict[str, bool]] = {}
        for method in table.columns:
            paired = table[[best, method]].dropna()
            tie = True
            if method != best and len(paired) >= 2:
                diff = paired[method] - paired[best]
                if metric.higher_is_better:
                    diff = -diff
                if np.any(diff != 0):
                    tie = bool(wilcoxon(diff, alternative="greater", zero_method="zsplit").pvalue >= alpha)
            marks[method] = {"best": method == best, "tie": tie and method != best}
        out[key] = marks
    return out

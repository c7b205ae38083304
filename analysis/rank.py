"""Curves over the fraction of the budget spent: average rank of the methods and normalised regret, as Syne Tune
and HPOBench report them.

Every run's best-so-far validation loss is taken as a step function of the fraction of its budget spent in one unit
(see :func:`analysis.quality.denominators`), NaN before its first report.

- Average rank: at each fraction, for each seed, the methods that ran that seed are ranked by their best-so-far
  value (1 = best; a method with no report yet shares the last place); a method's rank is the mean over its seeds.
  Seeds are only a replicate index here: nothing is paired across methods.
- Normalised regret: the best-so-far value mapped to [0, 1] between the best and the worst value any run of the
  group reached on the grid (0 = the group's best), mean over the method's seeds where every seed has reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from analysis.aggregate import GROUP
from analysis.curves import resample
from analysis.quality import KEY, compared_runs, denominators, reports


def fraction_curves(
    runs: pd.DataFrame, events: pd.DataFrame, unit: str, points: int = 101
) -> dict[tuple, dict[str, dict[object, np.ndarray]]]:
    """``{group: {method: {seed: best-so-far on the grid}}}`` on ``np.linspace(0, 1, points)``."""
    runs = compared_runs(runs)
    amounts, _ = denominators(runs, events, unit)
    grid = np.linspace(0.0, 1.0, points)
    curves = {path: frame for path, frame in reports(events, unit).groupby("path")}
    out: dict[tuple, dict[str, dict[object, np.ndarray]]] = {}
    for _, run in runs.iterrows():
        curve = curves.get(run["path"])
        amount = amounts.get(run["path"])
        if curve is None or not amount or not np.isfinite(amount):
            values = np.full(points, np.nan)
        else:
            values = resample(curve[unit].to_numpy() / amount, curve["best"].to_numpy(), grid)
        key = tuple(run[k] for k in KEY)
        out.setdefault(key, {}).setdefault(run["method"], {}).setdefault(run["seed"], values)
    return out


def average_rank(runs: pd.DataFrame, events: pd.DataFrame, unit: str, points: int = 101) -> pd.DataFrame:
    """Per group, method and budget fraction: the mean rank over seeds (``rank``) and how many seeds (``n``)."""
    grid = np.linspace(0.0, 1.0, points)
    frames = []
    for key, methods in fraction_curves(runs, events, unit, points).items():
        if len(methods) < 2:
            continue
        totals = {m: np.zeros(points) for m in methods}
        counts = dict.fromkeys(methods, 0)
        for seed in sorted({s for seeds in methods.values() for s in seeds}, key=str):
            present = [m for m in sorted(methods) if seed in methods[m]]
            if len(present) < 2:
                continue
            values = np.vstack([methods[m][seed] for m in present])
            ranks = rankdata(np.where(np.isnan(values), np.inf, values), axis=0)
            for i, m in enumerate(present):
                totals[m] += ranks[i]
                counts[m] += 1
        for m in sorted(methods):
            if counts[m]:
                frames.append(
                    pd.DataFrame(
                        dict(zip(GROUP, [*key, m], strict=True))
                        | {"fraction": grid, "rank": totals[m] / counts[m], "n": counts[m], "methods": len(methods)}
                    )
                )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*GROUP, "fraction", "rank"])


def normalised_regret(runs: pd.DataFrame, events: pd.DataFrame, unit: str, points: int = 101) -> pd.DataFrame:
    """Per group, method and budget fraction: ``mean`` normalised regret over seeds (NaN until every seed has
    reported) and ``n`` seeds."""
    grid = np.linspace(0.0, 1.0, points)
    frames = []
    for key, methods in fraction_curves(runs, events, unit, points).items():
        stacked = np.vstack([c for seeds in methods.values() for c in seeds.values()])
        if np.isnan(stacked).all():
            continue
        low, high = np.nanmin(stacked), np.nanmax(stacked)
        span = high - low if high > low else 1.0
        for m in sorted(methods):
            per_seed = (np.vstack(list(methods[m].values())) - low) / span
            mean = per_seed.mean(axis=0)  # NaN until every seed has reported
            frames.append(
                pd.DataFrame(
                    dict(zip(GROUP, [*key, m], strict=True)) | {"fraction": grid, "mean": mean, "n": per_seed.shape[0]}
                )
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*GROUP, "fraction", "mean"])

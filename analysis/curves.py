"""Anytime curves (best validation loss so far against wall-clock, CPU time or epochs) and hyperparameter schedules.

Resampling is a step function that carries the best value observed so far forward and is NaN before a run's
first report, so a curve never shows a value before it was observed. The mean over seeds is drawn only where
every seed has reported. Failed runs and schedule replays are left out. Works on
:func:`hpobench_stn.store.load_events` output; never imports torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import styles

COMPARISON = ["task", "preset", "budget"]  # runs are compared only within one of these groups


def _compared(events: pd.DataFrame) -> pd.DataFrame:
    """Events of every run but failed ones (counted in the tables) and schedule replays (they follow another run's
    schedule; see the replay table)."""
    names = events["method_name"] if "method_name" in events else events["method"]
    keep = names != "replay"
    if "run_status" in events:
        keep &= events["run_status"] != "failed"
    return events[keep]


def _stem(key: tuple[str, str, str]) -> str:
    return "-".join(str(part) for part in key)


def best_so_far(events: pd.DataFrame, x: str = "t") -> pd.DataFrame:
    """Per run: the report events sorted by ``x`` with ``best`` = running minimum of the validation loss."""
    reports = _compared(events)
    reports = reports[reports["event"] == "report"].copy()
    reports["val_loss"] = pd.to_numeric(reports["val_loss"], errors="coerce")
    reports = reports.sort_values(["path", x])
    reports["best"] = reports.groupby("path")["val_loss"].cummin()
    return reports[[*COMPARISON, "method", "seed", "path", x, "val_loss", "best"]]


def resample(curve_x: np.ndarray, curve_y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The step function through (curve_x, curve_y) evaluated on ``grid``: NaN before the first point."""
    order = np.argsort(curve_x, kind="stable")
    xs, ys = np.asarray(curve_x, dtype=float)[order], np.asarray(curve_y, dtype=float)[order]
    idx = np.searchsorted(xs, grid, side="right") - 1
    out = np.full(len(grid), np.nan)
    seen = idx >= 0
    out[seen] = ys[idx[seen]]
    return out


def anytime(events: pd.DataFrame, x: str = "t", points: int = 200, log_x: bool = False) -> pd.DataFrame:
    """Mean ± standard error over seeds of the best-so-far curve, per (task, preset, budget, method), on a
    common grid."""
    curves = best_so_far(events, x)
    rows = []
    for (task, preset, budget, method), group in curves.groupby([*COMPARISON, "method"], sort=True):
        top = float(group[x].max())
        low = max(float(group.loc[group[x] > 0, x].min()), 1e-6) if log_x else 0.0
        grid = np.geomspace(low, top, points) if log_x and top > low else np.linspace(0.0, top, points)
        per_run = np.vstack(
            [resample(run[x].to_numpy(), run["best"].to_numpy(), grid) for _, run in group.groupby("path")]
        )
        complete = ~np.isnan(per_run).any(axis=0)
        n = per_run.shape[0]
        mean = np.where(complete, np.nanmean(np.where(np.isnan(per_run), 0, per_run), axis=0), np.nan)
        se = np.where(complete & (n > 1), per_run.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.nan, np.nan)
        rows.append(
            pd.DataFrame(
                {"task": task, "preset": preset, "budget": budget, "method": method}
                | {x: grid, "mean": mean, "se": se, "n": n}
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def schedules(events: pd.DataFrame) -> pd.DataFrame:
    """Long table of hyperparameter values over training from report events carrying ``hparams``
    (STN's schedule; PBT's too): task, preset, budget, method, seed, epochs, hyperparameter, value."""
    reports = _compared(events)
    reports = reports[reports["event"] == "report"]
    columns = [c for c in reports.columns if c.startswith("hparams.") and not c.startswith("hparams.sigma.")]
    ids = [*COMPARISON, "method", "seed", "path", "epochs"]
    if not columns:
        return pd.DataFrame(columns=[*ids, "hyperparameter", "value"])
    long = reports.melt(
        id_vars=ids,
        value_vars=columns,
        var_name="hyperparameter",
        value_name="value",
    ).dropna(subset=["value"])
    long["hyperparameter"] = long["hyperparameter"].str.removeprefix("hparams.")
    return long


def plot_anytime(
    events: pd.DataFrame, out: Path, x: str = "t", log_y: bool | None = None, formats: tuple[str, ...] = ("png", "pdf")
) -> list[Path]:
    """One figure per (task, preset, budget): mean ± standard error of the best validation loss so far, each
    method in its own style (:mod:`analysis.styles`); named ``anytime-TASK-PRESET-BUDGET-AXIS``."""
    plt = styles.setup()
    data = anytime(events, x)
    written = []
    for key, group in data.groupby(COMPARISON, sort=True):
        fig, ax = plt.subplots(figsize=(6.2, 3.6))
        for method in styles.drawing_order(list(group["method"].unique())):
            line = group[group["method"] == method]
            look = styles.style(method)
            ax.plot(line[x], line["mean"], label=f"{method} (n={int(line['n'].iloc[0])})", **look.kwargs())
            low, high = line["mean"] - line["se"], line["mean"] + line["se"]
            ax.fill_between(line[x], low, high, color=look.color, alpha=0.12, lw=0, zorder=look.zorder - 0.5)
        values = group["mean"].dropna()
        if log_y or (log_y is None and len(values) and values.min() > 0 and values.max() / values.min() > 10):
            ax.set_yscale("log")
        ax.set_xlabel(styles.UNITS[x])
        ax.set_ylabel("best validation loss so far")
        ax.set_title(f"{key[0]} ({key[1]} preset, budget {key[2]}): anytime performance", fontsize=9)
        styles.legend_outside(ax)
        written += styles.save(fig, Path(out) / f"anytime-{_stem(key)}-{x}", formats)
    return written


def plot_schedules(events: pd.DataFrame, out: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """One figure per (task, preset, budget): one panel per hyperparameter, one line per (method, seed) in the
    method's colour; named ``schedules-TASK-PRESET-BUDGET``."""
    plt = styles.setup()
    data = schedules(events)
    written = []
    for key, group in data.groupby(COMPARISON, sort=True):
        names = sorted(group["hyperparameter"].unique())
        cols = min(4, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False, sharex=True)
        for ax, name in zip(axes.flat, names, strict=False):
            for (method, seed), line in group[group["hyperparameter"] == name].groupby(["method", "seed"]):
                look = styles.style(method)
                dash = styles.FALLBACK_LINES[hash_seed(seed) % len(styles.FALLBACK_LINES)]
                strong = styles.base_name(method) in styles.HIGHLIGHTED  # STN's schedules on top, others faint
                ax.plot(
                    line["epochs"],
                    line["value"],
                    label=f"{method} seed {seed}",
                    color=look.color,
                    ls=dash,
                    lw=1.1 if strong else 0.7,
                    alpha=1.0 if strong else 0.45,
                    zorder=look.zorder,
                )
            ax.set_title(name, fontsize=8)
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=6, frameon=False)
        fig.supxlabel("epoch-equivalents spent")
        fig.suptitle(f"{key[0]} ({key[1]} preset, budget {key[2]}): hyperparameter schedules")
        written += styles.save(fig, Path(out) / f"schedules-{_stem(key)}", formats)
    return written


def hash_seed(seed: object) -> int:
    """A seed as a small non-negative integer (seeds are integers; anything else by its text)."""
    return int(seed) if isinstance(seed, int | np.integer) and seed >= 0 else sum(map(ord, str(seed)))

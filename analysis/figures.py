"""Figures over the budget: average rank, normalised regret (tasks with a known optimum) and time to quality.

Each figure is one (task, preset, budget) group, every method in its fixed style (:mod:`analysis.styles`), the
legend outside the data area; PNG and PDF without timestamps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import styles
from analysis.aggregate import metric_values
from analysis.quality import KEY, UNIT_ORDER, Target
from analysis.rank import average_rank, normalised_regret

FORMATS = ("png", "pdf")


def _stem(key: tuple) -> str:
    return "-".join(str(part) for part in key)


def _fraction_label(unit: str, basis: str) -> str:
    spent = "of the budget" if basis == "budget" else "of the most any run spent"
    return f"fraction {spent} ({styles.UNITS[unit]})"


def plot_rank(
    runs: pd.DataFrame,
    events: pd.DataFrame,
    out: Path,
    unit: str,
    basis: dict[tuple, str],
    formats: tuple[str, ...] = FORMATS,
) -> list[Path]:
    """``rank-TASK-PRESET-BUDGET-UNIT``: each method's average rank (1 = best) against the budget fraction."""
    plt = styles.setup()
    data = average_rank(runs, events, unit)
    written = []
    for key, group in data.groupby(KEY, sort=True):
        fig, ax = plt.subplots(figsize=(6.2, 3.6))
        for method in styles.drawing_order(list(group["method"].unique())):
            line = group[group["method"] == method]
            label = f"{method} (n={int(line['n'].iloc[0])})"
            ax.plot(
                line["fraction"], line["rank"], label=label, drawstyle="steps-post", **styles.style(method).kwargs()
            )
        ax.set_ylim(int(group["methods"].max()) + 0.5, 0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel(_fraction_label(unit, basis.get(key, "budget")))
        ax.set_ylabel("average rank (1 = best)")
        ax.set_title(f"{key[0]} ({key[1]} preset, budget {key[2]}): average rank over the budget", fontsize=9)
        styles.legend_outside(ax)
        written += styles.save(fig, Path(out) / f"rank-{_stem(key)}-{unit}", formats)
    return written


def plot_regret(
    runs: pd.DataFrame,
    events: pd.DataFrame,
    out: Path,
    unit: str,
    basis: dict[tuple, str],
    formats: tuple[str, ...] = FORMATS,
) -> list[Path]:
    """``regret-TASK-PRESET-BUDGET-UNIT`` for groups whose runs record the exact regret (a known optimum): mean
    normalised regret of the best validation loss so far (log scale), the exact final regret in the legend."""
    plt = styles.setup()
    data = normalised_regret(runs, events, unit)
    written = []
    exact = runs[runs["regret"].notna()] if "regret" in runs else runs.iloc[0:0]
    for key, group in data.groupby(KEY, sort=True):
        known = exact[(exact[KEY] == pd.Series(key, index=KEY)).all(axis=1)]
        if known.empty:
            continue
        fig, ax = plt.subplots(figsize=(6.8, 3.6))
        floor = 1e-4
        for method in styles.drawing_order(list(group["method"].unique())):
            line = group[group["method"] == method]
            final = metric_values(known[known["method"] == method], "regret")
            label = f"{method} (regret at end {final.mean():.2g})" if len(final) else method
            values = np.clip(line["mean"].to_numpy(), floor, None)
            ax.plot(line["fraction"], values, label=label, drawstyle="steps-post", **styles.style(method).kwargs())
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel(_fraction_label(unit, basis.get(key, "budget")))
        ax.set_ylabel("normalised regret of best val loss\n(0 = group's best, 1 = worst)")
        ax.set_title(f"{key[0]} ({key[1]} preset, budget {key[2]}): normalised regret", fontsize=9)
        styles.legend_outside(ax)
        written += styles.save(fig, Path(out) / f"regret-{_stem(key)}-{unit}", formats)
    return written


def plot_ttq(
    ttq: pd.DataFrame,
    goal: dict[tuple, Target],
    out: Path,
    basis: dict[str, dict[tuple, str]],
    formats: tuple[str, ...] = FORMATS,
) -> list[Path]:
    """``ttq-TASK-PRESET-BUDGET``: per unit a panel with each method's mean fraction of the budget to reach the
    target (95% interval over the seeds that reached it; × at 1 where no seed did), and the seeds that reached it."""
    plt = styles.setup()
    written = []
    for key, group in ttq.groupby(KEY, sort=True):
        present = [u for u in UNIT_ORDER if u in set(group["unit"])]
        methods = styles.drawing_order(list(group["method"].unique()))
        fig, axes = plt.subplots(
            1, len(present), figsize=(3.3 * len(present) + 1.6, 0.3 * len(methods) + 1.4), squeeze=False, sharey=True
        )
        for ax, unit in zip(axes[0], present, strict=True):
            rows = group[group["unit"] == unit].set_index("method")
            for y, method in enumerate(methods):
                if method not in rows.index:
                    continue
                row, look = rows.loc[method], styles.style(method)
                size = 7 if styles.base_name(method) in styles.HIGHLIGHTED else 5
                if row["reached"]:
                    err = 0 if pd.isna(row["ci"]) else row["ci"]
                    ax.errorbar(row["mean"], y, xerr=err, fmt="o", color=look.color, ms=size, capsize=2, zorder=3)
                else:
                    ax.plot(1.0, y, "x", color=look.color, ms=size, zorder=3)
                ax.annotate(
                    f"{int(row['reached'])}/{int(row['runs'])}",
                    (1.02, y),
                    xycoords=("axes fraction", "data"),
                    fontsize=6,
                    va="center",
                )
            ax.set_xlim(0, 1.05)
            ax.set_xlabel(_fraction_label(unit, basis.get(unit, {}).get(key, "budget")), fontsize=7)
        axes[0][0].set_yticks(range(len(methods)), methods, fontsize=7)
        axes[0][0].invert_yaxis()
        target = goal[key]
        fig.suptitle(
            f"{key[0]} ({key[1]} preset, budget {key[2]}): time to reach val loss {target.value:.4g}\n"
            f"({target.source}; k/n: seeds that reached it, × none did)",
            fontsize=8,
        )
        written += styles.save(fig, Path(out) / f"ttq-{_stem(key)}", formats)
    return written

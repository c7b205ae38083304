"""Time to quality: the fraction of the budget at which a run's best-so-far validation loss first reaches a target.

The default target of a group (task, preset, budget) is the best black-box method's final mean validation loss;
``--target`` sets one. Fractions are taken in every budget unit the events carry: wall-clock seconds ``t``,
CPU-seconds ``cpu_t`` and epoch-equivalents ``epochs``. The denominator is the run's budget in that unit when the
budget has one (a seconds budget is wall-clock, or CPU-seconds when the run's metadata says ``"clock": "cpu"``),
else the largest amount of that unit any run of the group spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.aggregate import FAILED, GROUP, metric_values, outcome
from analysis.stats import t_interval
from hpobench_stn.errors import UserError

KEY = GROUP[:-1]
UNIT_ORDER = ("t", "cpu_t", "epochs")
WHITE_BOX = {"stn", "delta-stn", "replay"}  # every other method is black-box (fixed included)
Targets = dict[tuple[str, ...], float]  # --target: (task[, preset[, budget]]) or () -> value


@dataclass(frozen=True)
class Target:
    """A group's target validation loss and where it came from."""

    value: float
    source: str


def is_black_box(method_name: str) -> bool:
    """True for methods that only see configurations and their validation losses."""
    return method_name not in WHITE_BOX


def parse_targets(specs: list[str] | None) -> Targets:
    """``--target`` values: ``VALUE`` for every group, or ``TASK[/PRESET[/BUDGET]]=VALUE`` for some."""
    out: Targets = {}
    for spec in specs or []:
        where, _, value = spec.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise UserError(
                f"--target {spec!r}: {value!r} is not a number; give VALUE or TASK[/PRESET[/BUDGET]]=VALUE"
            ) from None
        out[tuple(where.split("/")) if where else ()] = number
    return out


def targets(runs: pd.DataFrame, overrides: Targets | None = None) -> dict[tuple, Target]:
    """Per group: the most specific ``overrides`` entry that matches it, else the best black-box method's mean
    final validation loss over its seeds that completed (groups without a black-box method get none)."""
    out: dict[tuple, Target] = {}
    for key, group in runs.groupby(KEY, sort=True):
        matches = [k for k in (overrides or {}) if tuple(key[: len(k)]) == k]
        if matches:
            chosen = max(matches, key=len)
            out[key] = Target(overrides[chosen], "set with --target")
            continue
        names = group["method_name"] if "method_name" in group else group["method"]
        means = {
            method: float(values.mean())
            for method, rows in group[names.map(is_black_box)].groupby("method", sort=True)
            if len(values := metric_values(rows, "val_loss"))
        }
        if means:
            best = min(sorted(means), key=means.get)
            out[key] = Target(means[best], f"best black-box final mean val loss ({best})")
    return out


def units(events: pd.DataFrame) -> list[str]:
    """The budget units the events are stamped with."""
    return [u for u in UNIT_ORDER if u in events and pd.to_numeric(events[u], errors="coerce").notna().any()]


def budget_amount(run: pd.Series, unit: str) -> float | None:
    """The run's budget in ``unit``, or None when its budget is not in that unit."""

    def number(column: str) -> float | None:
        value = run.get(column)
        return float(value) if value is not None and not pd.isna(value) else None

    if unit == "epochs":
        return number("meta.budget.epochs")
    clock = run.get("meta.clock")
    clock = "wall" if clock is None or pd.isna(clock) else clock
    if (unit == "t" and clock != "cpu") or (unit == "cpu_t" and clock == "cpu"):
        return number("meta.budget.seconds")
    return None


def denominators(runs: pd.DataFrame, events: pd.DataFrame, unit: str) -> tuple[dict[str, float], dict[tuple, str]]:
    """({run path: amount of ``unit`` that is the whole budget}, {group: "budget" or "largest spent"})."""
    spent = pd.to_numeric(events[unit], errors="coerce").groupby(events["path"]).max() if unit in events else None
    amounts: dict[str, float] = {}
    basis: dict[tuple, str] = {}
    for key, group in runs.groupby(KEY, sort=True):
        budgets = [budget_amount(row, unit) for _, row in group.iterrows()]
        if all(b is not None and b > 0 for b in budgets):
            amounts |= dict(zip(group["path"], budgets, strict=True))
            basis[key] = "budget"
        else:
            largest = float(spent.reindex(group["path"]).max()) if spent is not None else math.nan
            amounts |= {path: largest for path in group["path"]}
            basis[key] = "largest spent"
    return amounts, basis


def reports(events: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Report events with a validation loss, per run sorted by ``unit``, with ``best`` = the best so far."""
    if events.empty or unit not in events:
        return pd.DataFrame(columns=["path", unit, "val_loss", "best"])
    rows = events[events["event"] == "report"].copy()
    rows["val_loss"] = pd.to_numeric(rows["val_loss"], errors="coerce")
    rows[unit] = pd.to_numeric(rows[unit], errors="coerce")
    rows = rows.dropna(subset=[unit]).sort_values(["path", unit], kind="stable")
    rows["best"] = rows.groupby("path")["val_loss"].cummin()
    return rows


def compared_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs curves and times are over: all but failed runs and schedule replays."""
    names = runs["method_name"] if "method_name" in runs else runs["method"]
    return runs[(names != "replay") & (outcome(runs) != FAILED)]


def time_to_quality(runs: pd.DataFrame, events: pd.DataFrame, goal: dict[tuple, Target], unit: str) -> pd.DataFrame:
    """One row per run that did not fail: its group, method, seed, ``fraction`` of the budget in ``unit`` at
    which its best-so-far validation loss first reached the group's target (NaN if it never did), ``reached``."""
    runs = compared_runs(runs)
    amounts, _ = denominators(runs, events, unit)
    curves = {path: frame for path, frame in reports(events, unit).groupby("path")}
    rows = []
    for _, run in runs.iterrows():
        key = tuple(run[k] for k in KEY)
        if key not in goal:
            continue
        curve = curves.get(run["path"])
        hit = curve[curve["best"] <= goal[key].value] if curve is not None else None
        first = float(hit[unit].iloc[0]) / amounts[run["path"]] if hit is not None and len(hit) else math.nan
        rows.append(dict(zip(GROUP, [*key, run["method"]], strict=True)) | {"seed": run["seed"], "fraction": first})
    out = pd.DataFrame(rows, columns=[*GROUP, "seed", "fraction"])
    return out.assign(reached=out["fraction"].notna(), unit=unit)


def summarize_ttq(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (task, preset, budget, method, unit): ``runs``, ``reached``, and ``mean`` / ``ci`` (95% Student-t
    half-width) of the fraction over the seeds that reached the target (seeds that never did are left out)."""
    rows = []
    for key, group in per_run.groupby([*GROUP, "unit"], sort=True):
        reached = group.loc[group["reached"], "fraction"].to_numpy(dtype=float)
        mean, ci = t_interval(reached.tolist())
        rows.append(
            dict(zip([*GROUP, "unit"], key, strict=True))
            | {
                "runs": len(group),
                "reached": len(reached),
                "mean": mean,
                "ci": ci,
            }
        )
    return pd.DataFrame(rows, columns=[*GROUP, "unit", "runs", "reached", "mean", "ci"])


def all_units(runs: pd.DataFrame, events: pd.DataFrame, goal: dict[tuple, Target]) -> pd.DataFrame:
    """:func:`summarize_ttq` for every unit the events carry, stacked."""
    frames = [summarize_ttq(time_to_quality(runs, events, goal, unit)) for unit in units(events)]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*GROUP, "unit"])

"""Each run group's protocol, as the runs recorded it: budget and its unit, clock, trial length, threads, seeds,
commit, package versions, machine, load average and CPU time. A field a run did not record (older runs lack some)
reads "not recorded".
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from analysis.quality import KEY
from analysis.styles import UNITS

NOT_RECORDED = "not recorded"


def _present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str) and value == "")


def _distinct(values: Iterable[object]) -> list[str]:
    out: list[str] = []
    for value in values:
        if _present(value) and str(value) not in out:
            out.append(str(value))
    return out


def _column(rows: pd.DataFrame, column: str) -> list[object]:
    return rows[column].tolist() if column in rows else []


def _joined(rows: pd.DataFrame, column: str, fmt=str) -> str:
    values = _distinct(fmt(v) for v in _column(rows, column) if _present(v))
    return ", ".join(values) if values else NOT_RECORDED


def _budget(rows: pd.DataFrame) -> str:
    parts = []
    for _, row in rows.drop_duplicates("budget").iterrows():
        units = []
        if _present(row.get("meta.budget.seconds")):
            clock = row.get("meta.clock") if _present(row.get("meta.clock")) else "wall"
            units.append(f"{row['meta.budget.seconds']:g} {UNITS['cpu_t' if clock == 'cpu' else 't']}")
        if _present(row.get("meta.budget.epochs")):
            units.append(f"{row['meta.budget.epochs']:g} {UNITS['epochs']}")
        parts.append(f"{row['budget']} ({' and '.join(units) if units else 'unit not recorded'})")
    return "; ".join(parts)


def _trial_length(rows: pd.DataFrame) -> str:
    recorded = _joined(rows, "meta.trial_epochs", lambda v: f"{v:g} epochs")
    if recorded != NOT_RECORDED:
        return recorded
    preset = _joined(rows, "meta.max_epochs", lambda v: f"{v:g}")
    return NOT_RECORDED + (f" (the preset's trial: {preset} epochs)" if preset != NOT_RECORDED else "")


def _versions(rows: pd.DataFrame) -> str:
    columns = sorted(c for c in rows.columns if c.startswith("meta.versions."))
    combos = _distinct(
        " · ".join(f"{c.removeprefix('meta.versions.')} {row[c]}" for c in columns if _present(row[c]))
        for _, row in rows.iterrows()
    )
    return " | ".join(combos) if combos else NOT_RECORDED


def _machine(rows: pd.DataFrame) -> str:
    combos = _distinct(
        ", ".join(
            text
            for text in (
                row.get("meta.device.machine") if _present(row.get("meta.device.machine")) else None,
                f"{row['meta.device.cpu_count']:g} CPUs" if _present(row.get("meta.device.cpu_count")) else None,
                row.get("meta.device.platform") if _present(row.get("meta.device.platform")) else None,
            )
            if text
        )
        for _, row in rows.iterrows()
    )
    return " | ".join(c for c in combos if c) or NOT_RECORDED


def _threads(rows: pd.DataFrame) -> str:
    recorded = _joined(rows, "meta.threads", lambda v: f"{v:g}" if isinstance(v, int | float) else str(v))
    if recorded != NOT_RECORDED:
        return recorded
    torch = _joined(rows, "meta.device.torch_threads", lambda v: f"{v:g}")
    return f"torch threads {torch}" if torch != NOT_RECORDED else NOT_RECORDED


def _load(rows: pd.DataFrame) -> str:
    def mean_of(column: str) -> str | None:
        values = [v for v in _column(rows, column) if isinstance(v, list | tuple) and len(v) == 3]
        if not values:
            return None
        return " / ".join(f"{sum(v[i] for v in values) / len(values):.2f}" for i in range(3))

    start, end = mean_of("load_average_start"), mean_of("load_average_end")
    if start is None and end is None:
        return NOT_RECORDED
    return f"start {start or NOT_RECORDED}; end {end or NOT_RECORDED} (1/5/15 min, mean over runs)"


def _seconds(rows: pd.DataFrame, column: str) -> str:
    values = [float(v) for v in _column(rows, column) if _present(v)]
    return f"{sum(values) / len(values):.1f} (mean of {len(values)})" if values else NOT_RECORDED


def _commit(rows: pd.DataFrame) -> str:
    out = []
    for _, row in rows.iterrows():
        commit = row.get("meta.git.commit")
        if not _present(commit):
            continue
        dirty = row.get("meta.git.dirty")
        text = str(commit)[:10] + (" (dirty)" if _present(dirty) and bool(dirty) else "")
        if text not in out:
            out.append(text)
    return ", ".join(out) if out else NOT_RECORDED


def _cost_factors(rows: pd.DataFrame) -> str:
    columns = sorted(c for c in rows.columns if c.startswith("meta.cost_factors."))
    combos = _distinct(
        ", ".join(f"{c.removeprefix('meta.cost_factors.')}={row[c]:g}" for c in columns if _present(row[c]))
        for _, row in rows.iterrows()
    )
    return " | ".join(c for c in combos if c) or NOT_RECORDED


FIELDS = {
    "seeds": lambda rows: ", ".join(str(s) for s in sorted(rows["seed"].unique(), key=str)),
    "budget": _budget,
    "clock": lambda rows: _joined(rows, "meta.clock"),
    "trial length": _trial_length,
    "threads": _threads,
    "cost factors": _cost_factors,
    "commit": _commit,
    "versions": _versions,
    "machine": _machine,
    "load average": _load,
    "CPU seconds": lambda rows: _seconds(rows, "cpu_seconds"),
    "wall seconds": lambda rows: _seconds(rows, "wall_seconds"),
}


def protocol(runs: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """Per (task, preset, budget): one row per method with every protocol field (see ``FIELDS``)."""
    out = {}
    for key, group in runs.groupby(KEY, sort=True):
        rows = [
            {"method": method} | {name: field(rows) for name, field in FIELDS.items()}
            for method, rows in group.groupby("method", sort=True)
        ]
        out[key] = pd.DataFrame(rows)
    return out


def split_common(table: pd.DataFrame) -> tuple[dict[str, str], pd.DataFrame]:
    """({field: value} for the fields every method shares, the table of the fields that differ by method)."""
    common = {c: str(table[c].iloc[0]) for c in table.columns if c != "method" and table[c].nunique() == 1}
    return common, table.drop(columns=list(common))

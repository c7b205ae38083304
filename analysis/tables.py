"""Comparison tables from stored runs: Markdown, LaTeX and CSV; and the STN paper's table layout.

Each cell is ``mean ± standard error`` over seeds. Per column and comparison group (task, preset, budget) the best
method is in bold, and methods not significantly worse than it (paired Wilcoxon signed-rank over seeds, see
:func:`analysis.aggregate.best_and_ties`) carry a dagger.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.aggregate import COST, GROUP, METRICS, Metric, available, best_and_ties, summarize
from hpobench_stn.errors import UserError

PAPER_METHOD_ORDER = [
    "grid",
    "random",
    "tpe",
    "gp",
    "cmaes",
    "skopt-gp",
    "skopt-forest",
    "asha",
    "hyperband",
    "pbt",
    "fixed",
    "stn",
    "delta-stn",
]


def _number(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def _cell(mean: float, se: float) -> str:
    if isinstance(mean, float) and math.isnan(mean):
        return "–"
    return _number(mean) if isinstance(se, float) and math.isnan(se) else f"{_number(mean)} ± {_number(se, 2)}"


def _method_order(methods: list[str]) -> list[str]:
    """The paper's order by method name, a method's labelled variants (``asha [num_cpus=1]``) after its name."""
    rank = {name: i for i, name in enumerate(PAPER_METHOD_ORDER)}
    return sorted(methods, key=lambda m: (rank.get(m.split(" [")[0], len(rank)), m.split(" [")[0], m))


def compared(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that enter comparisons: all but schedule replays, which have a table of their own."""
    names = runs["method_name"] if "method_name" in runs else runs["method"]
    return runs[names != "replay"]


def comparison(runs: pd.DataFrame, metrics: list[Metric] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, marks): the summary table and, per metric cell, ``""``, ``"best"`` or ``"tie"``."""
    runs = compared(runs)
    if runs.empty:
        raise UserError("no runs to compare (only schedule replays?): use --format replay for those")
    metrics = available(runs, metrics or METRICS)
    summary = summarize(runs, metrics)
    marks = pd.DataFrame(index=summary.index)
    for m in metrics:
        decided = best_and_ties(runs, m)
        marks[m.column] = [
            ("best" if flags["best"] else "tie" if flags["tie"] else "")
            if (flags := decided.get(tuple(row[g] for g in GROUP[:-1]), {}).get(row["method"]))
            else ""
            for _, row in summary.iterrows()
        ]
    order = {m: i for i, m in enumerate(_method_order(list(summary["method"].unique())))}
    summary = summary.assign(_order=summary["method"].map(order)).sort_values([*GROUP[:-1], "_order"])
    return summary.drop(columns="_order"), marks.loc[summary.index]


def _formatted(runs: pd.DataFrame, bold: tuple[str, str], dagger: str) -> pd.DataFrame:
    summary, marks = comparison(runs)
    metrics = available(runs, METRICS)
    cost = available(runs, COST)
    rows = []
    for idx, row in summary.iterrows():
        out = {g: row[g] for g in GROUP}
        out["seeds"] = row["n"]
        for m in metrics:
            text = _cell(row[f"{m.column}.mean"], row[f"{m.column}.se"])
            mark = marks.at[idx, m.column]
            out[m.label] = (
                f"{bold[0]}{text}{bold[1]}" if mark == "best" else f"{text}{dagger}" if mark == "tie" else text
            )
        for m in cost:
            out[m.label] = _number(row[f"{m.column}.mean"])
        rows.append(out)
    return pd.DataFrame(rows)


def to_markdown(runs: pd.DataFrame) -> str:
    """The comparison as a Markdown table (bold: best; †: not significantly worse than the best)."""
    table = _formatted(runs, ("**", "**"), " †")
    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    note = (
        "\nMean ± standard error over seeds. **Bold**: best mean in its column and group; †: not significantly "
        "worse than the best (one-sided Wilcoxon signed-rank test paired over seeds, p ≥ 0.05).\n"
    )
    return "\n".join([header, rule, *body]) + "\n" + note


def to_latex(runs: pd.DataFrame) -> str:
    """The comparison as a LaTeX tabular (booktabs)."""
    table = _formatted(runs, (r"\textbf{", "}"), r"$^\dagger$")
    cols = "l" * len(GROUP) + "r" * (len(table.columns) - len(GROUP))
    lines = [rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(table.columns) + r" \\", r"\midrule"]
    for row in table.itertuples(index=False):
        lines.append(" & ".join(str(v).replace("±", r"$\pm$").replace("_", r"\_") for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(runs: pd.DataFrame) -> str:
    """The numbers (means, standard errors, seeds, marks) as CSV, unrounded."""
    summary, marks = comparison(runs)
    marked = summary.join(marks.add_suffix(".mark"))
    return marked.to_csv(index=False)


def paper_table(runs: pd.DataFrame) -> str:
    """The STN paper's layout: one row per method; PTB as validation / test perplexity, CIFAR-10 and the
    quadratic task as validation / test loss (mean over seeds), Markdown. A task run at several presets or
    budgets gets a pair of columns for each, labelled with them."""
    summary, _ = comparison(runs)
    columns: list[tuple[tuple[str, str, str], str, str]] = []
    keys = list(summary[GROUP[:-1]].drop_duplicates().itertuples(index=False, name=None))
    for key in sorted(keys):
        task = key[0]
        sub = summary[(summary[GROUP[:-1]] == pd.Series(key, index=GROUP[:-1])).all(axis=1)]
        name = task if sum(k[0] == task for k in keys) == 1 else f"{task} ({key[1]}, {key[2]})"
        if sub.get("incumbent.test_metrics.perplexity.mean", pd.Series(dtype=float)).notna().any():
            columns += [
                (key, "incumbent.val_metrics.perplexity", f"{name} val ppl"),
                (key, "incumbent.test_metrics.perplexity", f"{name} test ppl"),
            ]
        else:
            columns += [(key, "val_loss", f"{name} val loss"), (key, "test_loss", f"{name} test loss")]
    methods = _method_order(list(summary["method"].unique()))
    header = "| method | " + " | ".join(label for _, _, label in columns) + " |"
    lines = [header, "| --- |" + " --- |" * len(columns)]
    for method in methods:
        cells = []
        for key, column, _ in columns:
            hit = summary[(summary[GROUP[:-1]] == pd.Series(key, index=GROUP[:-1])).all(axis=1)]
            hit = hit[hit["method"] == method]
            cells.append(_number(float(hit[f"{column}.mean"].iloc[0])) if len(hit) else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _run_tail(path: str) -> tuple[str, ...]:
    return Path(path).parts[-5:]


def replay_table(runs: pd.DataFrame) -> str:
    """The schedule ablation: per source run and replay length, the STN run itself against fixed-configuration
    trainings that replay its schedule (``replay`` mode ``schedule``) or hold its final or best-checkpoint values
    (Markdown; validation / test loss of each run's incumbent, mean over the replay run's seeds). Replays of
    different lengths (``epochs``) are separate rows, never pooled."""
    if "settings.schedule" not in runs:
        return "no replay runs\n"
    replays = runs[runs["method_name"] == "replay"]
    header = (
        "| source run | source val / test | replay epochs | schedule replayed | final value fixed | best value fixed |"
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- |"]
    tails = runs["path"].map(_run_tail)
    # sources by task/preset/method/budget/seed, not by path: folders move between machines
    replays = replays.assign(source=replays["settings.schedule"].map(_run_tail))
    for (source, epochs), group in replays.groupby(["source", "settings.epochs"], sort=True):
        origin = runs[tails == source]
        name = "/".join(source)
        cells = [
            f"{_number(origin['val_loss'].iloc[0])} / {_number(origin['test_loss'].iloc[0])}" if len(origin) else "–",
            str(int(epochs)),
        ]
        for mode in ("schedule", "final", "best"):
            hit = group[group["settings.mode"] == mode]
            cells.append(f"{_number(hit['val_loss'].mean())} / {_number(hit['test_loss'].mean())}" if len(hit) else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

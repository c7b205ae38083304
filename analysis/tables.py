"""Comparison tables from stored runs: Markdown, LaTeX and CSV; and the STN paper's table layout.

Each cell is the mean ± the half-width of the 95% Student-t interval over the seeds that completed with an
incumbent; every row counts its seeds that completed, failed and found no incumbent. Per column and comparison
group (task, preset, budget) the best mean is in bold, and every other method is tested against it (two-sided
Mann-Whitney U, Holm-corrected; see :func:`analysis.aggregate.compare`). With events, a time-to-quality column per
budget unit (see :mod:`analysis.quality`). A model-based sampler whose runs never left their random start (no trial
proposed by the model) is marked † after its name (†k/n: k of its n runs), with a note under the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.aggregate import COST, FAILED, GROUP, METRICS, Mark, Metric, available, compare, outcome, summarize
from analysis.quality import KEY, Target, Targets, all_units, targets
from analysis.stats import ALPHA, holm, smallest_p
from analysis.styles import UNIT_NAMES
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
TEST_NOTE = (
    "Test: each method against the best mean of its group, two-sided Mann-Whitney U (unpaired: runs share nothing "
    "at a seed), Holm-corrected over the group's comparisons, α = 0.05."
)


def _number(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def _cell(mean: float, half: float, digits: int = 4) -> str:
    if isinstance(mean, float) and math.isnan(mean):
        return "–"
    if isinstance(half, float) and math.isnan(half):
        return _number(mean, digits)
    return f"{_number(mean, digits)} ± {_number(half, 2)}"


def _method_order(methods: list[str]) -> list[str]:
    """The paper's order by method name, a method's labelled variants (``asha [num_cpus=1]``) after its name."""
    rank = {name: i for i, name in enumerate(PAPER_METHOD_ORDER)}
    return sorted(methods, key=lambda m: (rank.get(m.split(" [")[0], len(rank)), m.split(" [")[0], m))


def compared(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that enter comparisons: all but schedule replays, which have a table of their own."""
    names = runs["method_name"] if "method_name" in runs else runs["method"]
    return runs[names != "replay"]


def _key(row: pd.Series) -> tuple:
    return tuple(row[g] for g in KEY)


@dataclass
class Comparison:
    """Everything a comparison table shows: ``summary`` (one row per task, preset, budget, method, in table
    order), ``marks`` (per metric column, the :class:`~analysis.aggregate.Mark` of each row), ``ttq`` (time to
    quality per unit, empty without events), the groups' targets, and the groups where no comparison could be
    significant (``undetectable``: group → (seeds of the best, comparisons, smallest attainable Holm p))."""

    summary: pd.DataFrame
    marks: dict[str, list[Mark]]
    metrics: list[Metric]
    cost: list[Metric]
    ttq: pd.DataFrame = field(default_factory=pd.DataFrame)
    goal: dict[tuple, Target] = field(default_factory=dict)
    undetectable: dict[tuple, tuple[int, int, float]] = field(default_factory=dict)

    @property
    def units(self) -> list[str]:
        """The budget units with a time-to-quality column."""
        return [u for u in ("t", "cpu_t", "epochs") if not self.ttq.empty and u in set(self.ttq["unit"])]


def build(
    runs: pd.DataFrame,
    events: pd.DataFrame | None = None,
    overrides: Targets | None = None,
    metrics: list[Metric] | None = None,
) -> Comparison:
    """The comparison of ``runs`` (schedule replays left out); with ``events`` also time to quality, towards
    :func:`analysis.quality.targets` (``overrides``: ``--target``)."""
    runs = compared(runs)
    if runs.empty:
        raise UserError("no runs to compare (only schedule replays?): use --format replay for those")
    metrics = available(runs, metrics or METRICS)
    summary = summarize(runs, metrics)
    order = {m: i for i, m in enumerate(_method_order(list(summary["method"].unique())))}
    summary = summary.assign(_order=summary["method"].map(order)).sort_values([*KEY, "_order"])
    summary = summary.drop(columns="_order").reset_index(drop=True)
    marks = {}
    for m in metrics:
        decided = compare(runs, m)
        marks[m.column] = [decided.get(_key(row), {}).get(row["method"], Mark("")) for _, row in summary.iterrows()]
    result = Comparison(summary, marks, metrics, available(runs, COST))
    result.undetectable = _undetectable(summary, marks.get("val_loss", []))
    if events is not None and not events.empty:
        result.goal = targets(runs, overrides)
        result.ttq = all_units(runs, events, result.goal)
    return result


def _undetectable(summary: pd.DataFrame, marks: list[Mark]) -> dict[tuple, tuple[int, int, float]]:
    """Groups whose every validation-loss comparison is "nd", with what made them so."""
    out = {}
    for key, rows in summary.groupby(KEY, sort=False):
        kinds = [marks[i].kind for i in rows.index] if marks else []
        if "nd" not in kinds or any(k in ("worse", "ns") for k in kinds):
            continue
        best = rows.index[kinds.index("best")]
        others = [i for i, k in zip(rows.index, kinds, strict=True) if k == "nd"]
        floor = min(holm([smallest_p(int(summary.at[i, "n"]), int(summary.at[best, "n"])) for i in others]))
        out[key] = (int(summary.at[best, "n"]), len(others), floor)
    return out


def _built(runs: pd.DataFrame | Comparison, events: pd.DataFrame | None, overrides: Targets | None) -> Comparison:
    return runs if isinstance(runs, Comparison) else build(runs, events, overrides)


def comparison(runs: pd.DataFrame, metrics: list[Metric] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, marks): the summary table and, per metric cell, ``""``, ``"best"``, ``"worse"``, ``"ns"`` or
    ``"nd"`` (see :class:`~analysis.aggregate.Mark`)."""
    result = build(runs, metrics=metrics)
    marks = pd.DataFrame({col: [m.kind for m in kinds] for col, kinds in result.marks.items()})
    return result.summary, marks.set_axis(result.summary.index)


SYMBOLS = {
    "md": {"bold": ("**", "**"), "worse": " \\*", "nd": " ?", "start": " †"},
    "latex": {"bold": (r"\textbf{", "}"), "worse": r"$^{*}$", "nd": r"$^{?}$", "start": r"$^{\dagger}$"},
    "html": {"bold": ("<strong>", "</strong>"), "worse": " *", "nd": " ?", "start": " †"},
}
START_NOTE = (
    "†: random start only: the sampler's model proposed no trial of these runs (only the initial configuration and "
    "random ones), so the row measures its random start, not its model (†k/n: in k of the n runs that counted "
    "their proposals)."
)


def start_only(row: pd.Series) -> str:
    """``""``, ``"all"`` (no run of the row left its random start) or ``"k/n"`` (k of its n runs did not)."""
    k, n = row.get("start_only", math.nan), row.get("proposals.runs", math.nan)
    if pd.isna(k) or pd.isna(n) or k == 0:
        return ""
    return "all" if k == n else f"{int(k)}/{int(n)}"


def _ttq_cell(result: Comparison, row: pd.Series, unit: str) -> str:
    if _key(row) not in result.goal:
        return "–"
    hit = result.ttq[(result.ttq["unit"] == unit) & (result.ttq[GROUP] == row[GROUP]).all(axis=1)]
    if hit.empty:
        return "–"
    h = hit.iloc[0]
    share = f"({int(h['reached'])}/{int(h['runs'])})"
    return f"{_cell(h['mean'], h['ci'], 2)} {share}" if h["reached"] else f"not reached {share}"


def formatted(result: Comparison, style: str = "md") -> pd.DataFrame:
    """The table as text cells in ``style`` ("md", "latex" or "html"; html cells are not yet escaped)."""
    symbols = SYMBOLS[style]
    rows = []
    for idx, row in result.summary.iterrows():
        out = {g: row[g] for g in GROUP}
        if only := start_only(row):
            out["method"] += symbols["start"] + ("" if only == "all" else only)
        out |= {"completed": row["n"], "failed": row["failed"], "no inc.": row["no_incumbent"]}
        for m in result.metrics:
            text = _cell(row[f"{m.column}.mean"], row[f"{m.column}.ci"])
            kind = result.marks[m.column][idx].kind
            bold = symbols["bold"]
            out[m.label] = f"{bold[0]}{text}{bold[1]}" if kind == "best" else text + symbols.get(kind, "")
        for unit in result.units:
            out[f"ttq {UNIT_NAMES[unit]}"] = _ttq_cell(result, row, unit)
        for m in result.cost:
            out[m.label] = _number(row[f"{m.column}.mean"])
        rows.append(out)
    return pd.DataFrame(rows)


def notes(result: Comparison, group: tuple | None = None) -> list[str]:
    """The lines under a table: the test, what the numbers are, time to quality and its targets, and the groups
    where no difference can be detected (all groups, or only ``group``)."""

    def shown(key: tuple) -> bool:
        return group is None or tuple(key) == tuple(group)

    lines = [
        TEST_NOTE + " **Bold**: best mean in its column and group; \\*: differs from the best (Holm-adjusted "
        "p < 0.05); ?: no difference can be detected at this sample size (no outcome of these seeds could reach "
        "p < 0.05 after the correction); unmarked: no significant difference.",
        "Mean ± half-width of the 95% Student-t interval over the seeds that completed with an incumbent "
        "(completed); failed (the method crashed) and no inc. (ended without a finite validation loss: every trial "
        "diverged, or no trial reported) are counted and left out of the mean. Cost columns: mean over runs that "
        "did not fail.",
    ]
    if result.units:
        targets_text = "; ".join(
            f"{'/'.join(map(str, k))}: {_number(t.value)} ({t.source})"
            for k, t in sorted(result.goal.items())
            if shown(k)
        )
        lines.append(
            "ttq (time to quality): fraction of the budget (wall-clock, CPU time or epoch-equivalents; of the "
            "largest amount any run of the group spent where the budget is in another unit) at which the best "
            "validation loss so far first reaches the group's target; mean ± 95% interval over the seeds that "
            "reached it (reached/seeds), seeds that never reach it are left out of the mean. Targets: "
            f"{targets_text}."
        )
    if any(start_only(row) and shown(_key(row)) for _, row in result.summary.iterrows()):
        lines.append(START_NOTE)
    for key, (n, m, floor) in sorted(result.undetectable.items()):
        if not shown(key):
            continue
        lines.append(
            f"{'/'.join(map(str, key))}: no difference can be detected at this sample size ({n} seeds of the best "
            f"against each of {m} methods: the smallest attainable Holm-adjusted p is {floor:.2g} ≥ {ALPHA})."
        )
    return lines


def to_markdown(
    runs: pd.DataFrame | Comparison, events: pd.DataFrame | None = None, overrides: Targets | None = None
) -> str:
    """The comparison (of ``runs``, or one already built) as a Markdown table with its notes (bold: best; \\*:
    differs from the best; ?: no difference can be detected with these seeds)."""
    result = _built(runs, events, overrides)
    table = formatted(result, "md")
    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n\n" + "\n\n".join(notes(result)) + "\n"


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX document."""
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_")):
        text = text.replace(char, repl)
    text = text.replace("±", r"$\pm$").replace("≥", r"$\geq$").replace("α", r"$\alpha$")
    return text.replace("†", r"$^{\dagger}$")


def to_latex(
    runs: pd.DataFrame | Comparison, events: pd.DataFrame | None = None, overrides: Targets | None = None
) -> str:
    """The comparison as a LaTeX tabular (booktabs), its notes below it."""
    result = _built(runs, events, overrides)
    table = formatted(result, "latex")
    cols = "l" * len(GROUP) + "r" * (len(table.columns) - len(GROUP))
    lines = [rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(table.columns) + r" \\", r"\midrule"]
    for row in table.itertuples(index=False):
        lines.append(" & ".join(str(v).replace("±", r"$\pm$").replace("_", r"\_") for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in notes(result):
        plain = note.replace("**Bold**", "Bold").replace("\\*", "*")
        lines.append(r"\par\smallskip{\footnotesize " + latex_escape(plain) + "}")
    return "\n".join(lines) + "\n"


def to_csv(
    runs: pd.DataFrame | Comparison, events: pd.DataFrame | None = None, overrides: Targets | None = None
) -> str:
    """The numbers, unrounded: per row the seed counts, each metric's mean, standard error, 95% half-width, mark
    and raw / Holm-adjusted p; time to quality per unit; the group's target."""
    result = _built(runs, events, overrides)
    table = result.summary.copy()
    for m in result.metrics:
        marks = result.marks[m.column]
        table[f"{m.column}.mark"] = [k.kind for k in marks]
        table[f"{m.column}.p"] = [k.p for k in marks]
        table[f"{m.column}.p_holm"] = [k.p_holm for k in marks]
    for unit in result.units:
        ttq = result.ttq[result.ttq["unit"] == unit].set_index(GROUP)
        index = pd.MultiIndex.from_frame(table[GROUP])
        for col in ("mean", "ci", "reached", "runs"):
            table[f"ttq.{unit}.{col}"] = ttq[col].reindex(index).to_numpy()
    if result.goal:
        table["target"] = [
            result.goal[_key(r)].value if _key(r) in result.goal else math.nan for _, r in table.iterrows()
        ]
    return table.to_csv(index=False)


def paper_table(runs: pd.DataFrame, *_: object) -> str:
    """The STN paper's layout: one row per method; PTB as validation / test perplexity, CIFAR-10 and the
    quadratic task as validation / test loss (mean over seeds), Markdown. A task run at several presets or
    budgets gets a pair of columns for each, labelled with them."""
    runs = compared(runs)
    if runs.empty:
        raise UserError("no runs to compare (only schedule replays?): use --format replay for those")
    summary = summarize(runs)
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


def replay_table(runs: pd.DataFrame, *_: object) -> str:
    """The schedule ablation: per source run and replay length, the STN run itself against fixed-configuration
    trainings that replay its schedule (``replay`` mode ``schedule``) or hold its final or best-checkpoint values
    (Markdown; validation / test loss of each run's incumbent, mean over the replay run's seeds). Replays of
    different lengths (``epochs``) are separate rows, never pooled."""
    if "settings.schedule" not in runs:
        return "no replay runs\n"
    runs = runs[outcome(runs) != FAILED]
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

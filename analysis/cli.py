"""``python -m hpobench_stn table``, ``plot`` and ``report``: tables, figures and a self-contained HTML report from
stored run folders.

A run folder with a damaged file (a corrupt ``metadata.json`` or ``summary.json``, an unreadable line inside its
event log) is left out with one ``warning:`` line on stderr naming the file (and line); the command goes on with
the rest, and exits 2 with an ``error:`` line only when nothing usable remains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hpobench_stn.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from analysis.quality import Targets

TABLE_FORMATS = {
    "md": "table.md",
    "latex": "table.tex",
    "csv": "table.csv",
    "paper": "paper-table.md",
    "replay": "replay-table.md",
}
KINDS = ["curves", "rank", "regret", "ttq", "schedules"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the ``table``, ``plot`` and ``report`` subcommands."""
    target_help = (
        "time-to-quality target validation loss: VALUE for every group or TASK[/PRESET[/BUDGET]]=VALUE, repeatable "
        "(default: the best black-box method's final mean validation loss in each group)"
    )
    table = sub.add_parser("table", help="comparison tables (Markdown, LaTeX, CSV, the paper's layout) from runs")
    table.add_argument("--runs", nargs="+", required=True, help="run folders or folders containing them")
    table.add_argument("--format", default="md", choices=[*TABLE_FORMATS, "all"], help="default md")
    table.add_argument("--out", default=None, help="folder to write the table file(s) into (default: print)")
    table.add_argument("--target", action="append", default=None, help=target_help)
    plot = sub.add_parser("plot", help="anytime curves, average rank, regret, time to quality, schedules (PNG, PDF)")
    plot.add_argument("--runs", nargs="+", required=True, help="run folders or folders containing them")
    plot.add_argument("--out", required=True, help="folder for the figures")
    plot.add_argument("--kind", default="all", choices=[*KINDS, "all"])
    plot.add_argument("--target", action="append", default=None, help=target_help)
    report = sub.add_parser("report", help="one self-contained HTML page: tables, figures, schedules, protocol")
    report.add_argument("--runs", nargs="+", required=True, help="run folders or folders containing them")
    report.add_argument("--out", required=True, help="folder to write report.html into")
    report.add_argument("--target", action="append", default=None, help=target_help)


def load(paths: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs, events, warnings) of the runs under ``paths`` that ended; each damaged run folder is left out with a
    ``warning:`` line on stderr. A UserError when nothing usable remains."""
    from hpobench_stn.store import load_results

    warnings: list[str] = []

    def damaged(problem: Exception) -> None:
        warnings.append(str(problem))
        print(f"warning: {problem}", file=sys.stderr, flush=True)

    runs, events = load_results(paths, on_damage=damaged)
    if runs.empty:
        where = ", ".join(paths)
        if warnings:
            raise UserError(
                f"no usable runs under {where}: {len(warnings)} damaged run folder(s), see the warnings above"
            )
        raise UserError(f"no completed runs under {where}; run a sweep first or point --runs elsewhere")
    return runs, events, warnings


def dispatch(args: argparse.Namespace) -> int:
    """Run ``table``, ``plot`` or ``report``."""
    from analysis import quality, tables

    overrides = quality.parse_targets(args.target)
    runs, events, warnings = load(args.runs)
    out = _folder(args.out) if args.out is not None else None
    if args.command == "report":
        from analysis.report import write_report

        print(f"wrote {write_report(runs, events, out, list(args.runs), overrides, warnings)}")
        return 0
    if args.command == "table":
        formats = list(TABLE_FORMATS) if args.format == "all" else [args.format]
        result = tables.build(runs, events, overrides) if set(formats) & {"md", "latex", "csv"} else None
        render = {
            "md": lambda: tables.to_markdown(result),
            "latex": lambda: tables.to_latex(result),
            "csv": lambda: tables.to_csv(result),
            "paper": lambda: tables.paper_table(runs),
            "replay": lambda: tables.replay_table(runs),
        }
        for fmt in formats:
            text = render[fmt]()
            if out is None:
                print(text)
            else:
                (out / TABLE_FORMATS[fmt]).write_text(text)
                print(f"wrote {out / TABLE_FORMATS[fmt]}")
        return 0
    for path in plot(runs, events, out, args.kind, overrides):
        print(f"wrote {path}")
    return 0


def plot(
    runs: pd.DataFrame, events: pd.DataFrame, out: Path, kind: str = "all", overrides: Targets | None = None
) -> list[Path]:
    """Write the figures of ``kind`` ("all" or one of ``KINDS``) into ``out``; returns their paths."""
    from analysis import quality
    from analysis.curves import plot_anytime, plot_schedules
    from analysis.figures import plot_rank, plot_regret, plot_ttq

    kinds = KINDS if kind == "all" else [kind]
    written: list[Path] = []
    compared = quality.compared_runs(runs)
    basis = {unit: quality.denominators(compared, events, unit)[1] for unit in quality.units(events)}
    for unit in basis:
        if "curves" in kinds:
            written += plot_anytime(events, out, unit)
        if "rank" in kinds:
            written += plot_rank(runs, events, out, unit, basis[unit])
        if "regret" in kinds:
            written += plot_regret(runs, events, out, unit, basis[unit])
    if "ttq" in kinds:
        goal = quality.targets(runs, overrides)
        written += plot_ttq(quality.all_units(runs, events, goal), goal, out, basis)
    if "schedules" in kinds:
        written += plot_schedules(events, out)
    return written


def _folder(path: str) -> Path:
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write to {path} ({exc.strerror}); choose another folder with --out") from None
    return folder

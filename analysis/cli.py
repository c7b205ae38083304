"""``python -m hpobench_stn table`` and ``plot``: regenerate tables and figures from stored run folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpobench_stn.errors import UserError

TABLE_FORMATS = {
    "md": "table.md",
    "latex": "table.tex",
    "csv": "table.csv",
    "paper": "paper-table.md",
    "replay": "replay-table.md",
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the ``table`` and ``plot`` subcommands."""
    table = sub.add_parser("table", help="comparison tables (Markdown, LaTeX, CSV, the paper's layout) from runs")
    table.add_argument("--runs", nargs="+", required=True, help="run folders or folders containing them")
    table.add_argument("--format", default="md", choices=[*TABLE_FORMATS, "all"], help="default md")
    table.add_argument("--out", default=None, help="folder to write the table file(s) into (default: print)")
    plot = sub.add_parser("plot", help="anytime curves and hyperparameter schedules (PNG and PDF) from runs")
    plot.add_argument("--runs", nargs="+", required=True, help="run folders or folders containing them")
    plot.add_argument("--out", required=True, help="folder for the figures")
    plot.add_argument("--kind", default="all", choices=["curves", "schedules", "all"])


def _load(paths: list[str]):
    from hpobench_stn.store import load_events, load_runs

    runs = load_runs(paths)
    if runs.empty:
        raise UserError(f"no completed runs under {', '.join(paths)}; run a sweep first or point --runs elsewhere")
    return runs, load_events(paths)


def dispatch(args: argparse.Namespace) -> int:
    """Run ``table`` or ``plot``."""
    from analysis import tables

    if args.command == "table":
        runs, _ = _load(args.runs)
        render = {
            "md": tables.to_markdown,
            "latex": tables.to_latex,
            "csv": tables.to_csv,
            "paper": tables.paper_table,
            "replay": tables.replay_table,
        }
        formats = list(TABLE_FORMATS) if args.format == "all" else [args.format]
        for fmt in formats:
            text = render[fmt](runs)
            if args.out is None:
                print(text)
            else:
                out = _folder(args.out)
                (out / TABLE_FORMATS[fmt]).write_text(text)
                print(f"wrote {out / TABLE_FORMATS[fmt]}")
        return 0
    from analysis.curves import plot_anytime, plot_schedules

    _, events = _load(args.runs)
    out = _folder(args.out)
    written = []
    if args.kind in ("curves", "all"):
        written += plot_anytime(events, out, "t") + plot_anytime(events, out, "epochs")
    if args.kind in ("schedules", "all"):
        written += plot_schedules(events, out)
    for path in written:
        print(f"wrote {path}")
    return 0


def _folder(path: str) -> Path:
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write to {path} ({exc.strerror}); choose another folder with --out") from None
    return folder

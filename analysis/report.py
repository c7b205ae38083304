"""``python -m hpobench_stn report``: one self-contained HTML page of a results folder.

The page holds the paper-layout overview, and per run group (task, preset, budget) its protocol, the comparison
table with its notes, and every figure (anytime curves, average rank, normalised regret, time to quality, STN
schedules) embedded as ``data:`` URIs, so it opens from the file system with no server and no network. The same
runs give the same bytes: no timestamps, no temporary paths.
"""

from __future__ import annotations

import base64
import html
import io
import re
import tempfile
from pathlib import Path

import pandas as pd

from analysis import tables
from analysis.curves import plot_anytime, plot_schedules
from analysis.figures import plot_rank, plot_regret, plot_ttq
from analysis.protocol import protocol, split_common
from analysis.quality import KEY, Targets, compared_runs, denominators, units

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 1.5rem auto; max-width: 88rem;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem; }
h3 { margin-bottom: .3rem; }
table { border-collapse: collapse; font-size: .8rem; margin: .4rem 0 .6rem; }
th, td { border: 1px solid #ccc; padding: .15rem .4rem; text-align: right; vertical-align: top; white-space: nowrap; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
td.text { text-align: left; white-space: normal; }
.notes p { font-size: .8rem; color: #333; margin: .2rem 0; max-width: 70rem; }
.warnings { background: #fff4e5; border-left: 4px solid #f0a020; padding: .4rem .8rem; font-size: .85rem; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .75rem; color: #555; }
dl { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem; font-size: .8rem; margin: .3rem 0; }
dt { font-weight: 600; } dd { margin: 0; }
nav ul { columns: 2; font-size: .9rem; }
"""


def _slug(key: tuple) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(map(str, key)).lower()).strip("-")


def _inline(text: str) -> str:
    """Escaped text with the tables' Markdown marks (``**bold**``, ``\\*``) as HTML."""
    out = html.escape(text).replace("\\*", "*")
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def html_table(frame: pd.DataFrame, text_columns: tuple[str, ...] = ()) -> str:
    """A DataFrame as an HTML table (cells escaped; ``**bold**`` kept as bold)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="text">{_inline(str(v))}</td>' if c in text_columns else f"<td>{_inline(str(v))}</td>"
            for c, v in zip(frame.columns, row, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def markdown_table(text: str) -> str:
    """A Markdown table (as the table functions write them) and the paragraphs after it, as HTML."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    rest = [line for line in text.splitlines() if line.strip() and not line.startswith("|")]
    if len(rows) < 2:
        return "".join(f"<p>{_inline(line)}</p>" for line in rest)
    split = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    frame = pd.DataFrame(split[2:], columns=split[0])
    notes = "".join(f"<p>{_inline(line)}</p>" for line in rest)
    return html_table(frame, (split[0][0],)) + (f'<div class="notes">{notes}</div>' if notes else "")


def compact_png(path: Path) -> bytes:
    """The PNG at ``path`` reduced to a 256-colour palette (a quarter of the bytes for line plots; the same input
    gives the same bytes)."""
    from PIL import Image

    with Image.open(path) as image:
        reduced = image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    reduced.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(compact_png(path)).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _figures(runs: pd.DataFrame, events: pd.DataFrame, result: tables.Comparison, folder: Path) -> dict[str, Path]:
    """Every figure of the page, rendered to PNG in ``folder``: {file name: path}."""
    png = ("png",)
    written: list[Path] = []
    basis = {}
    for unit in units(events):
        basis[unit] = denominators(compared_runs(runs), events, unit)[1]
        written += plot_anytime(events, folder, unit, formats=png)
        written += plot_rank(runs, events, folder, unit, basis[unit], formats=png)
        written += plot_regret(runs, events, folder, unit, basis[unit], formats=png)
    if not result.ttq.empty:
        written += plot_ttq(result.ttq, result.goal, folder, basis, formats=png)
    written += plot_schedules(events, folder, formats=png)
    return {p.name: p for p in written}


CAPTIONS = [
    ("anytime", "anytime: best validation loss so far, mean ± s.e. over seeds"),
    ("rank", "rank: average rank over the budget"),
    ("regret", "regret: normalised regret of the best validation loss so far"),
    ("ttq", "ttq: time to quality"),
    ("schedules", "schedules: hyperparameter values over training"),
]


def _group_section(
    key: tuple, result: tables.Comparison, table: pd.DataFrame, proto: pd.DataFrame, figures: dict[str, Path]
) -> str:
    title = f"{key[0]} · {key[1]} preset · budget {key[2]}"
    parts = [f'<section id="{_slug(key)}"><h2>{html.escape(title)}</h2>', "<h3>Protocol</h3>"]
    common, varying = split_common(proto)
    parts.append(
        "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in common.items()) + "</dl>"
    )
    if len(varying.columns) > 1:
        parts.append(html_table(varying, tuple(varying.columns)))
    rows = table[(table[KEY] == pd.Series(key, index=KEY)).all(axis=1)].drop(columns=KEY)
    rows = rows.loc[:, [c for c in rows.columns if (rows[c].astype(str) != "–").any()]]  # this task's metrics
    parts += ["<h3>Comparison</h3>", html_table(rows, ("method",))]
    parts.append('<div class="notes">' + "".join(f"<p>{_inline(n)}</p>" for n in tables.notes(result, key)) + "</div>")
    stem = "-".join(map(str, key))
    parts.append("<h3>Figures</h3>")
    for prefix, caption in CAPTIONS:
        for name in sorted(n for n in figures if n.startswith(f"{prefix}-{stem}")):
            rest = name.removeprefix(f"{prefix}-{stem}").removesuffix(".png").strip("-")
            parts.append(_figure(figures[name], caption + (f" ({rest})" if rest else "")))
    parts.append("</section>")
    return "\n".join(parts)


def render(
    runs: pd.DataFrame,
    events: pd.DataFrame,
    sources: list[str],
    overrides: Targets | None = None,
    warnings: list[str] | None = None,
) -> str:
    """The report page as HTML text."""
    result = tables.build(runs, events, overrides)
    table = tables.formatted(result, "md")
    protocols = protocol(tables.compared(runs))
    groups = sorted(protocols)
    with tempfile.TemporaryDirectory(prefix="hpobench-report-") as tmp:
        figures = _figures(runs, events, result, Path(tmp))
        sections = [_group_section(key, result, table, protocols[key], figures) for key in groups]
    title = "hpobench-stn report"
    head = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>',
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>',
        f"<h1>{title}</h1>",
        f"<p>{len(runs)} runs from {html.escape(', '.join(sources))}: {len(groups)} comparison groups "
        "(task, preset, budget).</p>",
    ]
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        head.append(f'<div class="warnings"><strong>Left out:</strong><ul>{items}</ul></div>')
    links = "".join(f'<li><a href="#{_slug(k)}">{html.escape(" · ".join(map(str, k)))}</a></li>' for k in groups)
    head.append(f"<nav><ul>{links}</ul></nav>")
    head += ["<h2>Overview (the paper's layout: mean over seeds)</h2>", markdown_table(tables.paper_table(runs))]
    replays = tables.replay_table(runs)
    tail = ["<h2>Schedule replays</h2>", markdown_table(replays)] if replays != "no replay runs\n" else []
    return "\n".join([*head, *sections, *tail, "</body></html>"]) + "\n"


def write_report(
    runs: pd.DataFrame,
    events: pd.DataFrame,
    out: Path,
    sources: list[str],
    overrides: Targets | None = None,
    warnings: list[str] | None = None,
) -> Path:
    """Write ``out/report.html`` and return its path."""
    path = Path(out) / "report.html"
    path.write_text(render(runs, events, sources, overrides, warnings), encoding="utf-8")
    return path

"""How figures look: one fixed style per method (colour, line style, width), axis labels with units, and saving
without timestamps so that a regenerated figure is byte-identical.

A method's style is keyed by its name (``asha [num_cpus=1]`` is drawn as ``asha``), so the same method looks the
same in every figure. STN and Delta-STN are drawn thicker, on top of the others, in the two strongest colours.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# budget units of the event stamps, and how an axis names them
UNITS = {"t": "wall-clock seconds", "cpu_t": "CPU-seconds", "epochs": "epoch-equivalents"}
UNIT_NAMES = {"t": "wall-clock", "cpu_t": "CPU time", "epochs": "epochs"}
HIGHLIGHTED = ("stn", "delta-stn")


@dataclass(frozen=True)
class Style:
    """How one method's line is drawn."""

    color: str
    linestyle: Any
    linewidth: float = 1.3
    zorder: float = 2.0
    marker: str | None = None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Axes.plot``."""
        out = {"color": self.color, "linestyle": self.linestyle, "linewidth": self.linewidth, "zorder": self.zorder}
        if self.marker:
            out |= {"marker": self.marker, "markevery": 0.1, "markersize": 3.5}
        return out


DASH = (0, (5, 2))
DOT = (0, (1, 1.5))
DASHDOT = (0, (6, 2, 1.5, 2))
LONG = (0, (9, 3))
# Colours from Paul Tol's and the tab20 palettes, chosen to stay apart; STN's and Delta-STN's are used by no one else.
STYLES: dict[str, Style] = {
    "stn": Style("#d62728", "-", 2.6, 10.0),
    "delta-stn": Style("#1f3fbf", "-", 2.6, 11.0),
    "replay": Style("#8c1d40", DASH, 2.0, 9.0),
    "grid": Style("#000000", DASH),
    "random": Style("#7f7f7f", "-"),
    "tpe": Style("#2ca02c", DASH),
    "gp": Style("#17becf", "-"),
    "cmaes": Style("#ff7f0e", DOT),
    "skopt-gp": Style("#9467bd", DASHDOT),
    "skopt-forest": Style("#8c564b", "-"),
    "asha": Style("#e377c2", DASH),
    "hyperband": Style("#bcbd22", DASHDOT),
    "pbt": Style("#117733", DOT, marker="o"),
    "fixed": Style("#555555", LONG, marker="s"),
    "bohb": Style("#aec7e8", "-", marker="^"),
    "smac": Style("#ffbb78", DASH, marker="v"),
    "hebo": Style("#98df8a", DOT, marker="D"),
    "local-search": Style("#c5b0d5", DASHDOT, marker="x"),
}
FALLBACK_COLOURS = ["#4477aa", "#66ccee", "#228833", "#ccbb44", "#ee6677", "#aa3377", "#bbbbbb", "#332288"]
FALLBACK_LINES = ["-", DASH, DOT, DASHDOT, LONG]


def base_name(method: str) -> str:
    """A method label without its settings: ``asha [num_cpus=1]`` → ``asha``."""
    return method.split(" [")[0]


def style(method: str) -> Style:
    """The style of a method label; a name without a fixed style gets one from a stable hash of the name."""
    name = base_name(method)
    if name in STYLES:
        return STYLES[name]
    digest = int(hashlib.sha1(name.encode()).hexdigest(), 16)
    return Style(FALLBACK_COLOURS[digest % len(FALLBACK_COLOURS)], FALLBACK_LINES[(digest // 8) % 5], marker="+")


def drawing_order(methods: list[str]) -> list[str]:
    """Methods in legend order: STN and Delta-STN first, then the others alphabetically."""
    first = [m for name in HIGHLIGHTED for m in sorted(methods) if base_name(m) == name]
    return first + sorted(m for m in methods if m not in first)


def setup() -> Any:
    """matplotlib on the Agg backend with the project's theme; returns ``pyplot``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt


def legend_outside(ax: Any, **kwargs: Any) -> None:
    """The legend to the right of the data area, never over the curves."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7, frameon=False, **kwargs)


def save(fig: Any, stem: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` without timestamps (so regenerated files are identical), close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        metadata = {"Software": None} if fmt == "png" else {"CreationDate": None, "Producer": None}
        fig.savefig(path, dpi=150, metadata=metadata, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths

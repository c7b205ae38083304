"""Statistics for comparing methods over seeds: Student-t intervals, the two-sided Mann-Whitney U test (exact by
enumeration for small samples, ties included), Holm's step-down correction, and the smallest p-value a test of
given sample sizes can reach, which says when no difference can be detected at all.

Runs of different methods share nothing at the same seed, so every test here is unpaired.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

ALPHA = 0.05
EXACT_LIMIT = 200_000  # enumerate every split of the pooled sample up to this many


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t interval at ``level``); the half-width is NaN for fewer than two
    values."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(values) == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan
    se = float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * se


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test of ``a`` against ``b``. Exact (every split of the pooled,
    mid-ranked sample enumerated, so ties are handled exactly) when there are at most ``EXACT_LIMIT`` splits;
    otherwise the normal approximation with tie correction."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return math.nan
    if math.comb(n1 + n2, n1) > EXACT_LIMIT:
        return float(stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue)
    ranks = stats.rankdata(np.concatenate([a, b]))
    sums = ranks[_splits(n1 + n2, n1)].sum(axis=1)
    centre = n1 * (n1 + n2 + 1) / 2
    observed = abs(ranks[:n1].sum() - centre)
    return float(np.mean(np.abs(sums - centre) >= observed - 1e-9))


@functools.cache
def _splits(n: int, k: int) -> np.ndarray:
    """Every way to choose ``k`` of ``n`` positions, one row each."""
    flat = np.fromiter((i for combo in combinations(range(n), k) for i in combo), dtype=np.int32)
    return flat.reshape(-1, k)


def smallest_p(n1: int, n2: int) -> float:
    """The smallest two-sided p-value the Mann-Whitney U test can give with samples of ``n1`` and ``n2``
    (every value of one sample below every value of the other, no ties): 2 / C(n1 + n2, n1)."""
    if n1 == 0 or n2 == 0:
        return math.nan
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and are not counted as comparisons)."""
    ps = np.asarray(pvalues, dtype=float)
    out = np.full(len(ps), math.nan)
    valid = np.flatnonzero(~np.isnan(ps))
    m = len(valid)
    running = 0.0
    for rank, idx in enumerate(valid[np.argsort(ps[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * ps[idx]))
        out[idx] = running
    return out.tolist()


@dataclass(frozen=True)
class Comparison:
    """One method against the best of its group: raw and Holm-adjusted p, and whether any outcome could have
    been significant with these sample sizes and this many comparisons (``detectable``)."""

    p: float
    p_holm: float
    detectable: bool

    @property
    def rejected(self) -> bool:
        """True when the method differs from the best after Holm's correction."""
        return self.p_holm < ALPHA


def against_best(samples: dict[str, Sequence[float]], best: str, alpha: float = ALPHA) -> dict[str, Comparison]:
    """Each method's sample against the best's, two-sided Mann-Whitney U with Holm's correction over the
    comparisons made. A comparison is ``detectable`` when, with every comparison at its smallest attainable p, Holm
    would reject it: otherwise no outcome of these seeds could show a difference."""
    others = [m for m in samples if m != best and len(samples[m]) and len(samples[best])]
    raw = [mann_whitney(samples[m], samples[best]) for m in others]
    adjusted = holm(raw)
    best_case = holm([smallest_p(len(samples[m]), len(samples[best])) for m in others])
    return {m: Comparison(raw[i], adjusted[i], bool(best_case[i] < alpha)) for i, m in enumerate(others)}

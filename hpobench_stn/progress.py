"""The progress bar of one run: the share of the budget spent, trials, epochs, seconds and the best loss so far."""

from __future__ import annotations

import math
import sys
import time

REFRESH_SECONDS = 0.5  # between progress-bar refreshes


class Progress:
    """A tqdm bar on stderr, refreshed at most every ``REFRESH_SECONDS`` (and always on :meth:`close`)."""

    def __init__(self, description: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=100,
            desc=description,
            unit="%",
            file=sys.stderr,
            bar_format="{desc}: {percentage:3.0f}% of budget |{bar:20}|{postfix}",
            mininterval=REFRESH_SECONDS,
        )
        self._last = -math.inf

    def show(
        self, fraction: float, trials: int, epochs: float, seconds: float, best: float | None, force: bool = False
    ) -> None:
        """Show the run's state (skipped when the last refresh was too recent, unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last < REFRESH_SECONDS:
            return
        self._last = now
        self._bar.n = round(100 * fraction, 1)
        shown = "-" if best is None else f"{best:.4g}"
        self._bar.set_postfix_str(f"trials {trials} · {epochs:.1f} ep · {seconds:.0f}s · best {shown}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        """Remove the bar from the terminal's live line."""
        self._bar.close()

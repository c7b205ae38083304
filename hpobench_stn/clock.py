"""Clocks the budget meter reads its seconds from, injected as Syne Tune injects its time-keeper: the meter never
calls ``time`` itself, so a run can be metered in wall-clock or in CPU time, and tests can drive a clock by hand."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import ClassVar


class Clock(ABC):
    """A monotonic source of seconds; only differences between two readings mean anything."""

    name: ClassVar[str]

    @abstractmethod
    def now(self) -> float:
        """The current reading, in seconds."""


class WallClock(Clock):
    """Wall-clock seconds (``time.perf_counter``)."""

    name = "wall"

    def now(self) -> float:
        """Seconds of a monotonic wall clock."""
        return time.perf_counter()


class ManualClock(Clock):
    """A clock that moves only when told to (tests: budgets without sleeps or timing luck)."""

    name = "manual"

    def __init__(self, start: float = 0.0) -> None:
        self.value = float(start)

    def now(self) -> float:
        """The value set so far."""
        return self.value

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self.value += seconds

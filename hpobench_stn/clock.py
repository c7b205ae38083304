"""Clocks the budget meter reads its seconds from, injected as Syne Tune injects its time-keeper: the meter never
calls ``time`` itself, so a run can be metered in wall-clock or in CPU time, and tests can drive a clock by hand."""

from __future__ import annotations

import os
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


class CpuClock(Clock):
    """CPU-seconds (user + system) of this process and its waited-for children, plus the CPU-seconds other processes
    spent on the run's behalf and reported (:meth:`add`: the Ray workers a Ray Tune method's trials run in).

    A busy machine slows a run's wall-clock but not its CPU time, so two runs metered by this clock get the same
    compute whatever else the machine is doing.
    """

    name = "cpu"

    def __init__(self) -> None:
        self.external = 0.0

    def now(self) -> float:
        """CPU-seconds so far."""
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system + self.external

    def add(self, seconds: float) -> None:
        """Count CPU-seconds spent in another process for this run."""
        self.external += max(0.0, float(seconds))


def process_cpu_seconds() -> float:
    """CPU-seconds of this process (all its threads) so far: what a worker reports as its share of a run."""
    return time.process_time()


CLOCKS: dict[str, type[Clock]] = {"wall": WallClock, "cpu": CpuClock}


class Stopwatch:
    """Seconds of one clock since a start, pauses excluded, plus an offset (what a resumed run had spent)."""

    def __init__(self, clock: Clock, offset: float = 0.0) -> None:
        self.clock = clock
        self._offset = float(offset)
        self._start = clock.now()
        self._paused_since: float | None = None
        self._paused_total = 0.0

    def elapsed(self) -> float:
        """Seconds so far, paused time excluded."""
        now = self._paused_since if self._paused_since is not None else self.clock.now()
        return self._offset + now - self._start - self._paused_total

    @property
    def paused(self) -> bool:
        """Whether the stopwatch is paused now."""
        return self._paused_since is not None

    def pause(self) -> None:
        """Stop counting (until :meth:`resume`)."""
        if self._paused_since is None:
            self._paused_since = self.clock.now()

    def resume(self) -> None:
        """Count again."""
        if self._paused_since is not None:
            self._paused_total += self.clock.now() - self._paused_since
            self._paused_since = None


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

"""The budget every method gets equally, and the meter the harness enforces it with.

A budget is seconds and/or epoch-equivalents (training examples pushed through forward and backward, each weighted
by its cost relative to one example of the task's fixed network, divided by the task's training-set size). Tasks
and STN call :meth:`BudgetMeter.charge` before each minibatch; the meter raises :class:`BudgetExhausted` when that
minibatch would overrun the budget, so no optimizer can spend more than its share, and a trial still running at the
end is cut there. The meter reads its seconds from an injected :class:`~hpobench_stn.clock.Clock`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from hpobench_stn.clock import Clock, CpuClock, Stopwatch, WallClock
from hpobench_stn.errors import UserError

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ep|s|m|h)(-cpu)?\s*$")
CLOCK_NAMES = ("wall", "cpu")


class BudgetExhausted(Exception):
    """Raised by the meter when the run's budget is spent; the harness ends the run cleanly on it."""


@dataclass(frozen=True)
class Budget:
    """Seconds and/or epoch-equivalents; a run ends when the first of them is spent.

    ``clock`` says what the seconds count: ``"wall"`` (wall-clock, the default) or ``"cpu"`` (CPU-seconds of the
    run's own processes, which a busy machine does not change). It only matters when there are seconds.
    """

    seconds: float | None = None
    epochs: float | None = None
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.seconds is None and self.epochs is None:
            raise UserError("a budget needs seconds and/or epochs, e.g. '90s', '15m', '20ep' or '15m,20ep'")
        if self.clock not in CLOCK_NAMES:
            raise UserError(f"unknown clock {self.clock!r}; use --clock wall or --clock cpu")
        if self.seconds is None and self.clock != "wall":
            object.__setattr__(self, "clock", "wall")  # an epoch-only budget reads no clock

    @classmethod
    def parse(cls, text: str, clock: str | None = None) -> Budget:
        """Parse ``90s``, ``15m``, ``2h``, ``20ep``, or a comma-separated pair such as ``10m,50ep``; seconds count
        ``clock`` (``"cpu"`` also when written ``90s-cpu``)."""
        seconds: float | None = None
        epochs: float | None = None
        for part in str(text).split(","):
            match = _PART.match(part)
            if not match:
                raise UserError(
                    f"malformed budget {text!r}: use a number with a unit, s/m/h for seconds or ep for "
                    "epoch-equivalents, e.g. '90s', '15m', '2h', '20ep', or both: '15m,20ep'"
                )
            amount, unit = float(match.group(1)), match.group(2)
            if amount <= 0:
                raise UserError(f"malformed budget {text!r}: the amount must be positive")
            if unit == "ep":
                if epochs is not None or match.group(3):
                    raise UserError(f"malformed budget {text!r}: epochs given twice, or with a clock")
                epochs = amount
            else:
                if seconds is not None:
                    raise UserError(f"malformed budget {text!r}: seconds given twice")
                seconds = amount * _UNIT_SECONDS[unit]
                if match.group(3):
                    if clock == "wall":
                        raise UserError(f"budget {text!r} counts CPU-seconds but --clock wall was given")
                    clock = "cpu"
        return cls(seconds=seconds, epochs=epochs, clock=clock or "wall")

    def __str__(self) -> str:
        parts = []
        if self.seconds is not None:
            parts.append(f"{self.seconds:g}s" + ("-cpu" if self.clock == "cpu" else ""))
        if self.epochs is not None:
            parts.append(f"{self.epochs:g}ep")
        return ",".join(parts)

    @property
    def unit(self) -> str:
        """What the budget counts, in words (shown wherever a budget appears)."""
        parts = []
        if self.seconds is not None:
            clock = "CPU-seconds of the run's processes" if self.clock == "cpu" else "wall-clock seconds"
            parts.append(f"{self.seconds:g} {clock}")
        if self.epochs is not None:
            parts.append(f"{self.epochs:g} epoch-equivalents of the fixed network's training compute")
        return " or ".join(parts)

    def to_dict(self) -> dict[str, float | str | None]:
        """JSON-ready form, stored with the run."""
        return {"seconds": self.seconds, "epochs": self.epochs, "clock": self.clock}


class BudgetMeter:
    """Meters one run's spending: seconds of its clock (minus paused reporting time) and epoch-equivalents.

    ``charge(n, cost)`` is called before pushing ``n`` training examples through forward and backward, each costing
    ``cost`` examples of the task's fixed network (1 for the fixed network itself); it raises
    :class:`BudgetExhausted` instead when the budget would be overrun, so the epoch budget is never exceeded and the
    seconds budget by at most one minibatch. ``paused()`` excludes bookkeeping (test-set reporting) from the
    seconds. Raw examples (uncosted) are counted beside the costed epoch-equivalents.
    """

    def __init__(
        self,
        budget: Budget,
        train_size: int,
        *,
        clock: Clock | None = None,
        watches: Mapping[str, Clock] | None = None,
        spent_seconds: float = 0.0,
        spent_watches: Mapping[str, float] | None = None,
        spent_examples: int = 0,
        spent_epochs: float | None = None,
    ) -> None:
        if train_size <= 0:
            raise ValueError("train_size must be positive")
        self.budget = budget
        self.train_size = train_size
        self.clock = clock or WallClock()
        self._examples = int(spent_examples)
        self._units = float(spent_examples) if spent_epochs is None else float(spent_epochs) * train_size
        self._max_units = math.inf if budget.epochs is None else budget.epochs * train_size
        self._max_seconds = math.inf if budget.seconds is None else budget.seconds
        self._budget_watch = Stopwatch(self.clock, spent_seconds)
        spent = spent_watches or {}
        self._watches = {name: Stopwatch(c, spent.get(name, 0.0)) for name, c in (watches or {}).items()}
        self._refused = False

    @property
    def elapsed(self) -> float:
        """Seconds spent so far by the meter's clock, paused time excluded (plus what a resumed run had spent)."""
        return self._budget_watch.elapsed()

    def seconds(self, watch: str) -> float | None:
        """Seconds of one of the clocks the meter also watches (``"wall"``, ``"cpu"``), pauses excluded; ``None``
        when it does not watch that clock."""
        found = self._watches.get(watch)
        return None if found is None else found.elapsed()

    def add_cpu(self, seconds: float) -> None:
        """CPU-seconds another process spent on this run (a Ray worker's trial): added to every CPU clock here."""
        clocks = {id(w.clock): w.clock for w in [self._budget_watch, *self._watches.values()]}
        for clock in clocks.values():
            if isinstance(clock, CpuClock):
                clock.add(seconds)

    @property
    def examples(self) -> int:
        """Raw training examples charged so far (every pass, whatever its cost)."""
        return self._examples

    @property
    def epochs(self) -> float:
        """Epoch-equivalents spent so far: costed examples over the training-set size (the budget's unit)."""
        return self._units / self.train_size

    @property
    def raw_epochs(self) -> float:
        """Raw examples over the training-set size (passes, uncosted)."""
        return self._examples / self.train_size

    @property
    def exhausted(self) -> bool:
        """True once either limit is reached, or a charge was refused (what is left is less than a minibatch)."""
        return self._refused or self._units >= self._max_units or self.elapsed >= self._max_seconds

    def fraction(self) -> float:
        """The larger of the spent fractions of the two limits, in [0, 1]."""
        parts = [
            self._units / self._max_units if math.isfinite(self._max_units) else 0.0,
            self.elapsed / self._max_seconds if math.isfinite(self._max_seconds) else 0.0,
        ]
        return min(1.0, max(parts))

    def charge(self, examples: int, cost: float = 1.0) -> None:
        """Account for ``examples`` about to be trained on at ``cost`` each, or raise :class:`BudgetExhausted`."""
        units = examples * cost
        if self._units + units > self._max_units or self.elapsed >= self._max_seconds:
            self._refused = True
            raise BudgetExhausted
        self._examples += examples
        self._units += units

    def record(self, examples: int, cost: float = 1.0) -> None:
        """Account for ``examples`` already trained elsewhere (a remote worker reports them); never raises.

        Whoever trains them must keep within the budget itself (the Ray Tune methods grant examples per epoch).
        """
        self._examples += int(examples)
        self._units += int(examples) * cost

    def check(self) -> None:
        """Raise :class:`BudgetExhausted` if the budget is already spent."""
        if self.exhausted:
            raise BudgetExhausted

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the clocks while reporting (test metrics, bookkeeping); nestable."""
        if self._budget_watch.paused:
            yield
            return
        watches = [self._budget_watch, *self._watches.values()]
        for watch in watches:
            watch.pause()
        try:
            yield
        finally:
            for watch in watches:
                watch.resume()

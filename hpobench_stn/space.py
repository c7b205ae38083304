"""Search spaces: the single definition every optimizer and STN derive their view of the hyperparameters from.

Each hyperparameter has bounds, a scale and an initial value. Three coordinate systems are derived from it:

* the *value* a task consumes (a float, or an int for integer hyperparameters);
* the *unit* coordinate in [0, 1], uniform on the hyperparameter's scale (linear, or log for log-scale floats).
  Random search, grids, scikit-optimize and Ray Tune domains are all built on it;
* the *unconstrained* coordinate STN optimises: ``logit(unit)``, i.e. the value is the stretched sigmoid
  ``low + (high - low) * sigmoid(u)`` on the hyperparameter's scale. Rates are bounded below 1 through ``high``.

Integer hyperparameters are the floor of their continuous value (clipped to ``high``); STN's gates see the
continuous value, so they keep a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Literal

import numpy as np

from hpobench_stn.errors import ConfigError

Scale = Literal["linear", "log", "logit"]
Config = dict[str, float | int]

# Keeps unit coordinates off 0 and 1 so that the unconstrained transform stays finite.
_UNIT_EPS = 1e-6


@dataclass(frozen=True)
class Hyperparameter:
    """One named hyperparameter: bounds, scale, integer or float, STN's initial value, perturbation level.

    ``scale`` is ``"linear"``, ``"log"`` (uniform in log space; needs ``low > 0``) or ``"logit"`` (a rate in
    (0, 1): sampled uniformly on [low, high], unconstrained through the logit). ``per_example`` says whether STN
    perturbs it per example (dropout rates, augmentation) or once per minibatch (hyperparameters acting on
    weights: DropConnect, penalties).
    """

    name: str
    low: float
    high: float
    scale: Scale = "linear"
    integer: bool = False
    init: float | None = None
    per_example: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"hyperparameter {self.name!r}: low {self.low} must be below high {self.high}")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"hyperparameter {self.name!r}: log scale needs low > 0, got {self.low}")
        if self.scale == "logit" and not (self.low >= 0 and self.high <= 1):
            raise ValueError(f"hyperparameter {self.name!r}: a rate must lie in [0, 1]")
        if self.scale not in ("linear", "log", "logit"):
            raise ValueError(f"hyperparameter {self.name!r}: unknown scale {self.scale!r}")
        if self.init is not None and not self.low <= self.init <= self.high:
            raise ValueError(f"hyperparameter {self.name!r}: init {self.init} outside [{self.low}, {self.high}]")

    # --- scale ---------------------------------------------------------------------------------------------
    def _warp(self, value: float) -> float:
        return math.log(value) if self.scale == "log" else value

    def _unwarp(self, warped: float) -> float:
        return math.exp(warped) if self.scale == "log" else warped

    @property
    def default(self) -> float | int:
        """The initial value (STN starts here); the centre of the scale when none was given."""
        value = (
            self.init if self.init is not None else self._unwarp(0.5 * (self._warp(self.low) + self._warp(self.high)))
        )
        return self.cast(value)

    def cast(self, value: float) -> float | int:
        """The value a task receives: floats pass through, integers are floored and clipped to the bounds."""
        if self.integer:
            return int(min(max(math.floor(value), math.ceil(self.low)), math.floor(self.high)))
        return float(value)

    # --- unit coordinate -----------------------------------------------------------------------------------
    def to_unit(self, value: float) -> float:
        """Map a value to [0, 1], uniform on the hyperparameter's scale."""
        lo, hi = self._warp(self.low), self._warp(self.high)
        return (self._warp(value) - lo) / (hi - lo)

    def from_unit(self, unit: float) -> float | int:
        """Inverse of :meth:`to_unit` (integers: the floor, so each integer gets an equal share of [0, 1])."""
        unit = min(max(unit, 0.0), 1.0)
        if self.integer:
            lo, hi = math.ceil(self.low), math.floor(self.high)
            return int(min(lo + math.floor(unit * (hi - lo + 1)), hi))
        lo, hi = self._warp(self.low), self._warp(self.high)
        return float(min(max(self._unwarp(lo + unit * (hi - lo)), self.low), self.high))

    # --- unconstrained coordinate (STN) --------------------------------------------------------------------
    def to_unconstrained(self, value: float) -> float:
        """The real number STN optimises for this value: ``logit`` of the unit coordinate."""
        unit = min(max(self.to_unit(value), _UNIT_EPS), 1.0 - _UNIT_EPS)
        return math.log(unit) - math.log1p(-unit)

    def from_unconstrained(self, u: float) -> float:
        """The continuous value for an unconstrained real (integers are not floored here: see :meth:`cast`)."""
        unit = 1.0 / (1.0 + math.exp(-u)) if u >= 0 else math.exp(u) / (1.0 + math.exp(u))
        lo, hi = self._warp(self.low), self._warp(self.high)
        return self._unwarp(lo + unit * (hi - lo))

    def grid_values(self, resolution: int) -> list[float | int]:
        """``resolution`` values evenly spaced on the scale, ends included (integers: the distinct ones)."""
        if resolution < 1:
            raise ValueError("grid resolution must be at least 1")
        if resolution == 1:
            return [self.default]
        if self.integer:
            lo, hi = math.ceil(self.low), math.floor(self.high)
            points = np.linspace(lo, hi, min(resolution, hi - lo + 1))
            return sorted({round(p) for p in points})
        lo, hi = self._warp(self.low), self._warp(self.high)
        values = [float(self._unwarp(lo + (hi - lo) * i / (resolution - 1))) for i in range(resolution)]
        values[0], values[-1] = float(self.low), float(self.high)
        return values

    def validate(self, value: object) -> float | int:
        """Check one value; raise :class:`ConfigError` naming the hyperparameter and its bounds."""
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ConfigError(f"hyperparameter {self.name!r} needs a number, got {value!r}")
        if not math.isfinite(float(value)) or not self.low <= float(value) <= self.high:
            raise ConfigError(f"hyperparameter {self.name!r} = {value} is outside its bounds [{self.low}, {self.high}]")
        if self.integer and float(value) != math.floor(float(value)):
            raise ConfigError(f"hyperparameter {self.name!r} is an integer, got {value}")
        return self.cast(float(value))


def Float(name: str, low: float, high: float, *, log: bool = False, **kw: object) -> Hyperparameter:
    """A real-valued hyperparameter on a linear or log scale."""
    return Hyperparameter(name, low, high, scale="log" if log else "linear", **kw)  # type: ignore[arg-type]


def Rate(name: str, low: float = 0.0, high: float = 0.9, **kw: object) -> Hyperparameter:
    """A rate in (0, 1) such as a dropout probability; capped below 1 through ``high`` (default 0.9)."""
    return Hyperparameter(name, low, high, scale="logit", **kw)  # type: ignore[arg-type]


def Integer(name: str, low: int, high: int, **kw: object) -> Hyperparameter:
    """An integer hyperparameter (cutout length, number of holes): the floor of a continuous value."""
    return Hyperparameter(name, low, high, integer=True, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SearchSpace:
    """An ordered collection of hyperparameters; the one definition every optimizer is derived from."""

    hyperparameters: tuple[Hyperparameter, ...] = field(default_factory=tuple)

    def __init__(self, hyperparameters: Iterable[Hyperparameter]) -> None:
        hps = tuple(hyperparameters)
        names = [hp.name for hp in hps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate hyperparameter names in {names}")
        object.__setattr__(self, "hyperparameters", hps)

    def __iter__(self) -> Iterator[Hyperparameter]:
        return iter(self.hyperparameters)

    def __len__(self) -> int:
        return len(self.hyperparameters)

    def __getitem__(self, name: str) -> Hyperparameter:
        for hp in self.hyperparameters:
            if hp.name == name:
                return hp
        raise ConfigError(f"unknown hyperparameter {name!r}; valid names: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        """Hyperparameter names in definition order."""
        return [hp.name for hp in self.hyperparameters]

    def default(self) -> Config:
        """The initial configuration (STN's starting point)."""
        return {hp.name: hp.default for hp in self.hyperparameters}

    def sample(self, rng: np.random.Generator) -> Config:
        """One configuration drawn uniformly on each hyperparameter's scale."""
        return self.from_unit(rng.random(len(self)))

    def from_unit(self, units: Iterable[float]) -> Config:
        """A configuration from a point of the unit cube (one coordinate per hyperparameter, in order)."""
        units = list(units)
        if len(units) != len(self):
            raise ValueError(f"expected {len(self)} unit coordinates, got {len(units)}")
        return {hp.name: hp.from_unit(float(u)) for hp, u in zip(self.hyperparameters, units, strict=True)}

    def to_unit(self, config: Mapping[str, float]) -> list[float]:
        """The unit-cube point of a configuration."""
        return [hp.to_unit(float(config[hp.name])) for hp in self.hyperparameters]

    def grid(self, resolution: int) -> list[Config]:
        """The full grid with ``resolution`` points per hyperparameter (fewer for narrow integer ranges)."""
        axes = [hp.grid_values(resolution) for hp in self.hyperparameters]
        return [dict(zip(self.names, point, strict=True)) for point in product(*axes)]

    def validate(self, config: Mapping[str, object], *, partial: bool = False) -> Config:
        """Check names and bounds; return the cast configuration. ``partial`` fills missing names from defaults."""
        unknown = sorted(set(config) - set(self.names))
        if unknown:
            raise ConfigError(
                f"unknown hyperparameter(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(self.names)}"
            )
        missing = [name for name in self.names if name not in config]
        if missing and not partial:
            raise ConfigError(f"configuration is missing {', '.join(missing)}")
        defaults = self.default()
        return {
            hp.name: hp.validate(config[hp.name]) if hp.name in config else defaults[hp.name]
            for hp in self.hyperparameters
        }

    def to_unconstrained(self, config: Mapping[str, float]) -> list[float]:
        """STN's unconstrained vector for a configuration (continuous values; integers as given)."""
        return [hp.to_unconstrained(float(config[hp.name])) for hp in self.hyperparameters]

    def from_unconstrained(self, values: Iterable[float]) -> dict[str, float]:
        """Continuous values for an unconstrained vector; pass each through ``hp.cast`` for what a task uses."""
        return {hp.name: hp.from_unconstrained(float(u)) for hp, u in zip(self.hyperparameters, values, strict=True)}

    def describe(self) -> list[dict[str, object]]:
        """A JSON-ready description (stored in each run's metadata)."""
        return [
            {
                "name": hp.name,
                "low": hp.low,
                "high": hp.high,
                "scale": hp.scale,
                "integer": hp.integer,
                "init": hp.default,
                "per_example": hp.per_example,
            }
            for hp in self.hyperparameters
        ]

"""Grid search: full-length trials on a regular grid over the space, in a fixed order, until the budget ends; the
first trial is the task's initial configuration (``start_at_default=False``: the grid alone)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hpobench_stn.optimizer import Optimizer, SearchExhausted
from hpobench_stn.settings import BlackBoxSettings, setting
from hpobench_stn.space import Config, SearchSpace


def _coprime_stride(size: int) -> int:
    """A stride near the golden fraction of ``size`` and coprime to it: ``i -> i*stride mod size`` visits every
    grid point once, in an order that jumps across the grid (works for grids too large to permute in memory)."""
    stride = max(1, int(size * 0.6180339887))
    while math.gcd(stride, size) != 1:
        stride += 1
    return stride


@dataclass(frozen=True)
class GridSettings(BlackBoxSettings):
    """Points per hyperparameter and the order they are visited in."""

    resolution: int = setting(3, low=1, help="grid points per hyperparameter")
    order: str = setting("shuffled", choices=("shuffled", "lexicographic"), help="visiting order")


class GridSearch(Optimizer):
    """A grid with ``resolution`` points per hyperparameter.

    The order is fixed and the same for every seed: with ``order="shuffled"`` (the default) a fixed permutation
    (a coprime stride through the grid), so that a budget that covers only part of a large grid still spreads over
    the whole space; with ``order="lexicographic"`` the natural nested order. When the grid is done the run ends early.

    With ``start_at_default`` (the default) trial 0 is the task's initial configuration and the grid follows; a grid
    point equal to the initial configuration (every value on the grid, e.g. an odd resolution with each initial value
    at the centre of its scale) is skipped, so no configuration is trained twice.
    """

    name = "grid"
    description = "grid search: full-length trials on a regular grid, fixed order"
    Settings = GridSettings
    options: GridSettings

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, **settings: Any) -> None:
        super().__init__(space, seed, max_epochs, **settings)
        self._axes = [hp.grid_values(self.options.resolution) for hp in space]
        self._size = math.prod(len(a) for a in self._axes)
        self._stride = _coprime_stride(self._size) if self.options.order == "shuffled" else 1
        self._start = space.default() if self.options.start_at_default else None
        twin = None if self._start is None else self._index_of(self._start)
        # the place of the initial configuration's twin in the visiting order (i * stride = twin mod size)
        self._skip_at = None if twin is None else (twin * pow(self._stride, -1, self._size)) % self._size

    def _index_of(self, config: Config) -> int | None:
        """The grid index of ``config`` (None when a value is off the grid)."""
        index = 0
        for hp, axis in zip(self.space, self._axes, strict=True):
            pos = next((i for i, v in enumerate(axis) if math.isclose(v, config[hp.name], rel_tol=1e-9)), None)
            if pos is None:
                return None
            index = index * len(axis) + pos
        return index

    def _point(self, index: int) -> Config:
        config: Config = {}
        for hp, axis in zip(reversed(list(self.space)), reversed(self._axes), strict=True):
            index, pos = divmod(index, len(axis))
            config[hp.name] = axis[pos]
        return {name: config[name] for name in self.space.names}

    def ask(self, trial_id: int) -> Config:
        """The initial configuration first (by default), then the grid points in the fixed order."""
        step = trial_id
        if self._start is not None:
            if trial_id == 0:
                return dict(self._start)
            step -= 1
            if self._skip_at is not None and step >= self._skip_at:
                step += 1
        if step >= self._size:
            raise SearchExhausted
        return self._point((step * self._stride) % self._size)

    @property
    def size(self) -> int:
        """The number of grid points."""
        return self._size

    @property
    def trials(self) -> int:
        """The number of trials the search proposes: the grid, and the initial configuration unless on the grid."""
        extra = self._start is not None and self._skip_at is None
        return self._size + int(extra)

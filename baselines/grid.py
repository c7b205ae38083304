"""Grid search: full-length trials on a regular grid over the space, in a fixed order, until the budget ends."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hpobench_stn.optimizer import Optimizer, SearchExhausted
from hpobench_stn.settings import MethodSettings, setting
from hpobench_stn.space import Config, SearchSpace


def _coprime_stride(size: int) -> int:
    """A stride near the golden fraction of ``size`` and coprime to it: ``i -> i*stride mod size`` visits every
    grid point once, in an order that jumps across the grid (works for grids too large to permute in memory)."""
    stride = max(1, int(size * 0.6180339887))
    while math.gcd(stride, size) != 1:
        stride += 1
    return stride


@dataclass(frozen=True)
class GridSettings(MethodSettings):
    """Points per hyperparameter and the order they are visited in."""

    resolution: int = setting(3, low=1, help="grid points per hyperparameter")
    order: str = setting("shuffled", choices=("shuffled", "lexicographic"), help="visiting order")


class GridSearch(Optimizer):
    """A grid with ``resolution`` points per hyperparameter.

    The order is fixed and the same for every seed: with ``order="shuffled"`` (the default) a fixed permutation
    (a coprime stride through the grid), so that a budget that covers only part of a large grid still spreads over
    the whole space; with ``order="lexicographic"`` the natural nested order. When the grid is done the run ends early.
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

    def _point(self, index: int) -> Config:
        config: Config = {}
        for hp, axis in zip(reversed(list(self.space)), reversed(self._axes), strict=True):
            index, pos = divmod(index, len(axis))
            config[hp.name] = axis[pos]
        return {name: config[name] for name in self.space.names}

    def ask(self, trial_id: int) -> Config:
        """The ``trial_id``-th grid point in the fixed order."""
        if trial_id >= self._size:
            raise SearchExhausted
        index = (trial_id * self._stride) % self._size
        return self._point(index)

    @property
    def size(self) -> int:
        """The number of grid points."""
        return self._size

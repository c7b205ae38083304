"""Grid search: full-length trials on a regular grid over the space, in a fixed order, until the budget ends."""

from __future__ import annotations

import math
from typing import Any

from hpobench_stn.optimizer import Optimizer, SearchExhausted
from hpobench_stn.space import Config, SearchSpace


def _coprime_stride(size: int) -> int:
    """A stride near the golden fraction of ``size`` and coprime to it: ``i -> i*stride mod size`` visits every
    grid point once, in an order that jumps across the grid (works for grids too large to permute in memory)."""
    stride = max(1, int(size * 0.6180339887))
    while math.gcd(stride, size) != 1:
        stride += 1
    return stride


class GridSearch(Optimizer):
    """A grid with ``resolution`` points per hyperparameter.

    The order is fixed and the same for every seed: with ``order="shuffled"`` (the default) a fixed permutation
    (a coprime stride through the grid), so that a budget that covers only part of a large grid still spreads over
    the whole space; with ``order="lexicographic"`` the natural nested order. When the grid is done the run ends early.
    """

    name = "grid"
    description = "grid search: full-length trials on a regular grid, fixed order"

    def __init__(
        self, space: SearchSpace, seed: int, max_epochs: int, resolution: int = 3, order: str = "shuffled"
    ) -> None:
        super().__init__(space, seed, max_epochs)
        if resolution < 1:
            raise ValueError("resolution must be at least 1")
        if order not in ("shuffled", "lexicographic"):
            raise ValueError("order must be 'shuffled' or 'lexicographic'")
        self.resolution = resolution
        self.order = order
        self._axes = [hp.grid_values(resolution) for hp in space]
        self._size = math.prod(len(a) for a in self._axes)
        self._stride = _coprime_stride(self._size) if order == "shuffled" else 1

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

    def settings(self) -> dict[str, Any]:
        """Resolution, order and grid size."""
        return {"resolution": self.resolution, "order": self.order, "grid_size": self._size}

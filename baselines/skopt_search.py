"""scikit-optimize driven directly by ask/tell (Ray Tune no longer ships an skopt searcher): ``skopt-gp``, a
Gaussian process with expected improvement, and ``skopt-forest``, a random forest with expected improvement.

The dimensions come from the search space through :func:`skopt_dimensions`; the optimizer is seeded with the run's
seed, so the same seed gives the same proposals, and the harness's replay on resume rebuilds the same state.

Failed and diverged trials: skopt has no notion of a failed evaluation, and leaving a proposal untold makes its
next ``ask`` return the same point again once the model is in use. So a failed or diverged trial is told as the
worst validation loss seen so far (it marks the region as bad without a huge constant distorting the surrogate's
fit); before any trial has succeeded it is skipped, which is harmless then because proposals are still random.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

from hpobench_stn.optimizer import Optimizer, Outcome
from hpobench_stn.space import Config, SearchSpace


def skopt_dimensions(space: SearchSpace) -> list[Any]:
    """skopt dimensions for a search space: log-uniform and uniform reals, integers, in the space's order."""
    from skopt.space import Integer, Real

    dims: list[Any] = []
    for hp in space:
        prior = "log-uniform" if hp.scale == "log" else "uniform"
        if hp.integer:
            dims.append(Integer(math.ceil(hp.low), math.floor(hp.high), prior=prior, name=hp.name))
        else:
            dims.append(Real(hp.low, hp.high, prior=prior, name=hp.name))
    return dims


class SkoptSearch(Optimizer):
    """Base class: an ``skopt.Optimizer`` with a given surrogate and expected improvement."""

    name: ClassVar[str] = "skopt"
    description: ClassVar[str] = "scikit-optimize"
    base_estimator: ClassVar[str] = "GP"

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        max_epochs: int,
        n_initial_points: int = 10,
        acq_func: str = "EI",
        acq_optimizer: str = "auto",
    ) -> None:
        super().__init__(space, seed, max_epochs)
        from skopt import Optimizer as SkOptimizer

        if n_initial_points < 1:
            raise ValueError("n_initial_points must be at least 1")
        self.n_initial_points = n_initial_points
        self.acq_func = acq_func
        self.acq_optimizer = acq_optimizer
        self._opt = SkOptimizer(
            skopt_dimensions(space),
            base_estimator=self.base_estimator,
            acq_func=acq_func,
            acq_optimizer=acq_optimizer,
            n_initial_points=n_initial_points,
            random_state=seed,
        )
        self._asked: dict[int, list[Any]] = {}
        self._worst: float | None = None

    def ask(self, trial_id: int) -> Config:
        """The next point of the skopt optimizer."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "objective has been evaluated at this point before" and the like
            point = self._opt.ask()
        self._asked[trial_id] = point
        return {hp.name: hp.cast(float(v)) for hp, v in zip(self.space, point, strict=True)}

    def tell(self, trial_id: int, config: Config, outcome: Outcome) -> None:
        """Tell the validation loss; a failed or diverged trial counts as the worst loss seen so far."""
        point = self._asked.pop(trial_id, None)
        if point is None:
            point = [config[hp.name] for hp in self.space]
        if outcome.status == "ok" and outcome.value is not None and math.isfinite(outcome.value):
            value = float(outcome.value)
            self._worst = value if self._worst is None else max(self._worst, value)
        elif outcome.status == "cut" or self._worst is None:
            return
        else:
            value = self._worst
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._opt.tell(point, value)

    def settings(self) -> dict[str, Any]:
        """Surrogate, acquisition function and its optimizer, number of random initial points."""
        return {
            "base_estimator": self.base_estimator,
            "acq_func": self.acq_func,
            "acq_optimizer": self.acq_optimizer,
            "n_initial_points": self.n_initial_points,
        }


class SkoptGP(SkoptSearch):
    """skopt with a Gaussian-process surrogate (Matérn kernel) and expected improvement."""

    name = "skopt-gp"
    description = "scikit-optimize GP with expected improvement, full-length trials by ask/tell"
    base_estimator = "GP"


class SkoptForest(SkoptSearch):
    """skopt with a random-forest surrogate and expected improvement."""

    name = "skopt-forest"
    description = "scikit-optimize random forest with expected improvement, full-length trials by ask/tell"
    base_estimator = "RF"

"""scikit-optimize driven directly by ask/tell (Ray Tune no longer ships an skopt searcher): ``skopt-gp``, a
Gaussian process with expected improvement, and ``skopt-forest``, a random forest with expected improvement.

The dimensions come from the search space through :func:`skopt_dimensions`; the optimizer is seeded from the run's
seed and the method's name (:meth:`~hpobench_stn.optimizer.Method.stream_seed`), so the same seed gives the same
proposals, ``skopt-gp`` and ``skopt-forest`` at one seed draw different random starts, and the harness's replay on
resume rebuilds the same state.

The first trial is the task's initial configuration (``start_at_default``): the first ``ask`` returns it and its
result is told as usual, the way ``gp_minimize`` evaluates and tells its ``x0``; as there, it comes on top of the
``n_initial_points`` random points (the optimizer is built with one more initial point).

Failed and diverged trials: skopt has no notion of a failed evaluation, and leaving a proposal untold makes its
next ``ask`` return the same point again once the model is in use. So a failed or diverged trial is told as the
worst validation loss seen so far (it marks the region as bad without a huge constant distorting the surrogate's
fit); before any trial has succeeded it is skipped, which is harmless then because proposals are still random.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from hpobench_stn.optimizer import MODEL, START, Optimizer, Outcome
from hpobench_stn.settings import BlackBoxSettings, setting
from hpobench_stn.space import Config, SearchSpace
from hpobench_stn.status import TrialStatus


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


@dataclass(frozen=True)
class SkoptSettings(BlackBoxSettings):
    """The start, the acquisition function and how it is optimised."""

    n_initial_points: int = setting(10, low=1, help="random points (after the initial one) before the surrogate")
    acq_func: str = setting("EI", choices=("EI", "PI", "LCB", "gp_hedge"), help="acquisition function")
    acq_optimizer: str = setting("auto", choices=("auto", "sampling", "lbfgs"), help="how it is optimised")


class SkoptSearch(Optimizer):
    """Base class: an ``skopt.Optimizer`` with a given surrogate and expected improvement."""

    name: ClassVar[str] = "skopt"
    description: ClassVar[str] = "scikit-optimize"
    base_estimator: ClassVar[str] = "GP"
    Settings = SkoptSettings
    options: SkoptSettings
    has_model = True

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, **settings: Any) -> None:
        super().__init__(space, seed, max_epochs, **settings)
        from skopt import Optimizer as SkOptimizer

        self._opt = SkOptimizer(
            skopt_dimensions(space),
            base_estimator=self.base_estimator,
            acq_func=self.options.acq_func,
            acq_optimizer=self.options.acq_optimizer,
            n_initial_points=self.options.n_initial_points + int(self.options.start_at_default),
            random_state=self.stream_seed(),
        )
        self._start = [space.default()[hp.name] for hp in space] if self.options.start_at_default else None
        self._asked: dict[int, list[Any]] = {}
        self._worst: float | None = None

    def ask(self, trial_id: int) -> Config:
        """The initial configuration first (by default), then the next point of the skopt optimizer."""
        if self._start is not None:
            point, self._start = self._start, None
            self.origins[trial_id] = START
        else:
            self.origins[trial_id] = START if self._opt._n_initial_points > 0 else MODEL  # skopt's own rule
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
        if outcome.ok and outcome.value is not None and math.isfinite(outcome.value):
            value = float(outcome.value)
            self._worst = value if self._worst is None else max(self._worst, value)
        elif outcome.status == TrialStatus.CUT or self._worst is None:
            return
        else:
            value = self._worst
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._opt.tell(point, value)

    def settings(self) -> dict[str, Any]:
        """The settings and the surrogate."""
        return {**super().settings(), "base_estimator": self.base_estimator}


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

"""A worked example of a new optimizer in one file: local search around the incumbent on the unit cube."""

from dataclasses import dataclass

from hpobench_stn.optimizer import Optimizer, Outcome
from hpobench_stn.settings import MethodSettings, setting
from hpobench_stn.space import Config


@dataclass(frozen=True)
class LocalSearchSettings(MethodSettings):
    """Step size on the unit cube and the number of random proposals first."""

    step: float = setting(0.1, low=0, high=1, low_open=True, help="standard deviation of a step")
    n_init: int = setting(5, low=1, help="random proposals before stepping")


class LocalSearch(Optimizer):
    """Random proposals at first, then Gaussian steps (on each hyperparameter's scale) around the best so far."""

    name = "local-search"
    description = "local search: Gaussian steps around the incumbent on the unit cube"
    Settings = LocalSearchSettings
    best: tuple[float, list[float]] | None = None

    def ask(self, trial_id: int) -> Config:
        if self.best is None or trial_id < self.options.n_init:
            return self.space.sample(self.rng)
        moved = [min(max(u + self.options.step * self.rng.standard_normal(), 0.0), 1.0) for u in self.best[1]]
        return self.space.from_unit(moved)

    def tell(self, trial_id: int, config: Config, outcome: Outcome) -> None:
        if outcome.ok and (self.best is None or outcome.value < self.best[0]):
            self.best = (outcome.value, self.space.to_unit(config))

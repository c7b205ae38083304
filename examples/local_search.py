"""A worked example of a new optimizer in one file: local search around the incumbent on the unit cube."""

from typing import Any

from hpobench_stn.optimizer import Optimizer, Outcome
from hpobench_stn.space import Config, SearchSpace


class LocalSearch(Optimizer):
    """Random proposals at first, then Gaussian steps (on each hyperparameter's scale) around the best so far."""

    name = "local-search"
    description = "local search: Gaussian steps around the incumbent on the unit cube"

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, step: float = 0.1, n_init: int = 5):
        super().__init__(space, seed, max_epochs)
        self.step, self.n_init = step, n_init
        self.best: tuple[float, list[float]] | None = None

    def ask(self, trial_id: int) -> Config:
        if self.best is None or trial_id < self.n_init:
            return self.space.sample(self.rng)
        centre = self.best[1]
        moved = [min(max(u + self.step * self.rng.standard_normal(), 0.0), 1.0) for u in centre]
        return self.space.from_unit(moved)

    def tell(self, trial_id: int, config: Config, outcome: Outcome) -> None:
        if outcome.value is not None and (self.best is None or outcome.value < self.best[0]):
            self.best = (outcome.value, self.space.to_unit(config))

    def settings(self) -> dict[str, Any]:
        return {"step": self.step, "n_init": self.n_init}

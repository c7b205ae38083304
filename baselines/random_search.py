"""Random search: full-length trials at configurations drawn uniformly on each hyperparameter's scale."""

from __future__ import annotations

from hpobench_stn.optimizer import Optimizer
from hpobench_stn.space import Config


class RandomSearch(Optimizer):
    """Independent uniform samples from the search space (log-uniform on log scales), seeded."""

    name = "random"
    description = "random search: full-length trials at uniformly sampled configurations"

    def ask(self, trial_id: int) -> Config:
        """A fresh uniform sample."""
        return self.space.sample(self.rng)

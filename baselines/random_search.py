"""Random search: full-length trials at configurations drawn uniformly on each hyperparameter's scale, the first at
the task's initial configuration (``start_at_default=False``: drawn too)."""

from __future__ import annotations

from hpobench_stn.optimizer import Optimizer
from hpobench_stn.settings import BlackBoxSettings
from hpobench_stn.space import Config


class RandomSearch(Optimizer):
    """Independent uniform samples from the search space (log-uniform on log scales), seeded by the run's seed and
    the method's name; trial 0 is the initial configuration unless ``start_at_default=False``."""

    name = "random"
    description = "random search: full-length trials at uniformly sampled configurations"
    Settings = BlackBoxSettings
    options: BlackBoxSettings

    def ask(self, trial_id: int) -> Config:
        """The initial configuration first (by default), then fresh uniform samples."""
        if trial_id == 0 and self.options.start_at_default:
            return self.space.default()
        return self.space.sample(self.rng)

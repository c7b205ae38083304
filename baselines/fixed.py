"""A fixed configuration: the untuned baseline (the space's initial values unless ``config`` is given)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpobench_stn.optimizer import Optimizer, SearchExhausted
from hpobench_stn.settings import MethodSettings, setting
from hpobench_stn.space import Config, SearchSpace


@dataclass(frozen=True)
class FixedSettings(MethodSettings):
    """The configuration (some or all hyperparameters; the rest at their initial values) and how often to train it."""

    config: dict | None = setting(None, help="hyperparameter values, e.g. \"{'penalty_0': 0.1}\"")
    repeats: int = setting(1, low=1, help="trainings of the configuration, each with its own seed")


class FixedConfig(Optimizer):
    """Trains one configuration ``repeats`` times (each with its own training seed), then stops.

    ``config`` may name only some hyperparameters; the rest take their initial values. A configuration out of
    the space's bounds is refused with an error naming the hyperparameter.
    """

    name = "fixed"
    description = "one fixed configuration (default: the initial values), trained `repeats` times"
    Settings = FixedSettings
    options: FixedSettings

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, **settings: Any) -> None:
        super().__init__(space, seed, max_epochs, **settings)
        self.config = space.validate(self.options.config or {}, partial=True)

    def ask(self, trial_id: int) -> Config:
        """The fixed configuration, until it has been trained ``repeats`` times."""
        if trial_id >= self.options.repeats:
            raise SearchExhausted
        return dict(self.config)

    def settings(self) -> dict[str, Any]:
        """The configuration (completed with the initial values) and the number of repeats."""
        return {"config": self.config, "repeats": self.options.repeats}

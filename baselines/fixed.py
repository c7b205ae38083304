"""A fixed configuration: the untuned baseline (the space's initial values unless ``config`` is given)."""

from __future__ import annotations

from typing import Any

from hpobench_stn.optimizer import Optimizer, SearchExhausted
from hpobench_stn.space import Config, SearchSpace


class FixedConfig(Optimizer):
    """Trains one configuration ``repeats`` times (each with its own training seed), then stops.

    ``config`` may name only some hyperparameters; the rest take their initial values. A configuration out of
    the space's bounds is refused with an error naming the hyperparameter.
    """

    name = "fixed"
    description = "one fixed configuration (default: the initial values), trained `repeats` times"

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        max_epochs: int,
        config: dict[str, Any] | None = None,
        repeats: int = 1,
    ) -> None:
        super().__init__(space, seed, max_epochs)
        if repeats < 1:
            raise ValueError("repeats must be at least 1")
        self.config = space.validate(config or {}, partial=True)
        self.repeats = repeats

    def ask(self, trial_id: int) -> Config:
        """The fixed configuration, until it has been trained ``repeats`` times."""
        if trial_id >= self.repeats:
            raise SearchExhausted
        return dict(self.config)

    def settings(self) -> dict[str, Any]:
        """The configuration and the number of repeats."""
        return {"config": self.config, "repeats": self.repeats}

"""Test-only task and optimizer that fail on purpose, to check that the run loop survives them."""

import math
import os

from baselines.random_search import RandomSearch
from hpobench_stn.task import Task
from tasks.quadratic.task import QuadraticTask, QuadraticTrial


class FaultyTrial(QuadraticTrial):
    """Raises when penalty_0 >= 3; diverges (NaN weights) when 1 <= penalty_0 < 3."""

    def _train_one_epoch(self, meter):
        super()._train_one_epoch(meter)
        if self.config["penalty_0"] >= 3.0:
            raise RuntimeError("simulated crash inside a trial")
        if self.config["penalty_0"] >= 1.0:
            self.w.fill_(math.nan)


class FaultyQuadratic(QuadraticTask):
    """The tiny quadratic task with trials that crash or diverge for some configurations."""

    name = "faulty-quadratic"
    description = "test only"

    def make_trial(self, config, seed):
        return FaultyTrial(self, self.space.validate(config), seed)


class FlakyRandom(RandomSearch):
    """Random search whose whole run raises while HPOBENCH_TEST_FLAKY is set (a failure outside any trial)."""

    name = "flaky-random"
    description = "test only"

    def run(self, ctx):
        if os.environ.get("HPOBENCH_TEST_FLAKY"):
            raise RuntimeError("simulated start-up failure")
        super().run(ctx)


class CrashyRandom(RandomSearch):
    """Random search whose ask raises on every third trial and whose tell raises on every fifth."""

    name = "crashy-random"
    description = "test only"

    def ask(self, trial_id):
        if trial_id % 3 == 2:
            raise ValueError("simulated optimizer crash")
        return super().ask(trial_id)

    def tell(self, trial_id, config, outcome):
        if trial_id % 5 == 4:
            raise KeyError("simulated tell crash")


class DoorlessQuadratic(QuadraticTask):
    """The tiny quadratic task without a white-box door (STN methods must refuse it)."""

    name = "doorless-quadratic"
    description = "test only"
    stn_problem = Task.stn_problem

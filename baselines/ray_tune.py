"""Ray Tune's schedulers as methods: ``asha`` (asynchronous successive halving), ``hyperband`` (synchronous
HyperBand) and ``pbt`` (population-based training).

Each runs the task's black-box door as the Ray Tune trainable: ``task.make_trial(config, seed)``, then
``trial.train_epoch`` with a ``ray.tune.report`` (validation loss, checkpoint) after every epoch. The search space
comes from the single definition through :func:`ray_search_space`.

The run's budget stays the harness's: every epoch a trainable asks a small ledger actor for at most one epoch of
examples (and the wall-clock left), and trains under a local meter with that grant, so the trials together never
spend more epoch-equivalents than the run's budget, even when several run at once; on the driver, a Tune stopper
charges every reported epoch into the run's meter and stops the experiment once the budget is spent. Ray's
start-up and shutdown are paused out of the wall-clock (they are not the method's cost); Tune's own per-trial
overhead is counted.

Events go into the run's event log like any other method's (integer trial ids in order of start). A trial ends as
``completed`` (all epochs), ``stopped`` (the scheduler stopped it), ``diverged``, ``failed`` or ``cut`` (budget).
The incumbent's test metrics come from its checkpoint, evaluated on the driver.

PBT: an exploited trial restores the donor's checkpoint and then trains with its own perturbed configuration
(the checkpoint carries the donor's configuration, so it is overridden right after loading; the event log's
``config`` is what the trial object actually trained with). Tune never exploits a trial without a checkpoint, and
every report here carries one. Each report's ``hparams`` is the configuration that trained that epoch: PBT's
schedule, comparable with STN's. Each exploit is logged as an ``exploit`` event (trial, donor, new configuration).
The population fills the run's budget, as STN's single model does (see :class:`PBT`).

Start and seeds: the first trial Tune creates is the task's initial configuration (``start_at_default``; Tune's
``points_to_evaluate``; PBT's first member), the rest are drawn by Tune's generator seeded from the run's seed and
the method's name (and PBT's explore draws from Python's and NumPy's global generators, seeded likewise for the
run), so ASHA, HyperBand and PBT at one seed draw different configurations. The k-th trial Tune creates trains with
:func:`~hpobench_stn.trial_runner.trial_seed` ``(seed, k)``, the training seed of every method's k-th trial.

Ray is started embedded on 127.0.0.1 with ``num_cpus`` CPUs (default: all), each trial asking for
``cpus_per_trial``, unless this process is already connected to Ray: inside a run of a sweep on a cluster the
trials share the CPUs the run holds (``--cpus-per-run``; they ask Ray for none). With more than one trial at a
time the order in which results arrive, and so the schedulers' decisions, depend on timing: such runs are not
reproducible bit for bit (``num_cpus=1`` makes them sequential).
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
import uuid
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from baselines.ray_trainable import METRIC, SEED_KEY, TIME_ATTR, Ledger, train_trial
from hpobench_stn.optimizer import Method
from hpobench_stn.settings import BlackBoxSettings, MethodSettings, setting
from hpobench_stn.space import SearchSpace
from hpobench_stn.trial_runner import trial_seed

if TYPE_CHECKING:
    from hpobench_stn.run_context import RunContext


def ray_search_space(space: SearchSpace) -> dict[str, Any]:
    """Ray Tune domains for a search space: log-uniform and uniform floats, (log-)uniform integers."""
    from ray import tune

    domains: dict[str, Any] = {}
    for hp in space:
        log = hp.scale == "log"
        if hp.integer:
            low, high = math.ceil(hp.low), math.floor(hp.high) + 1  # Tune's integer upper bound is exclusive
            domains[hp.name] = tune.lograndint(low, high) if log else tune.randint(low, high)
        else:
            domains[hp.name] = tune.loguniform(hp.low, hp.high) if log else tune.uniform(hp.low, hp.high)
    return domains


def clip_to_space(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each hyperparameter clipped into its bounds and cast (PBT's perturbations step outside)."""
    out = dict(config)
    for hp in space:
        out[hp.name] = hp.cast(min(max(float(config[hp.name]), hp.low), hp.high))
    return out


def trial_seeds(run_seed: int) -> Any:
    """A Tune domain that gives the k-th trial Tune creates the seed :func:`trial_seed` ``(run_seed, k)``."""
    from ray import tune

    created = [0]  # a closure, not an object: Tune deep-copies the search space, and a copy would restart the count

    def next_seed() -> int:
        created[0] += 1
        return trial_seed(run_seed, created[0] - 1)

    return tune.sample_from(next_seed)


@dataclass(frozen=True)
class RayTuneSettings(BlackBoxSettings):
    """The resources of the embedded Ray and of each trial."""

    num_cpus: int | None = setting(None, low=1, help="CPUs of the embedded Ray (default: all)")
    cpus_per_trial: float = setting(1.0, low=0, help="CPUs each trial asks for")
    gpus_per_trial: float = setting(0.0, low=0, help="GPUs each trial asks for")


@dataclass(frozen=True)
class AshaSettings(RayTuneSettings):
    """Successive halving's first rung and its reduction factor."""

    grace_period: int = setting(1, low=1, help="epochs before the first stop decision (at most the trial length)")
    reduction_factor: float = setting(3.0, low=1, low_open=True, help="keep 1/reduction_factor at each rung")


@dataclass(frozen=True)
class HyperBandSettings(RayTuneSettings):
    """HyperBand's reduction factor."""

    reduction_factor: float = setting(3.0, low=1, low_open=True, help="keep 1/reduction_factor at each rung")


@dataclass(frozen=True)
class PbtSettings(RayTuneSettings):
    """The population, its members' length, and how members exploit and explore."""

    population: int | None = setting(None, low=2, help="members (default: fill the budget)")
    member_epochs: int | None = setting(None, low=1, help="epochs per member (default: fill the budget)")
    perturbation_interval: int = setting(2, low=1, help="epochs between exploit/explore steps")
    quantile_fraction: float = setting(0.25, low=0, high=0.5, low_open=True, help="bottom share that exploits")
    resample_probability: float = setting(0.25, low=0, high=1, help="chance of a fresh sample when exploring")


class RayTuneMethod(Method):
    """Base class: the black-box door as a Ray Tune trainable under a scheduler, within the run's budget."""

    name: ClassVar[str] = "ray-tune"
    description: ClassVar[str] = "Ray Tune"
    schedule: ClassVar[bool] = False  # record each report's configuration as the schedule (PBT)
    checkpoints_to_keep: ClassVar[int | None] = 2  # per trial; PBT keeps all (a donor's may be needed any time)
    Settings: ClassVar[type[MethodSettings]] = RayTuneSettings
    options: RayTuneSettings

    @abstractmethod
    def make_scheduler(self, ctx: RunContext) -> Any:
        """The Tune scheduler."""

    def num_samples(self, ctx: RunContext) -> int:
        """How many trials Tune may create (-1: until the budget ends)."""
        return -1

    def trial_length(self, ctx: RunContext) -> int:
        """The most epochs one trial trains: the task's trial length."""
        return self.max_epochs

    def max_concurrent(self, cpus: float) -> int | None:
        """A limit on trials alive at once, given the CPUs available (None: only resources limit it). Schedulers
        that pause trials (HyperBand, synchronous PBT) must not be limited, or paused trials would block the rest.
        """
        return None

    def run(self, ctx: RunContext) -> None:
        """Start (or join) Ray, run the Tune experiment under the run's budget, shut down what was started."""
        from hpobench_stn.ray_cluster import init_ray, shutdown_ray, temporary_environ

        num_cpus = self.options.num_cpus or os.cpu_count() or 1
        with temporary_environ(RAY_CHDIR_TO_TRIAL_DIR="0"), ctx.meter.paused():
            started = init_ray("local", num_cpus=num_cpus)
        if ctx.task.data_dir is not None:
            ctx.task.data_dir = ctx.task.data_dir.resolve()  # trials run in other processes and folders
        scratch = ctx.store.path / "ray_tune"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        key = uuid.uuid4().hex
        rng_state = random.getstate(), np.random.get_state()
        random.seed(self.stream_seed())  # PBT's explore draws from Python's and NumPy's global generators
        np.random.seed(self.stream_seed())
        tune_logger = logging.getLogger("ray.tune")
        level = tune_logger.level
        tune_logger.setLevel(logging.ERROR)
        try:
            self._fit(ctx, key, scratch)
        finally:
            tune_logger.setLevel(level)
            random.setstate(rng_state[0])
            np.random.set_state(rng_state[1])
            shutil.rmtree(scratch, ignore_errors=True)
            if started:
                with ctx.meter.paused():
                    shutdown_ray()

    def _resources(self) -> tuple[dict[str, float], float]:
        """Per-trial resources and the CPUs the trials share. Inside a Ray task (a run of a sweep on a cluster) the
        trials share the CPUs the task holds: they ask Ray for none (asking would compete with the sweep's own
        runs for the cluster's CPUs) and, for ASHA, at most that many run at once."""
        import ray

        context = ray.get_runtime_context()
        if context.worker.mode == ray.WORKER_MODE:
            cpus = max(1.0, context.get_assigned_resources().get("CPU", 1.0))
            return {"cpu": 0, "gpu": self.options.gpus_per_trial, "memory": 1}, cpus  # Tune wants a non-empty request
        cpus = ray.cluster_resources().get("CPU", 1.0)
        return {"cpu": self.options.cpus_per_trial, "gpu": self.options.gpus_per_trial}, cpus

    def _fit(self, ctx: RunContext, key: str, scratch: Path) -> None:
        import ray
        from ray import tune
        from ray.tune.search.basic_variant import BasicVariantGenerator

        from baselines.ray_bridge import LIVE, Bridge, BridgeCallback, BudgetStopper
        from hpobench_stn.ray_cluster import temporary_environ

        meter = ctx.meter
        budget = meter.budget
        examples_left = math.inf if budget.epochs is None else (budget.epochs - meter.epochs) * meter.train_size
        seconds_left = math.inf if budget.seconds is None else budget.seconds - meter.elapsed
        cpu_left = seconds_left if budget.clock == "cpu" else None
        deadline = time.time() + min(seconds_left if cpu_left is None else math.inf, 10 * 365 * 86400.0)
        ledger = ray.remote(num_cpus=0)(Ledger).remote(examples_left, deadline, cpu_left)
        trial_length = self.trial_length(ctx)
        bridge = Bridge(ctx, ledger, self.space.names, trial_length, self.schedule, scratch)
        LIVE[key] = bridge
        resources, cpus = self._resources()
        threads = max(1, int(resources["cpu"] or 1))
        trainable = tune.with_parameters(
            train_trial,
            task=ctx.task,
            names=self.space.names,
            max_epochs=trial_length,
            ledger=ledger,
            threads=threads,
        )
        # Tune registers trainables by name in the Ray job: runs sharing a job (a sweep on a cluster) need their own.
        trainable.__name__ = f"train_trial_{key[:12]}"
        trainable = tune.with_resources(trainable, resources)
        param_space = {**ray_search_space(self.space), SEED_KEY: trial_seeds(self.seed)}
        start = [self.space.default()] if self.options.start_at_default else None
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="min",
                scheduler=self.make_scheduler(ctx),
                search_alg=BasicVariantGenerator(points_to_evaluate=start, random_state=self.stream_seed(0x7E5E)),
                num_samples=self.num_samples(ctx),
                max_concurrent_trials=self.max_concurrent(cpus),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(scratch.resolve()),
                stop=BudgetStopper(key),
                callbacks=[BridgeCallback(key)],
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=self.checkpoints_to_keep),
                failure_config=tune.FailureConfig(max_failures=1),
            ),
        )
        quiet = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}
        try:
            with temporary_environ(TUNE_MAX_PENDING_TRIALS_PG=str(max(2, int(2 * cpus))), **quiet):
                tuner.fit()
        finally:
            bridge.finish()
            finished = not meter.exhausted and not bridge.dry(fresh=True) and not bridge.stalled
            ray.kill(ledger)
            LIVE.pop(key, None)
        if finished:
            ctx.stop_reason = "finished"


class ASHA(RayTuneMethod):
    """Asynchronous successive halving (Li et al. 2020): start trials continuously, stop the worst at rungs."""

    name = "asha"
    description = "Ray Tune ASHA: asynchronous successive halving, most trials stopped early"
    Settings = AshaSettings
    options: AshaSettings

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, **settings: Any) -> None:
        super().__init__(space, seed, max_epochs, **settings)
        if self.options.grace_period > max_epochs:
            raise ValueError(f"grace_period={self.options.grace_period} is longer than the trial ({max_epochs} epochs)")

    def max_concurrent(self, cpus: float) -> int | None:
        """As many trials as the CPUs run at once (more would only wait, created too early)."""
        per_trial = self.options.cpus_per_trial
        return max(1, int(cpus // per_trial)) if per_trial > 0 else max(1, int(cpus))

    def make_scheduler(self, ctx: RunContext) -> Any:
        """Tune's ASHAScheduler on epochs."""
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr=TIME_ATTR,
            max_t=self.max_epochs,
            grace_period=self.options.grace_period,
            reduction_factor=self.options.reduction_factor,
        )


class HyperBand(RayTuneMethod):
    """Synchronous HyperBand (Li et al. 2018): brackets of successive halving; paused trials resume from
    their checkpoints."""

    name = "hyperband"
    description = "Ray Tune HyperBand: brackets of successive halving, trials paused and resumed"
    Settings = HyperBandSettings
    options: HyperBandSettings

    def make_scheduler(self, ctx: RunContext) -> Any:
        """Tune's HyperBandScheduler on epochs."""
        from ray.tune.schedulers import HyperBandScheduler

        return HyperBandScheduler(
            time_attr=TIME_ATTR, max_t=self.max_epochs, reduction_factor=self.options.reduction_factor
        )


class PBT(RayTuneMethod):
    """Population-based training (Jaderberg et al. 2017), synchronous: every ``perturbation_interval`` epochs the
    bottom quantile copies the checkpoint of a top-quantile trial and perturbs its configuration (x0.8 or x1.2,
    or a fresh sample with probability ``resample_probability``), clipped into the bounds.

    The population fills the run's budget, as STN's one model does: under an epoch budget, as many members of the
    task's trial length as the budget pays for (2 to ``MAX_POPULATION``; when the cap binds, members train longer
    so that the budget is spent); under a wall-clock-only budget, ``population`` members (default 4) that train
    until the budget ends. ``population`` and ``member_epochs`` set either explicitly. A task whose trials anneal
    over the trial length (the quadratic task's cosine learning rate) restarts its annealing in a longer member;
    ``member_epochs`` equal to the trial length keeps members to one cycle.
    """

    name = "pbt"
    description = "Ray Tune PBT: a population that exploits checkpoints and explores configurations (a schedule)"
    schedule = True
    checkpoints_to_keep = None
    MAX_POPULATION: ClassVar[int] = 32
    WALL_CLOCK_POPULATION: ClassVar[int] = 4
    UNTIL_BUDGET_ENDS: ClassVar[int] = 2**31 - 1

    Settings = PbtSettings
    options: PbtSettings

    def num_samples(self, ctx: RunContext) -> int:
        """The population: as given; else, under an epoch budget, as many trial-length members as it pays for
        (2 to ``MAX_POPULATION``); under a wall-clock-only budget, ``WALL_CLOCK_POPULATION``."""
        if self.options.population is not None:
            return self.options.population
        epochs = ctx.meter.budget.epochs
        if epochs is None:
            return self.WALL_CLOCK_POPULATION
        return int(min(max(epochs // self.max_epochs, 2), self.MAX_POPULATION))

    def trial_length(self, ctx: RunContext) -> int:
        """Epochs per member: as given; else, under an epoch budget, the task's trial length or the budget's
        share per member if that is longer; under a wall-clock-only budget, until the budget ends."""
        if self.options.member_epochs is not None:
            return self.options.member_epochs
        epochs = ctx.meter.budget.epochs
        if epochs is None:
            return self.UNTIL_BUDGET_ENDS
        return max(self.max_epochs, int(epochs // self.num_samples(ctx)))

    def make_scheduler(self, ctx: RunContext) -> Any:
        """Tune's PopulationBasedTraining on epochs, synchronous, explored configurations clipped to the space."""
        from ray.tune.schedulers import PopulationBasedTraining

        space = self.space
        return PopulationBasedTraining(
            time_attr=TIME_ATTR,
            perturbation_interval=self.options.perturbation_interval,
            hyperparam_mutations=ray_search_space(space),
            quantile_fraction=self.options.quantile_fraction,
            resample_probability=self.options.resample_probability,
            custom_explore_fn=lambda config: clip_to_space(space, config),
            log_config=False,
            synch=True,
        )

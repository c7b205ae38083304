"""Optuna's samplers as ask/tell optimizers: ``tpe`` (Tree-structured Parzen Estimator), ``gp`` (Gaussian process
with log expected improvement) and ``cmaes`` (CMA-ES, through the ``cmaes`` package).

The distributions come from the search space through :func:`optuna_distributions`. Each ``ask`` uses a fresh
sampler seeded from the run's seed, the method's name and the trial id (:meth:`~hpobench_stn.optimizer.Method.
stream_seed`), so a proposal depends only on (seed, method, trial id, trials told so far): the same seed gives the
same proposals, two samplers at one seed draw different random starts, and a resumed run (the harness replays the
finished trials) proposes exactly what an uninterrupted one would.

The first trial is the task's initial configuration (``start_at_default``), put in the study with
``study.enqueue_trial`` so that the sampler learns from it like any other trial; it comes on top of the
``n_startup_trials`` random ones (the sampler is told to wait for one more completed trial), as skopt's ``x0`` comes
on top of its ``n_initial_points``. A study loaded from storage that already holds trials is not enqueued again.
Each trial's origin (random start or model, see :meth:`~hpobench_stn.optimizer.Optimizer.proposals`) is kept as a
user attribute, so a resumed study counts it as the first attempt did.

``persist=True`` (or ``storage=URL``) keeps the study in Optuna's own storage, by default an SQLite file
``optuna.db`` in the run folder, under a study name made of the run's folder (task/preset/method/budget/seed).
On resume the harness replays the finished trials: ``ask`` then returns the stored trial with that id instead of
sampling again, and ``tell`` leaves an already finished stored trial alone, so no trial is counted twice; the
trial that was cut (still RUNNING in the storage) is reused with its stored parameters and told when it ends. A
RUNNING trial without a trial id (a kill between Optuna's ask and its labelling) is marked FAIL.
Failed and diverged trials are told as FAIL (Optuna's samplers then ignore them).
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from hpobench_stn.optimizer import MODEL, START, Optimizer, Outcome
from hpobench_stn.settings import BlackBoxSettings, MethodSettings, setting
from hpobench_stn.space import Config, SearchSpace
from hpobench_stn.status import TrialStatus

if TYPE_CHECKING:
    import optuna

    from hpobench_stn.run_context import RunContext

TRIAL_ATTR = "hpobench_trial"
ORIGIN_ATTR = "hpobench_proposal"


def optuna_distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions for a search space: log floats, linear floats (rates included) and integers."""
    from optuna.distributions import FloatDistribution, IntDistribution

    dists: dict[str, Any] = {}
    for hp in space:
        log = hp.scale == "log"
        if hp.integer:
            dists[hp.name] = IntDistribution(math.ceil(hp.low), math.floor(hp.high), log=log)
        else:
            dists[hp.name] = FloatDistribution(hp.low, hp.high, log=log)
    return dists


@dataclass(frozen=True)
class OptunaSettings(BlackBoxSettings):
    """What every Optuna sampler takes: its start and where the study is kept."""

    n_startup_trials: int = setting(10, low=0, help="random trials (after the initial one) before the model is used")
    persist: bool = setting(False, help="keep the study in optuna.db in the run folder (resumes it)")
    storage: str | None = setting(None, help="an Optuna storage URL instead of optuna.db (implies persist)")


@dataclass(frozen=True)
class TpeSettings(OptunaSettings):
    """TPE's settings."""

    multivariate: bool = setting(False, help="model the hyperparameters jointly")


@dataclass(frozen=True)
class CmaEsSettings(OptunaSettings):
    """CMA-ES's settings (one random start: CMA-ES has its own initial distribution)."""

    n_startup_trials: int = setting(1, low=0, help="random trials (after the initial one) before CMA-ES starts")
    popsize: int | None = setting(None, low=2, help="population size (default: CMA-ES's rule)")


class OptunaSearch(Optimizer):
    """Base class: an Optuna study driven by ask/tell; subclasses choose the sampler."""

    name: ClassVar[str] = "optuna"
    description: ClassVar[str] = "Optuna sampler"
    Settings: ClassVar[type[MethodSettings]] = OptunaSettings
    options: OptunaSettings
    has_model = True

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, **settings: Any) -> None:
        super().__init__(space, seed, max_epochs, **settings)
        self.persist = bool(self.options.persist or self.options.storage)
        self._dists = optuna_distributions(space)
        self._study: optuna.Study | None = None
        self._numbers: dict[int, int] = {}  # our trial id -> Optuna trial number
        # completed trials the sampler waits for before using its model: the initial configuration on top
        self.n_startup = self.options.n_startup_trials + int(self.options.start_at_default)

    # --- sampler ---------------------------------------------------------------------------------------------
    @abstractmethod
    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The sampler for one ask, seeded with ``seed``, using its model after ``self.n_startup`` completed
        trials."""

    def _sampler_seed(self, trial_id: int) -> int:
        return self.stream_seed(trial_id, 0x0B7A) % (2**31 - 1)

    # --- study -----------------------------------------------------------------------------------------------
    def open_study(self, storage: str | None = None, study_name: str | None = None) -> None:
        """Create the study (in memory, or loaded from ``storage`` under ``study_name`` if it exists)."""
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="minimize",
            sampler=optuna.samplers.RandomSampler(seed=self.stream_seed()),  # replaced at every ask
            load_if_exists=storage is not None,
        )
        if self.options.start_at_default and not self._study.get_trials(deepcopy=False):
            self._study.enqueue_trial(self.space.default())  # a study resumed from storage has it already
        self._numbers = {}
        for stored in self._study.get_trials(deepcopy=False):
            tid = stored.user_attrs.get(TRIAL_ATTR)
            if tid is not None:
                self._numbers[int(tid)] = stored.number
            elif stored.state == TrialState.RUNNING:  # a kill between Optuna's ask and our label: never trained
                self._study.tell(stored.number, state=TrialState.FAIL)

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (an in-memory one is created on first use)."""
        if self._study is None:
            self.open_study()
        assert self._study is not None
        return self._study

    def run(self, ctx: RunContext) -> None:
        """Open the persistent study when asked to, then run the harness's ask/tell loop."""
        if self.persist:
            url = self.options.storage or f"sqlite:///{(ctx.store.path / 'optuna.db').resolve()}"
            name = "/".join(ctx.store.path.parts[-5:])
            with ctx.meter.paused():
                self.open_study(url, name)
            ctx.note("optuna_study", storage=url, study_name=name, stored_trials=len(self._numbers))
        super().run(ctx)

    def _stored(self, trial_id: int) -> optuna.trial.FrozenTrial | None:
        number = self._numbers.get(trial_id)
        return None if number is None else self.study.get_trials(deepcopy=False)[number]

    # --- ask/tell --------------------------------------------------------------------------------------------
    def ask(self, trial_id: int) -> Config:
        """Sample a configuration; reuse the stored trial when the study already holds this trial id."""
        stored = self._stored(trial_id)
        if stored is not None:
            params = stored.params
            if ORIGIN_ATTR in stored.user_attrs:
                self.origins[trial_id] = stored.user_attrs[ORIGIN_ATTR]
        else:
            study = self.study
            origin = START if self._in_start() else MODEL
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-feature warnings of some samplers
                study.sampler = self.make_sampler(self._sampler_seed(trial_id))
                trial = study.ask(self._dists)
            trial.set_user_attr(TRIAL_ATTR, trial_id)
            trial.set_user_attr(ORIGIN_ATTR, origin)
            self._numbers[trial_id] = trial.number
            self.origins[trial_id] = origin
            params = trial.params
        return {hp.name: hp.cast(min(max(params[hp.name], hp.low), hp.high)) for hp in self.space}

    def _in_start(self) -> bool:
        """Whether the next ask is part of the start: an enqueued trial (the initial configuration) is waiting, or
        fewer than ``n_startup`` trials completed (the rule of Optuna's samplers; this class tells no PRUNED)."""
        from optuna.trial import TrialState

        study = self.study
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return True
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < self.n_startup

    def tell(self, trial_id: int, config: Config, outcome: Outcome) -> None:
        """Tell the value (or FAIL for failed and diverged trials); stored finished trials are left alone."""
        from optuna.trial import TrialState

        stored = self._stored(trial_id)
        if stored is None or stored.state.is_finished() or outcome.status == TrialStatus.CUT:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if outcome.ok and outcome.value is not None and math.isfinite(outcome.value):
                self.study.tell(stored.number, outcome.value)
            else:
                self.study.tell(stored.number, state=TrialState.FAIL)

    def settings(self) -> dict[str, Any]:
        """The settings, ``persist`` true whenever a storage is given."""
        return {**super().settings(), "persist": self.persist}


class TPESearch(OptunaSearch):
    """Optuna's TPE sampler (``multivariate=True`` models the hyperparameters jointly)."""

    name = "tpe"
    description = "Optuna TPE (tree-structured Parzen estimator), full-length trials by ask/tell"
    Settings = TpeSettings
    options: TpeSettings

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """A seeded TPE sampler."""
        import optuna

        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=self.n_startup, multivariate=self.options.multivariate
        )


class GPSearch(OptunaSearch):
    """Optuna's Gaussian-process sampler (Matérn 5/2 kernel, log expected improvement)."""

    name = "gp"
    description = "Optuna GP sampler (Gaussian process, log expected improvement), full-length trials"

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """A seeded GP sampler."""
        import optuna

        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=self.n_startup)


class CmaEsSearch(OptunaSearch):
    """Optuna's CMA-ES sampler (the ``cmaes`` package); its state lives in the study, so it resumes too."""

    name = "cmaes"
    description = "Optuna CMA-ES sampler (cmaes package), full-length trials by ask/tell"
    Settings = CmaEsSettings
    options: CmaEsSettings

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """A seeded CMA-ES sampler."""
        import optuna

        return optuna.samplers.CmaEsSampler(
            seed=seed,
            n_startup_trials=self.n_startup,
            popsize=self.options.popsize,
            warn_independent_sampling=False,
        )

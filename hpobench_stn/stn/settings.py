"""STN's and Delta-STN's settings: what a user may set (``--method-arg``) and what the trainer runs with.

:class:`StnSettings` is the method's settings dataclass: ``None`` means "the task's preferred value"
(:attr:`StnProblem.defaults <hpobench_stn.stn.problem.StnProblem.defaults>`), then the reference value of STN.md.
:meth:`StnSettings.resolved` fills them in, giving the :class:`TrainerSettings` one training runs with.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from hpobench_stn.settings import MethodSettings, setting

if TYPE_CHECKING:
    from hpobench_stn.stn.problem import StnProblem

#: STN.md's reference values, used when neither the user nor the task says otherwise (epochs: the trial length).
REFERENCE: dict[str, Any] = {"warmup_steps": 0, "lr": 1e-2, "hyper_lr": 3e-3, "sigma_init": 0.5, "tune_sigma": True}


@dataclass(frozen=True)
class TrainerSettings:
    """The settings one STN training runs with, every value resolved."""

    epochs: int
    warmup_steps: int
    t_train: int
    t_val: int
    lr: float
    hyper_lr: float
    tau: float
    sigma_init: float
    tune_sigma: bool
    delta: bool = False
    linearize: bool = False


@dataclass(frozen=True)
class StnSettings(MethodSettings):
    """STN's settings (``None``: the task's preferred value, then STN.md's reference)."""

    # None (the default of most) means: the task's preferred value, then STN.md's reference value.

    epochs: int | None = setting(None, low=1, help="length of the one training (None: the task's choice, as below)")
    warmup_steps: int | None = setting(None, low=0, help="weight steps before the first hyperparameter step")
    t_train: int = setting(2, low=1, help="weight steps per cycle")
    t_val: int = setting(1, low=0, help="hyperparameter steps per cycle")
    lr: float | None = setting(None, low=0, low_open=True, help="learning rate of the weights")
    hyper_lr: float | None = setting(None, low=0, low_open=True, help="Adam learning rate of the hyperparameters")
    tau: float = setting(1e-3, low=0, help="entropy weight of the perturbation")
    sigma_init: float | None = setting(None, low=0, low_open=True, help="initial perturbation scale (unconstrained)")
    tune_sigma: bool | None = setting(None, help="learn the perturbation scale")

    def resolved(self, problem: StnProblem, max_epochs: int, delta: bool = False) -> TrainerSettings:
        """Every unset value from the task's defaults, then the reference (``epochs``: ``max_epochs``)."""
        reference = {**REFERENCE, "epochs": max_epochs}
        values: dict[str, Any] = {"delta": delta}
        for spec in fields(self):
            value = getattr(self, spec.name)
            values[spec.name] = problem.defaults.get(spec.name, reference.get(spec.name)) if value is None else value
        return TrainerSettings(**values)


@dataclass(frozen=True)
class DeltaStnSettings(StnSettings):
    """Delta-STN's settings: STN's, and whether to linearise the response."""

    linearize: bool = setting(False, help="train the response through a Jacobian-vector product (torch.func.jvp)")

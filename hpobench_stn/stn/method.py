"""The methods ``stn`` and ``delta-stn``: one self-tuning training through the task's white-box door."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hpobench_stn.optimizer import Method
from hpobench_stn.space import SearchSpace
from hpobench_stn.stn.trainer import StnSettings, StnTrainer


class STN(Method):
    """Self-Tuning Network (MacKay et al., ICLR 2019): hyperparameters adapt online; the result is a schedule.

    Settings (``--method-arg``): epochs, warmup_steps, t_train, t_val, lr, hyper_lr, tau, sigma_init, tune_sigma.
    Unset ones take the task's preferred values, then the reference values of STN.md.
    """

    name = "stn"
    description = "Self-Tuning Network: one training, hyperparameters tuned online (a schedule)"
    delta = False

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, **settings: Any) -> None:
        super().__init__(space, seed, max_epochs)
        unknown = sorted(set(settings) - set(StnSettings.names()) - {"delta"})
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(StnSettings.names())}")
        settings.pop("delta", None)
        self.requested = StnSettings(**settings, delta=self.delta)

    def settings(self) -> dict[str, Any]:
        """The requested settings (the resolved ones are logged as the run's ``stn_settings`` event)."""
        return asdict(self.requested)

    def run(self, ctx: Any) -> None:
        """Build the task's STN problem and train it under the run's budget."""
        import torch

        torch.manual_seed(ctx.seed)
        problem = ctx.task.stn_problem(ctx.seed)
        settings = self.requested.resolved(problem, self.max_epochs)
        StnTrainer(problem, settings, ctx.seed).run(ctx)


class DeltaSTN(STN):
    """Delta-STN (Bae & Grosse, NeurIPS 2020): centred gates, elementary weights on the unperturbed loss.

    Extra setting: ``linearize=True`` trains the response through a Jacobian-vector product (``torch.func.jvp``).
    """

    name = "delta-stn"
    description = "Delta-STN: centred perturbations, elementary/response split, optional linearisation"
    delta = True

"""The methods ``stn`` and ``delta-stn``: one self-tuning training through the task's white-box door."""

from __future__ import annotations

from typing import Any

from hpobench_stn.optimizer import Method
from hpobench_stn.stn.settings import DeltaStnSettings, StnSettings
from hpobench_stn.stn.trainer import StnTrainer


class STN(Method):
    """Self-Tuning Network (MacKay et al., ICLR 2019): hyperparameters adapt online; the result is a schedule.

    Unset settings take the task's preferred values, then the reference values of STN.md (see
    :class:`~hpobench_stn.stn.settings.StnSettings`).
    """

    name = "stn"
    description = "Self-Tuning Network: one training, hyperparameters tuned online (a schedule)"
    Settings = StnSettings
    options: StnSettings
    delta = False

    def check_task(self, task: Any) -> None:
        """The task must have a white-box door."""
        if not task.has_white_box_door:
            task.stn_problem(self.seed)  # raises the task's UserError saying how to add one

    def run(self, ctx: Any) -> None:
        """Build the task's STN problem and train it under the run's budget, each step charged at its cost."""
        import torch

        from hpobench_stn.cost import cost_factors

        costs = getattr(ctx, "costs", None) or cost_factors(ctx.task)
        torch.manual_seed(ctx.seed)
        problem = ctx.task.stn_problem(ctx.seed)
        settings = self.options.resolved(problem, self.max_epochs, delta=self.delta)
        StnTrainer(problem, settings, ctx.seed, costs.stn_steps(settings.delta, settings.linearize)).run(ctx)


class DeltaSTN(STN):
    """Delta-STN (Bae & Grosse, NeurIPS 2020): centred gates, elementary weights on the unperturbed loss.

    Extra setting: ``linearize=True`` trains the response through a Jacobian-vector product (``torch.func.jvp``).
    """

    name = "delta-stn"
    description = "Delta-STN: centred perturbations, elementary/response split, optional linearisation"
    Settings = DeltaStnSettings
    options: DeltaStnSettings
    delta = True

"""The STN training loop (and Delta-STN's variant), run under the harness's budget meter.

Warm-up: weight steps only, at perturbed λ̃. Then cycles of ``t_train`` weight steps (training mode, regularisers
and gates at λ̃) and ``t_val`` hyperparameter steps (evaluation mode, validation batches, gradient with respect to
λ and σ only). After each epoch: full validation at the unperturbed λ, the task's learning-rate rule, the best
checkpoint (weights *and* the λ current with them), and a report carrying the hyperparameter values, i.e. the
schedule. Every pass of examples through forward and backward, training or validation, is charged to the meter
before it runs, at its cost in examples of the task's fixed network (:class:`~hpobench_stn.cost.StepCosts`).
The training losses stay on the device; each epoch's report carries their mean, read once.

Delta-STN (Bae & Grosse 2020): the gates see the centred perturbation λ̃ − λ; the elementary weights are trained
on the unperturbed loss (gates and regularisers at λ) and the response weights on the perturbed one, optionally
through a linearisation of the network output in the gates (``torch.func.jvp``): two passes per weight step.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from hpobench_stn.budget import BudgetExhausted
from hpobench_stn.cost import StepCosts
from hpobench_stn.errors import UserError
from hpobench_stn.signals import INTERRUPTIONS, signal_name
from hpobench_stn.status import TrialStatus
from hpobench_stn.stn.hyper import HyperState
from hpobench_stn.stn.layers import frozen, stn_parameter_groups
from hpobench_stn.stn.problem import StnProblem
from hpobench_stn.stn.settings import StnSettings, TrainerSettings
from hpobench_stn.task import EpochReport

__all__ = ["StnSettings", "StnTrainer", "TrainerSettings"]

TRIAL_ID = 0  # an STN run is one training: trial 0


class StnTrainer:
    """One self-tuning training of a task's STN problem, reporting into a run context.

    ``costs``: what an example of each step costs in examples of the task's fixed network (default 1 each).
    """

    def __init__(
        self, problem: StnProblem, settings: TrainerSettings, seed: int, costs: StepCosts | None = None
    ) -> None:
        self.problem = problem
        self.settings = settings
        self.costs = costs or StepCosts()
        self.passes = 2 if settings.delta else 1  # forward and backward passes of a weight step
        self.generator = torch.Generator().manual_seed(seed)
        self.hyper = HyperState(problem.space, sigma_init=settings.sigma_init, tune_sigma=settings.tune_sigma)
        self.elementary, self.response = stn_parameter_groups(problem.model)
        self.weights = self.elementary + self.response
        self.weight_opt = problem.weight_optimizer(self.weights, settings.lr)
        hyper_params = [self.hyper.u] + ([self.hyper.s] if settings.tune_sigma else [])
        self.hyper_params = hyper_params
        self.hyper_opt = torch.optim.Adam(hyper_params, lr=settings.hyper_lr)
        self.steps = 0
        self.epoch = 0
        self.best: dict[str, Any] | None = None
        self.best_val_loss = math.inf
        self.last_val_loss = math.inf

    # --- gates and values ------------------------------------------------------------------------------------
    def _gates(self, u_tilde: Tensor) -> Tensor:
        return u_tilde - self.hyper.u.detach() if self.settings.delta else u_tilde

    def centre_gates(self, batch: int) -> tuple[Tensor, Tensor]:
        """(gates, values) at the unperturbed λ for a batch: what evaluation uses."""
        with torch.no_grad():
            u = self.hyper.centre(batch)
            gates = torch.zeros_like(u) if self.settings.delta else u
            return gates, self.hyper.task_values(u)

    # --- steps -----------------------------------------------------------------------------------------------
    def train_step(self, batch: Any, meter: Any) -> Tensor:
        """One weight step at perturbed λ̃ (Delta-STN: elementary at λ, response at λ̃).

        Returns the loss the elementary weights were trained on (STN: at λ̃; Delta-STN: at λ), detached and on the
        device: reading it is a host sync, so the trainer reads one mean per epoch.
        """
        size = self.problem.batch_size(batch)
        meter.charge(self.passes * size, cost=self.costs.train / self.passes)
        self.problem.model.train()
        with torch.no_grad():
            u_tilde = self.hyper.sample(size, self.generator)
            values = self.hyper.task_values(u_tilde)
        self.weight_opt.zero_grad(set_to_none=True)
        if not self.settings.delta:
            loss = self.problem.loss(batch, u_tilde, values, train=True)
            loss.backward()
        else:
            loss = self._delta_backward(batch, u_tilde, values, size)
        self.problem.clip_gradients(self.weights)
        self.weight_opt.step()
        self.steps += 1
        return loss.detach()

    def _delta_backward(self, batch: Any, u_tilde: Tensor, values: Tensor, size: int) -> Tensor:
        """Delta-STN's two passes: the elementary weights' gradient of the loss at λ (gates and regularisers), the
        response weights' of the loss at λ̃; returns the elementary loss."""
        centre_gates, centre_values = self.centre_gates(size)
        delta = u_tilde - self.hyper.u.detach()
        loss_e = self.problem.loss(batch, centre_gates, centre_values, train=True)
        grads_e = torch.autograd.grad(loss_e, self.elementary, allow_unused=True)
        if self.settings.linearize:
            loss_r = self._linearised_response_loss(batch, centre_gates, delta, values)
        else:
            loss_r = self.problem.loss(batch, delta, values, train=True)
        grads_r = torch.autograd.grad(loss_r, self.response, allow_unused=True)
        for p, g in zip(self.elementary + self.response, grads_e + grads_r, strict=True):
            p.grad = g
        return loss_e

    def _linearised_response_loss(self, batch: Any, centre_gates: Tensor, delta: Tensor, values: Tensor) -> Tensor:
        """The loss at λ̃ of the network output linearised in the gates around the centre: y0 + J·(λ̃ − λ)."""
        outputs = getattr(self.problem, "outputs", None)
        criterion = getattr(self.problem, "criterion", None)
        if outputs is None or criterion is None:
            raise UserError("linearize=True needs a task whose STN problem has outputs() and criterion()")
        # Only the gates are linearised: y0 is the output at the centre gates but at the perturbed regularisers
        # (dropout, augmentation at λ̃), so that the response learns how the best weights change with them. At the
        # centre (zero) gates y0 depends on no response weight, so only J·δ trains the response.
        with warnings.catch_warnings():  # torch builds its jvp decompositions with its own deprecated jit.script
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            y0, dy = torch.func.jvp(lambda g: outputs(batch, g, values, True), (centre_gates,), (delta,))
        return criterion(tree_map(lambda a, b: a.detach() + b, y0, dy), batch, values, True)

    def hyper_step(self, batch: Any, meter: Any) -> Tensor:
        """One step on λ (and σ) on a validation batch, model in evaluation mode; only λ, σ get gradients (the
        forward runs with the weights frozen, so no backward forms a weight gradient). Returns the validation loss,
        detached and on the device."""
        size = self.problem.batch_size(batch)
        meter.charge(size, cost=self.costs.hyper)
        self.problem.model.eval()
        sigma_on = self.settings.tune_sigma
        u_tilde = self.hyper.sample(size, self.generator) if sigma_on else self.hyper.centre(size)
        with frozen(self.weights):
            loss = self.problem.loss(batch, self._gates(u_tilde), self.hyper.task_values(u_tilde), train=False)
        objective = loss - self.settings.tau * self.hyper.entropy() if self.settings.tune_sigma else loss
        grads = torch.autograd.grad(objective, self.hyper_params)
        self.hyper_opt.zero_grad(set_to_none=True)
        for p, g in zip(self.hyper_params, grads, strict=True):
            p.grad = g
        self.hyper_opt.step()
        return loss.detach()

    # --- the loop ----------------------------------------------------------------------------------------------
    def evaluate(self, split: str) -> dict[str, float]:
        """Full pass over ``split`` at the unperturbed λ, model in evaluation mode."""
        self.problem.model.eval()
        with torch.no_grad():
            return self.problem.evaluate(split, self.centre_gates)

    def schedule_entry(self) -> dict[str, float]:
        """The hyperparameter values (and σ) now: one point of the schedule."""
        entry = self.hyper.current()
        entry.update({f"sigma.{k}": v for k, v in self.hyper.current_sigma().items()})
        return entry

    def run(self, ctx: Any) -> None:
        """Train for the set number of epochs or until the budget ends, reporting every epoch into ``ctx``."""
        meter, s = ctx.meter, self.settings
        ctx.trial_start(TRIAL_ID, self.hyper.current(), ctx.seed)
        ctx.note("stn_settings", settings=asdict(s))
        val_iter = cycle_batches(self.problem, self.generator)
        status = TrialStatus.COMPLETED
        try:
            while self.epoch < s.epochs:
                losses = []
                for batch in self.problem.train_batches(self.generator):
                    losses.append(self.train_step(batch, meter))
                    if self.steps > s.warmup_steps and self.steps % s.t_train == 0:
                        for _ in range(s.t_val):
                            self.hyper_step(next(val_iter), meter)
                self.epoch += 1
                self._end_of_epoch(ctx, float(torch.stack(losses).mean()) if losses else None)
                if not math.isfinite(self.last_val_loss):
                    status = TrialStatus.DIVERGED
                    break
        except BudgetExhausted:
            status = TrialStatus.CUT
        except INTERRUPTIONS as exc:  # the run stops here; a resumed run trains again from the start
            best = self.best_val_loss if self.best is not None else None
            ctx.trial_end(TRIAL_ID, TrialStatus.CUT, best, f"interrupted by {signal_name(exc)}")
            raise
        self._finish(ctx, status)

    def _end_of_epoch(self, ctx: Any, train_loss: float | None) -> None:
        metrics = self.evaluate("val")
        val_loss = float(metrics.pop("loss"))
        self.last_val_loss = val_loss
        self.problem.on_epoch_end(self.weight_opt, self.epoch, val_loss)
        schedule = self.schedule_entry()
        report = EpochReport(self.epoch, val_loss, metrics, train_loss=train_loss)
        ctx.report(TRIAL_ID, self.hyper.current(), report, hparams=schedule)
        if math.isfinite(val_loss) and val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.best = {
                "model": copy.deepcopy(self.problem.model.state_dict()),
                "hyper": copy.deepcopy(self.hyper.state_dict()),
                "epoch": self.epoch,
                "hparams": schedule,
            }

    def restore_best(self) -> None:
        """Load the best checkpoint: the weights and the λ (and σ) that were current with them."""
        if self.best is not None:
            self.problem.model.load_state_dict(self.best["model"])
            self.hyper.load_state_dict(self.best["hyper"])

    def _finish(self, ctx: Any, status: TrialStatus) -> None:
        test = None
        if self.best is not None:
            with ctx.meter.paused():
                self.restore_best()
                test = {k: float(v) for k, v in self.evaluate("test").items()}
                ctx.note("best_checkpoint", trial=TRIAL_ID, epoch=self.best["epoch"], hparams=self.schedule_entry())
        ctx.trial_end(TRIAL_ID, status, self.best_val_loss if self.best is not None else None, test_metrics=test)


def cycle_batches(problem: StnProblem, generator: torch.Generator) -> Any:
    """Validation batches forever, reshuffled each pass."""
    while True:
        yield from problem.val_batches(generator)

"""STN's hyperparameter state: unconstrained λ and perturbation scales σ, derived from a task's search space.

λ lives unconstrained (``u``); a task's value is the stretched sigmoid of it on the hyperparameter's scale (see
``hpobench_stn.space``). Perturbations ``λ̃ = λ + σ ⊙ ε`` are drawn per example for hyperparameters marked
``per_example`` and once per minibatch for the others. σ = softplus(s) is learned when ``tune_sigma``.
Integer hyperparameters are the floor of their bounded value (:meth:`HyperState.task_values`); the gates see
the continuous value, so they keep a gradient. Rates are capped below 1 by their space's upper bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hpobench_stn.space import SearchSpace

_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class HyperState(nn.Module):
    """The hyperparameters STN optimises: ``u`` (unconstrained λ) and ``s`` (σ = softplus(s))."""

    def __init__(
        self, space: SearchSpace, sigma_init: float = 0.5, tune_sigma: bool = True, init: dict[str, float] | None = None
    ) -> None:
        super().__init__()
        self.space = space
        start = {**space.default(), **(init or {})}
        self.u = nn.Parameter(torch.tensor(space.to_unconstrained(start), dtype=torch.float32))
        self.s = nn.Parameter(torch.full((len(space),), _inverse_softplus(sigma_init)), requires_grad=tune_sigma)
        self.tune_sigma = tune_sigma
        hps = list(space)
        self.register_buffer("per_example", torch.tensor([hp.per_example for hp in hps]))
        self.register_buffer("is_log", torch.tensor([hp.scale == "log" for hp in hps]))
        self.register_buffer("is_int", torch.tensor([hp.integer for hp in hps]))
        lo = [math.log(hp.low) if hp.scale == "log" else hp.low for hp in hps]
        hi = [math.log(hp.high) if hp.scale == "log" else hp.high for hp in hps]
        self.register_buffer("lo", torch.tensor(lo))
        self.register_buffer("width", torch.tensor(hi) - torch.tensor(lo))
        self.register_buffer("int_low", torch.tensor([math.ceil(hp.low) for hp in hps], dtype=torch.float32))
        self.register_buffer("int_high", torch.tensor([math.floor(hp.high) for hp in hps], dtype=torch.float32))

    @property
    def n(self) -> int:
        """Number of hyperparameters."""
        return self.u.numel()

    def sigma(self) -> Tensor:
        """Perturbation scales σ = softplus(s)."""
        return nn.functional.softplus(self.s)

    def entropy(self) -> Tensor:
        """Entropy of the perturbation distribution N(λ, diag σ²): Σ log(σ_i · sqrt(2πe))."""
        return (torch.log(self.sigma()) + _HALF_LOG_2PI_E).sum()

    def sample(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Perturbed unconstrained λ̃, shape (batch, n): per-example noise where marked, else one draw per batch."""
        eps = torch.randn(batch, self.n, generator=generator, device=self.u.device)
        shared = torch.randn(1, self.n, generator=generator, device=self.u.device)
        eps = torch.where(self.per_example, eps, shared)
        return self.u + self.sigma() * eps

    def centre(self, batch: int) -> Tensor:
        """Unperturbed λ repeated for a batch, shape (batch, n)."""
        return self.u.expand(batch, self.n)

    def continuous_values(self, u: Tensor) -> Tensor:
        """Bounded continuous values for unconstrained ``u`` (any leading shape); differentiable."""
        warped = self.lo + self.width * torch.sigmoid(u)
        return torch.where(self.is_log, torch.exp(warped), warped)

    def task_values(self, u: Tensor) -> Tensor:
        """What the task's regularisers consume: continuous values, integers floored and clipped to bounds."""
        values = self.continuous_values(u)
        floored = torch.minimum(torch.maximum(torch.floor(values), self.int_low), self.int_high)
        return torch.where(self.is_int, floored, values)

    def current(self) -> dict[str, float]:
        """The current (unperturbed) hyperparameters as a task would use them: the logged schedule."""
        values = self.task_values(self.u.detach()).tolist()
        return {hp.name: hp.cast(v) for hp, v in zip(self.space, values, strict=True)}

    def current_sigma(self) -> dict[str, float]:
        """The current perturbation scales, by name."""
        return dict(zip(self.space.names, self.sigma().detach().tolist(), strict=True))

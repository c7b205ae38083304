"""The quadratic task: per-feature L2 penalties of a linear regression trained by minibatch SGD.

The black-box door trains the linear model by minibatch SGD with momentum and a cosine learning-rate decay for
the preset's epochs, so a trial costs time epoch by epoch like a network does. The exact optimum (penalties and
validation loss) is known, so the summary carries the exact regret of the incumbent's penalties.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, ClassVar

import torch

from hpobench_stn.budget import BudgetMeter
from hpobench_stn.space import Config, Float, SearchSpace
from hpobench_stn.task import Preset, Task, Trial
from tasks.quadratic.problem import ClosedForm, QuadraticData, generate, half_mse

PENALTY_LOW, PENALTY_HIGH, PENALTY_INIT = 1e-3, 10.0, 1.0
_OPTIMUM_CACHE: dict[tuple[Any, ...], tuple[list[float], float]] = {}


class QuadraticTrial(Trial):
    """One SGD training of the linear model at fixed penalties."""

    task: QuadraticTask

    def __init__(self, task: QuadraticTask, config: Config, seed: int) -> None:
        super().__init__(task, config, seed)
        s = task.preset.settings
        self.generator = torch.Generator().manual_seed(seed)
        d = s["n_features"]
        self.w = 0.1 * torch.randn(d, generator=self.generator, dtype=torch.float64)
        self.velocity = torch.zeros(d, dtype=torch.float64)
        self.best_w = self.w.clone()

    def _penalties(self) -> torch.Tensor:
        return torch.tensor([self.config[n] for n in self.task.space.names], dtype=torch.float64)

    def _train_one_epoch(self, meter: BudgetMeter) -> torch.Tensor:
        s = self.task.preset.settings
        data = self.task.data
        n, batch = data.x_train.shape[0], s["batch_size"]
        lr = s["lr"] * 0.5 * (1 + math.cos(math.pi * self.epoch / self.task.max_epochs))
        lam, momentum = self._penalties(), s["momentum"]
        w, v = self.w, self.velocity
        order = torch.randperm(n, generator=self.generator)
        loss_sum, steps = torch.zeros((), dtype=torch.float64), 0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            meter.charge(len(idx))
            xb, yb = data.x_train[idx], data.y_train[idx]
            residual = xb @ w - yb
            loss_sum += 0.5 * residual.square().mean() + 0.5 * (lam * w.square()).sum()
            steps += 1
            grad = xb.T @ residual / len(idx) + lam * w
            v.mul_(momentum).add_(grad)
            w.sub_(lr * v)
        return loss_sum / steps  # the mean minibatch training loss

    def _evaluate(self, split: str, best: bool = False) -> dict[str, float]:
        data = self.task.data
        x, y = (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)
        w = self.best_w if best else self.w
        return {"loss": float(half_mse(x, y, w))}

    def _remember_best(self) -> None:
        self.best_w = self.w.clone()

    def state_dict(self) -> dict[str, Any]:
        """Weights, momentum, RNG, epoch and best checkpoint."""
        return {
            "w": self.w.clone(),
            "velocity": self.velocity.clone(),
            "best_w": self.best_w.clone(),
            "generator": self.generator.get_state(),
            **self._progress_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.w, self.velocity, self.best_w = (
            state["w"].clone(),
            state["velocity"].clone(),
            state["best_w"].clone(),
        )
        self.generator.set_state(state["generator"])
        self._load_progress_state(state)


def _preset(name: str, description: str, epochs: int, **settings: Any) -> Preset:
    base = {
        "n_features": 10,
        "n_val": 200,
        "n_test": 2000,
        "batch_size": 32,
        "lr": 0.05,
        "momentum": 0.9,
        "data_seed": 0,
        "rho": 0.5,
        "label_noise": 1.0,
    }
    return Preset(name, description, epochs, {**base, **settings})


class QuadraticTask(Task):
    """Linear regression with one L2 penalty per feature; the exact optimum is known in closed form."""

    name = "quadratic"
    description = "synthetic ridge regression, one L2 penalty per feature; exact optimum known (regret)"
    presets: ClassVar[dict[str, Preset]] = {
        "tiny": _preset(
            "tiny",
            "10 features, 200 training examples, batch 8, 10 epochs (tests, milliseconds a trial)",
            10,
            n_train=200,
            batch_size=8,
        ),
        "cpu": _preset(
            "cpu",
            "10 features, 1,000 noisy training examples, 20 epochs (about 0.05 s a trial)",
            20,
            n_train=1000,
            n_val=500,
            label_noise=3.0,
        ),
        "paper": _preset(
            "paper",
            "20 features, 20,000 training examples, 30 epochs",
            30,
            n_features=20,
            n_train=20000,
            n_val=2000,
            n_test=10000,
        ),
    }

    @cached_property
    def space(self) -> SearchSpace:
        """One log-scale penalty per feature in [1e-3, 10], starting at 1."""
        return SearchSpace(
            Float(
                f"penalty_{j}",
                PENALTY_LOW,
                PENALTY_HIGH,
                log=True,
                init=PENALTY_INIT,
                per_example=True,
                description=f"L2 penalty on weight {j}",
            )
            for j in range(self.preset.settings["n_features"])
        )

    @cached_property
    def data(self) -> QuadraticData:
        """The problem instance of this preset."""
        s = self.preset.settings
        return generate(
            s["n_features"], s["n_train"], s["n_val"], s["n_test"], s["data_seed"], s["rho"], s["label_noise"]
        )

    @cached_property
    def closed_form(self) -> ClosedForm:
        """Exact best response, validation loss and optimum."""
        return ClosedForm(self.data, PENALTY_LOW, PENALTY_HIGH)

    @property
    def train_size(self) -> int:
        """Number of training examples."""
        return int(self.preset.settings["n_train"])

    def make_trial(self, config: Config, seed: int) -> QuadraticTrial:
        """A fresh SGD training at the given penalties."""
        return QuadraticTrial(self, self.space.validate(config), seed)

    def stn_problem(self, seed: int) -> Any:
        """The white-box door: the linear model with an STN weight vector (see ``tasks.quadratic.stn``)."""
        from tasks.quadratic.stn import QuadraticStnProblem

        return QuadraticStnProblem(self, seed)

    def optimum(self) -> tuple[list[float], float]:
        """Exact optimum (penalties, validation loss) of this preset's instance; computed once per process."""
        key = tuple(sorted(self.preset.settings.items()))
        if key not in _OPTIMUM_CACHE:
            penalties, value = self.closed_form.optimum
            _OPTIMUM_CACHE[key] = ([float(p) for p in penalties], value)
        return _OPTIMUM_CACHE[key]

    def penalties(self, config: dict[str, float]) -> list[float]:
        """The penalty vector of a configuration, in feature order."""
        return [float(config[name]) for name in self.space.names]

    def summary_extras(self, config: Config, hparams: dict[str, float] | None = None) -> dict[str, Any]:
        """Exact validation loss of the incumbent's penalties, the optimum's, and the regret between them."""
        exact = self.closed_form.val_loss(self.penalties(hparams or config))
        _, optimum = self.optimum()
        return {"exact_val_loss": exact, "optimum_val_loss": optimum, "regret": exact - optimum}

    def signature(self) -> dict[str, float]:
        """Exact validation losses at probe configurations plus data moments (cheap and drift-sensitive)."""
        cf = self.closed_form
        d = len(self.space)
        return {
            "val_loss_default": cf.val_loss([PENALTY_INIT] * d),
            "val_loss_low": cf.val_loss([PENALTY_LOW] * d),
            "val_loss_high": cf.val_loss([PENALTY_HIGH] * d),
            "y_train_mean": float(self.data.y_train.mean()),
            "x_train_std": float(self.data.x_train.std()),
        }

"""The synthetic quadratic problem: ridge regression with one L2 penalty per feature, exact optimum known.

Data (generated from ``data_seed``, so every method and seed sees the same problem instance): inputs with
correlated features (covariance ρ^|i-j|), a true weight vector whose coordinates range from strong to
negligible, and per-feature input noise of differing strength, so that the best penalty differs per feature.

    training loss     f(w, λ) = 1/(2n) ||X w − y||² + ½ Σ_j λ_j w_j²
    validation loss   F(w)    = 1/(2m) ||X_val w − y_val||²
    best response     w*(λ)   = (XᵀX/n + diag λ)⁻¹ Xᵀy/n

The exact optimum min_λ F(w*(λ)) over the box of the search space is found by L-BFGS-B on log λ with the exact
gradient of the closed form, from several starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch


@dataclass(frozen=True)
class QuadraticData:
    """Splits of the quadratic problem as float64 tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def generate(
    n_features: int,
    n_train: int,
    n_val: int,
    n_test: int,
    data_seed: int,
    rho: float = 0.5,
    label_noise: float = 1.0,
) -> QuadraticData:
    """Draw one problem instance (deterministic in ``data_seed``)."""
    rng = np.random.default_rng(data_seed)
    idx = np.arange(n_features)
    cov = rho ** np.abs(idx[:, None] - idx[None, :])
    chol = np.linalg.cholesky(cov)
    magnitude = np.geomspace(2.0, 0.02, n_features)
    w_true = rng.permutation(magnitude) * rng.choice([-1.0, 1.0], n_features)
    input_noise = rng.permutation(np.linspace(0.0, 1.0, n_features))

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean = rng.standard_normal((n, n_features)) @ chol.T
        y = clean @ w_true + label_noise * rng.standard_normal(n)
        observed = clean + rng.standard_normal((n, n_features)) * input_noise
        return torch.from_numpy(observed), torch.from_numpy(y)

    x_train, y_train = split(n_train)
    x_val, y_val = split(n_val)
    x_test, y_test = split(n_test)
    return QuadraticData(x_train, y_train, x_val, y_val, x_test, y_test)


def half_mse(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """½ mean squared error of the linear model ``w`` (w may carry leading batch dimensions)."""
    residual = w @ x.T - y if w.dim() > 1 else x @ w - y
    return 0.5 * residual.pow(2).mean(-1)


class ClosedForm:
    """Exact best response, validation loss and optimum of one problem instance."""

    def __init__(self, data: QuadraticData, low: float, high: float) -> None:
        self.data = data
        self.low, self.high = low, high
        n = data.x_train.shape[0]
        self.gram = data.x_train.T @ data.x_train / n
        self.xty = data.x_train.T @ data.y_train / n

    def best_response(self, penalties: torch.Tensor) -> torch.Tensor:
        """w*(λ) for a vector of penalties (differentiable in λ)."""
        return torch.linalg.solve(self.gram + torch.diag(penalties), self.xty)

    def val_loss(self, penalties: torch.Tensor | np.ndarray | list[float]) -> float:
        """F(w*(λ)): the validation loss of the exact best response."""
        lam = torch.as_tensor(np.asarray(penalties, dtype=np.float64))
        return float(half_mse(self.data.x_val, self.data.y_val, self.best_response(lam)))

    def test_loss(self, penalties: torch.Tensor | np.ndarray | list[float]) -> float:
        """Test loss of the exact best response (reporting only)."""
        lam = torch.as_tensor(np.asarray(penalties, dtype=np.float64))
        return float(half_mse(self.data.x_test, self.data.y_test, self.best_response(lam)))

    def hypergradient_log(self, log_penalties: torch.Tensor) -> torch.Tensor:
        """Exact dF/d(log λ)."""
        log_lam = log_penalties.detach().clone().double().requires_grad_(True)
        loss = half_mse(self.data.x_val, self.data.y_val, self.best_response(log_lam.exp()))
        (grad,) = torch.autograd.grad(loss, log_lam)
        return grad

    @cached_property
    def optimum(self) -> tuple[np.ndarray, float]:
        """(penalties, validation loss) at the exact optimum over the box [low, high]^d."""
        from scipy.optimize import minimize

        d = self.gram.shape[0]
        lo, hi = math.log(self.low), math.log(self.high)

        def objective(log_lam: np.ndarray) -> tuple[float, np.ndarray]:
            t = torch.from_numpy(log_lam).requires_grad_(True)
            loss = half_mse(self.data.x_val, self.data.y_val, self.best_response(t.exp()))
            (grad,) = torch.autograd.grad(loss, t)
            return float(loss.detach()), grad.numpy().copy()

        rng = np.random.default_rng(12345)
        starts = [np.full(d, v) for v in np.linspace(lo, hi, 4)] + [rng.uniform(lo, hi, d) for _ in range(4)]
        best_x, best_f = None, math.inf
        for x0 in starts:
            res = minimize(
                objective,
                x0,
                jac=True,
                method="L-BFGS-B",
                bounds=[(lo, hi)] * d,
                options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12},
            )
            if res.fun < best_f:
                best_x, best_f = res.x, float(res.fun)
        assert best_x is not None
        return np.exp(best_x), best_f

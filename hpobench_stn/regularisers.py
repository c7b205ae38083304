"""How a torch task's hyperparameters act on its network: the declarations both doors of a ``TorchTask`` read.

A declaration pairs a hyperparameter of the search space with its effect on training:

* :class:`Dropout` ``(hp, modules)``: the rate of the named dropout modules (``nn.Dropout``, ``nn.Dropout1d/2d/3d``;
  names as in ``model.named_modules()``, glob patterns allowed, ``"*"`` for every dropout module);
* :class:`L2` ``(hp, params)``: the penalty ``½ λ Σ ||p||²`` on the named parameters (names as in
  ``model.named_parameters()``, glob patterns allowed: ``"*.weight"``), added to the training loss; its gradient
  is ``λ p``, as ``weight_decay`` in ``torch.optim.SGD``;
* :class:`Augment` ``(hps, fn)``: ``fn(x, values, generator) -> x`` applied to every training input batch, where
  ``values`` is ``(B, k)``, one row per example, a column per hyperparameter of ``hps`` (in order);
* :class:`LossTerm` ``(hp, fn)``: ``λ · fn(outputs, targets)`` added to the training loss; ``fn`` returns a scalar
  or one value per example ``(B,)``.

The black-box door gives every example the configuration's values; the white-box door (STN) gives each example
its own row of perturbed values, and penalises the weights each example actually used (see
:mod:`hpobench_stn.stn.convert`). Validation and test losses carry no regulariser. :class:`Regularisers` checks a
task's declarations against its network and applies them; nothing here loops over examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import Tensor, nn

from hpobench_stn.errors import UserError
from hpobench_stn.space import Hyperparameter, SearchSpace

#: Squared norm of one parameter: given the STN gates ``(B, n)`` (``None`` for a plain network), a scalar or ``(B,)``.
SquaredNorm = Callable[[Tensor | None], Tensor]
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class Dropout:
    """The dropout rate of the dropout modules named by ``modules`` (names or glob patterns)."""

    hp: Hyperparameter
    modules: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", _names(self.modules))
        if self.hp.low < 0 or self.hp.high >= 1:
            raise ValueError(f"dropout rate {self.hp.name!r} must lie in [0, 1): use Rate(..., high=0.9)")

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        """The hyperparameter it declares."""
        return (self.hp,)


@dataclass(frozen=True)
class L2:
    """An L2 penalty ``½ λ Σ ||p||²`` on the parameters named by ``params`` (names or glob patterns)."""

    hp: Hyperparameter
    params: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _names(self.params))

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        """The hyperparameter it declares."""
        return (self.hp,)


@dataclass(frozen=True)
class Augment:
    """A training-input augmentation ``fn(x, values (B, k), generator) -> x`` driven by ``hps`` (one or several)."""

    hps: tuple[Hyperparameter, ...]
    fn: Callable[[Any, Tensor, torch.Generator], Any]

    def __post_init__(self) -> None:
        hps = (self.hps,) if isinstance(self.hps, Hyperparameter) else tuple(self.hps)
        object.__setattr__(self, "hps", hps)

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        """The hyperparameters it declares, in the order of ``values``' columns."""
        return self.hps


@dataclass(frozen=True)
class LossTerm:
    """A training-loss term ``λ · fn(outputs, targets)`` (``fn``: a scalar or one value per example)."""

    hp: Hyperparameter
    fn: Callable[[Any, Any], Tensor]

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        """The hyperparameter it declares."""
        return (self.hp,)


Declaration = Dropout | L2 | Augment | LossTerm


def _match(patterns: tuple[str, ...], names: Sequence[str], what: str, hp: str) -> list[str]:
    """The names matching any pattern; a pattern matching nothing is an error (the hyperparameter would act on
    nothing)."""
    out: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatchcase(n, pattern)]
        if not hits:
            raise UserError(
                f"hyperparameter {hp!r}: no {what} of the model matches {pattern!r}; "
                f"the model's {what}s: {', '.join(names) or 'none'}"
            )
        out += [n for n in hits if n not in out]
    return out


class Regularisers:
    """A task's declarations, checked and indexed by column of the search space, and applied in both doors."""

    def __init__(self, declarations: Sequence[Declaration]) -> None:
        self.declarations = tuple(declarations)
        for d in self.declarations:
            if not isinstance(d, Declaration):
                raise UserError(f"{d!r} is not a declaration: use Dropout, L2, Augment or LossTerm")
        try:
            self.space = SearchSpace(hp for d in self.declarations for hp in d.hyperparameters)
        except ValueError as exc:
            raise UserError(f"the task's declarations: {exc}") from None
        self.column = column = {name: i for i, name in enumerate(self.space.names)}
        self.augments = [([column[hp.name] for hp in d.hps], d.fn) for d in self.declarations if isinstance(d, Augment)]
        self.terms = [(column[d.hp.name], d.fn) for d in self.declarations if isinstance(d, LossTerm)]

    def dropout_columns(self, model: nn.Module) -> dict[str, int]:
        """Dropout module name → the column of its rate, resolved on the plain network."""
        modules = [n for n, m in model.named_modules() if isinstance(m, DROPOUT_TYPES)]
        out: dict[str, int] = {}
        for d in self.declarations:
            if isinstance(d, Dropout):
                for name in _match(d.modules, modules, "dropout module", d.hp.name):
                    if name in out:
                        raise UserError(f"dropout module {name!r} is declared by two hyperparameters")
                    out[name] = self.column[d.hp.name]
        return out

    def penalty_names(self, model: nn.Module) -> list[tuple[int, list[str]]]:
        """Per L2 declaration: its column and the parameter names it penalises, resolved on the plain network."""
        names = [n for n, _ in model.named_parameters()]
        return [
            (self.column[d.hp.name], _match(d.params, names, "parameter", d.hp.name))
            for d in self.declarations
            if isinstance(d, L2)
        ]

    @staticmethod
    def bind_penalties(model: nn.Module, penalties: list[tuple[int, list[str]]]) -> list[tuple[int, list[SquaredNorm]]]:
        """The squared norms of the penalised parameters of ``model``: a plain parameter's ``||p||²``, or an STN
        twin's per-example norm of the weights each example uses (its ``squared_norm(name)``)."""
        bound = []
        for col, names in penalties:
            norms: list[SquaredNorm] = []
            for name in names:
                path, _, attr = name.rpartition(".")
                module = model.get_submodule(path)
                if hasattr(module, "squared_norm"):
                    norms.append(module.squared_norm(attr))
                else:
                    p = getattr(module, attr)
                    norms.append(lambda gates, p=p: p.pow(2).sum())
            bound.append((col, norms))
        return bound

    @staticmethod
    def set_rates(model: nn.Module, dropouts: dict[str, int], values: Sequence[float]) -> None:
        """Set the plain network's declared dropout modules to the configuration's rates (the black-box door)."""
        for name, col in dropouts.items():
            model.get_submodule(name).p = float(values[col])

    def augment(self, x: Any, values: Tensor, generator: torch.Generator) -> Any:
        """Apply the declared augmentations in order, each at its columns of ``values`` ``(B, n)``."""
        for cols, fn in self.augments:
            x = fn(x, values[:, cols], generator)
        return x

    def training_loss(
        self,
        loss: Tensor,
        outputs: Any,
        targets: Any,
        values: Tensor,
        penalties: list[tuple[int, list[SquaredNorm]]],
        gates: Tensor | None,
    ) -> Tensor:
        """``loss`` plus the batch mean of each example's penalties and loss terms at its row of ``values``
        (``(B, n)``, or ``(1, n)`` shared by the batch)."""
        extra: Tensor | None = None
        for col, norms in penalties:
            term = 0.5 * values[:, col] * sum(norm(gates) for norm in norms)
            extra = term if extra is None else extra + term
        for col, fn in self.terms:
            term = values[:, col] * fn(outputs, targets)
            extra = term if extra is None else extra + term
        return loss if extra is None else loss + extra.mean()

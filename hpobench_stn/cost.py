"""Compute-weighted epoch-equivalents: what one example of each step a run takes costs, in examples of the task's
fixed network.

An epoch budget means "this many epochs of the task's fixed network's training compute". Every step is charged per
example at its *cost factor*: its floating-point operations per example over those of one training step of the
task's fixed network (a black-box trial's minibatch, forward and backward, at the space's initial configuration),
which is 1 by definition. The other steps are measured as the STN trainer runs them: its weight step, its
hyperparameter step (forward and the λ-only backward), Delta-STN's weight step (both passes) and the linearised
variant's (a plain pass and a Jacobian-vector pass), and Delta-STN's hyperparameter step.

The counts come from :class:`torch.utils.flop_counter.FlopCounterMode`, a dispatch mode, over one minibatch of each
step: it counts the matrix products and convolutions wherever they are called (the quadratic task's hand-written
ones included), and matrix-vector products and the fused LSTM kernels of ``nn.LSTM`` through the formulas here (two
FLOPs per weight per row forward, twice that backward); elementwise work (activations, dropout, augmentation,
optimiser updates) is not counted. They are measured once per (task, preset) and process, outside any run's
budget, with the global random state left as it was, and stored in every run's metadata (``cost_factors``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpobench_stn.budget import BudgetExhausted
from hpobench_stn.errors import UserError

if TYPE_CHECKING:
    from hpobench_stn.task import Task

UNIT = (
    "fixed-network examples: an example of a step costs its forward+backward FLOPs per example "
    "(torch.utils.flop_counter: matrix products and convolutions) over those of the task's fixed network's "
    "training step; an epoch-equivalent is train_size of them"
)


@dataclass(frozen=True)
class StepCosts:
    """What one example of each of the STN trainer's steps costs, in examples of the task's fixed network."""

    train: float = 1.0
    hyper: float = 1.0


@dataclass(frozen=True)
class CostFactors:
    """Per-example FLOPs of each step a task can run (see the module docstring), and their ratios to ``fixed``.

    The steps: ``fixed``, ``stn_train``, ``stn_hyper``, ``delta_train``, ``delta_hyper``, ``delta_linearized_train``
    (a step the task cannot run, for want of a white-box door or of a linearisable problem, is absent).
    """

    flops: Mapping[str, float]
    batch: Mapping[str, int] = field(default_factory=dict)

    def factor(self, step: str) -> float:
        """Per-example FLOPs of ``step`` over those of the fixed network's training step."""
        return self.flops[step] / self.flops["fixed"]

    @property
    def factors(self) -> dict[str, float]:
        """Every measured step's factor, by name."""
        return {step: self.factor(step) for step in self.flops}

    def stn_steps(self, delta: bool, linearize: bool = False) -> StepCosts:
        """The costs the STN trainer charges: STN's steps, or Delta-STN's (plain or linearised)."""
        if not delta:
            return StepCosts(self.factor("stn_train"), self.factor("stn_hyper"))
        train = "delta_linearized_train" if linearize else "delta_train"
        return StepCosts(self.factor(train), self.factor("delta_hyper"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the run metadata's ``cost_factors``)."""
        return {
            "unit": UNIT,
            "factors": self.factors,
            "flops_per_example": dict(self.flops),
            "measured_batch": dict(self.batch),
        }


_CACHE: dict[tuple[str, str, str, str], CostFactors] = {}


def cost_factors(task: Task) -> CostFactors:
    """The cost factors of ``task``'s preset, measured on its first use in this process (see :func:`measure`)."""
    key = (task.name, task.preset.name, repr(sorted(task.preset.settings.items())), str(task.device))
    if key not in _CACHE:
        _CACHE[key] = measure(task)
    return _CACHE[key]


def measure(task: Task) -> CostFactors:
    """Count one minibatch of every step ``task`` can run (see the module docstring)."""
    import torch

    device = torch.device(task.device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    flops: dict[str, float] = {}
    batch: dict[str, int] = {}
    with torch.random.fork_rng(devices=cuda):
        _measure_fixed(task, flops, batch)
        _measure_stn(task, flops, batch)
    if not flops["fixed"] > 0:
        raise ValueError(f"task {task.name!r}: its fixed network's training step counted no FLOPs")
    return CostFactors(flops, batch)


class _FirstMinibatch:
    """A meter that lets one minibatch through and ends the epoch at the next (or a step's tally of examples)."""

    def __init__(self, stop: bool = True) -> None:
        self.examples = 0
        self.stop = stop

    def charge(self, examples: int, cost: float = 1.0) -> None:
        if self.stop and self.examples:
            raise BudgetExhausted
        self.examples += examples


def _count(step: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_formulas()) as counter, suppress(BudgetExhausted):
        step()
    return counter.get_total_flops()


def _measure_fixed(task: Task, flops: dict[str, float], batch: dict[str, int]) -> None:
    # A task whose epoch is one minibatch would have its validation pass counted with it; the built-in ones have many.
    trial = task.make_trial(task.space.default(), seed=0)
    meter = _FirstMinibatch()
    total = _count(lambda: trial.train_epoch(meter))  # type: ignore[arg-type]
    if meter.examples <= 0:
        raise ValueError(f"task {task.name!r}: its trial charged no examples for its first minibatch")
    flops["fixed"], batch["fixed"] = total / meter.examples, meter.examples


def _measure_stn(task: Task, flops: dict[str, float], batch: dict[str, int]) -> None:
    from hpobench_stn.stn.settings import DeltaStnSettings, StnSettings
    from hpobench_stn.stn.trainer import StnTrainer

    try:
        problem = task.stn_problem(0)
    except UserError:
        return  # no white-box door
    variants = (
        ("stn", StnSettings(), False),
        ("delta", DeltaStnSettings(), True),
        ("delta_linearized", DeltaStnSettings(linearize=True), True),
    )
    for name, settings, delta in variants:
        trainer = StnTrainer(problem, settings.resolved(problem, task.max_epochs, delta=delta), seed=0)
        meter = _FirstMinibatch(stop=False)
        train_batch = next(iter(problem.train_batches(trainer.generator)))
        size = problem.batch_size(train_batch)
        try:
            flops[f"{name}_train"] = _count(lambda t=trainer, b=train_batch, m=meter: t.train_step(b, m)) / size
        except UserError:
            continue  # a problem without outputs() and criterion() cannot be linearised
        batch[f"{name}_train"] = size
        if name != "delta_linearized":  # its hyperparameter step is Delta-STN's
            val_batch = next(iter(problem.val_batches(trainer.generator)))
            size = problem.batch_size(val_batch)
            flops[f"{name}_hyper"] = _count(lambda t=trainer, b=val_batch, m=meter: t.hyper_step(b, m)) / size
            batch[f"{name}_hyper"] = size


# --- what torch's counter does not know: matrix-vector products and the fused LSTM kernels of nn.LSTM -------------
def _mv(matrix: Any, vector: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * math.prod(matrix)


def _addmv(bias: Any, matrix: Any, vector: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * math.prod(matrix)


def _dot(a: Any, b: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * math.prod(a)


def _rows(input_shape: Any) -> int:
    return math.prod(input_shape[:-1])  # time steps x batch, or the rows of a packed sequence


def _matrices(shapes: Any) -> int:
    return sum(math.prod(s) for s in shapes if len(s) == 2)


def _mkldnn_rnn_layer(input_shape: Any, w_ih: Any, w_hh: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * _rows(input_shape) * (math.prod(w_ih) + math.prod(w_hh))


def _mkldnn_rnn_layer_backward(input_shape: Any, w_ih: Any, w_hh: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * _mkldnn_rnn_layer(input_shape, w_ih, w_hh)  # the gradients of the data and of the weights


def _cudnn_rnn(input_shape: Any, weights: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * _rows(input_shape) * _matrices(weights)


def _cudnn_rnn_backward(input_shape: Any, weights: Any, *args: Any, **kwargs: Any) -> int:
    mask = kwargs.get("output_mask", args[-1] if args else (True, True, True, True))
    return _cudnn_rnn(input_shape, weights) * (1 + int(bool(mask[3])))  # the data's gradient, the weights' if asked


def _formulas() -> dict[Any, Callable[..., int]]:
    import torch

    aten = torch.ops.aten
    return {
        aten.mv: _mv,
        aten.addmv: _addmv,
        aten.dot: _dot,
        aten.vdot: _dot,
        aten.mkldnn_rnn_layer: _mkldnn_rnn_layer,
        aten.mkldnn_rnn_layer_backward: _mkldnn_rnn_layer_backward,
        aten._cudnn_rnn: _cudnn_rnn,
        aten._cudnn_rnn_backward: _cudnn_rnn_backward,
    }

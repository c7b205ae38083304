"""A task that trains a torch network, both doors derived from one definition (README, "Adding a task").

A subclass of :class:`TorchTask` writes four things:

* ``build_model()``: the plain network, from standard modules (``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding``,
  ``nn.LSTM``, dropout modules, anything else), taking a batch of inputs, batch first;
* ``load_data()``: a :class:`Splits` of ``(inputs, targets)`` tensors for train, val and test;
* ``loss(outputs, targets)``: the mean loss of a batch (the validation objective, and the training loss before
  the regularisers);
* ``hyperparameters``: declarations of how each one acts (:mod:`hpobench_stn.regularisers`); the search space is
  derived from them, in their order;

plus ``name``, ``description`` and ``presets``, whose settings include ``batch_size`` and ``lr``. Optional:
``metrics`` (name → ``fn(outputs, targets)``, a batch mean, reported with the loss), ``plain_modules`` (name
patterns of layers the STN network keeps plain), and the hooks :meth:`TorchTask.weight_optimizer`,
:meth:`TorchTask.clip_gradients`, :meth:`TorchTask.stn_defaults` and :meth:`TorchTask.batches`.

The black-box door (:class:`TorchTaskTrial`) trains the plain network at the configuration: declared dropout
modules at their rates (PyTorch's own kernels, drawing from a random state the trial forks and checkpoints),
augmentations at the configuration's strengths, penalties and loss terms added to the training loss; Adam at the
preset's ``lr``; after each epoch's validation the non-monotonic rule multiplies the learning rate by
``lr_decay``. The white-box door (:meth:`TorchTask.stn_problem`) is :mod:`hpobench_stn.stn.generic`. Preset
settings read besides ``batch_size`` and ``lr``, with their defaults: ``eval_batch_size`` 1024, ``nonmono`` 5,
``lr_decay`` 1.0 (constant), ``stn_epochs`` (5 trial lengths), ``stn_warmup_epochs`` 1, ``stn_hyper_lr`` 3e-3.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hpobench_stn.budget import BudgetMeter
from hpobench_stn.errors import UserError
from hpobench_stn.regularisers import Declaration, Regularisers
from hpobench_stn.space import Config, SearchSpace
from hpobench_stn.task import Task
from hpobench_stn.torch_trial import NonMonotonicRule, TorchTrial

Pair = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Splits:
    """The ``(inputs, targets)`` tensors of the train, val and test splits (the batch in dimension 0)."""

    train: Pair
    val: Pair
    test: Pair

    def split(self, name: str) -> Pair:
        """The tensors of split ``name`` ("train", "val" or "test")."""
        if name not in ("train", "val", "test"):
            raise UserError(f"unknown split {name!r}: use 'train', 'val' or 'test'")
        return getattr(self, name)

    def to(self, device: torch.device) -> Splits:
        """The splits on ``device``."""
        return Splits(*((x.to(device), y.to(device)) for x, y in (self.train, self.val, self.test)))

    @classmethod
    def shuffled(
        cls, x: Tensor, y: Tensor, n_train: int, n_val: int, n_test: int | None = None, seed: int = 0
    ) -> Splits:
        """Splits of one data set in a fixed random order: ``n_train``, ``n_val``, then ``n_test`` (default: the
        rest) examples."""
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        ends = [n_train, n_train + n_val, x.shape[0] if n_test is None else n_train + n_val + n_test]
        if ends[2] > x.shape[0]:
            raise UserError(f"the splits need {ends[2]} examples, the data set has {x.shape[0]}")
        idx = [order[a:b] for a, b in zip([0, *ends[:2]], ends, strict=True)]
        return cls(*((x[i], y[i]) for i in idx))


def accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Fraction of the batch whose largest output is the target class."""
    return (outputs.argmax(-1) == targets).float().mean()


class LrDecay(NonMonotonicRule):
    """The non-monotonic rule multiplying the learning rate by ``factor`` (``lr_decay``; 1.0 keeps it)."""

    def __init__(self, nonmono: int, factor: float) -> None:
        super().__init__(nonmono)
        self.factor = factor

    def decayed(self, lr: float) -> float:
        """``lr * factor``."""
        return lr * self.factor


class TrialRng:
    """The global torch random state as one trial sees it (plain dropout modules draw from it): installed while
    the trial trains, kept between epochs, checkpointed like a generator (``get_state``/``set_state``)."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.devices = [device] if device.type == "cuda" else []
        self.state = [torch.Generator().manual_seed(seed).get_state()]
        self.state += [torch.Generator(device).manual_seed(seed).get_state() for device in self.devices]

    @contextmanager
    def active(self) -> Iterator[None]:
        """Train under this trial's random state; the global one is restored afterwards."""
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.state[0])
            for device, state in zip(self.devices, self.state[1:], strict=True):
                torch.cuda.set_rng_state(state, device)
            try:
                yield
            finally:
                self.state = [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in self.devices]

    def get_state(self) -> list[Tensor]:
        """The saved random state."""
        return list(self.state)

    def set_state(self, state: list[Tensor]) -> None:
        """Restore :meth:`get_state`."""
        self.state = list(state)


class TorchTask(Task):
    """A task training a plain torch network, declaring how each hyperparameter acts (see the module docstring)."""

    hyperparameters: ClassVar[Sequence[Declaration]] = ()
    metrics: ClassVar[Mapping[str, Callable[[Any, Any], Tensor]]] = {}
    plain_modules: ClassVar[Sequence[str]] = ()

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The plain network (random initialisation from torch's global generator, which the door seeds)."""

    @abstractmethod
    def load_data(self) -> Splits:
        """The train, val and test tensors of this preset."""

    @abstractmethod
    def loss(self, outputs: Any, targets: Any) -> Tensor:
        """The mean loss of a batch."""

    # --- derived from the definition -------------------------------------------------------------------------
    @cached_property
    def regularisers(self) -> Regularisers:
        """The declarations, checked and indexed by column of the search space."""
        return Regularisers(tuple(self.hyperparameters))

    @property
    def space(self) -> SearchSpace:
        """The declared hyperparameters, in declaration order."""
        return self.regularisers.space

    @cached_property
    def data(self) -> Splits:
        """The splits on the task's device."""
        return self.load_data().to(self.torch_device)

    @property
    def torch_device(self) -> torch.device:
        """The device the network and the data live on."""
        return torch.device(self.device)

    @property
    def train_size(self) -> int:
        """Training examples per epoch."""
        return int(self.data.train[0].shape[0])

    @property
    def batch_size(self) -> int:
        """Training minibatch size (preset setting ``batch_size``)."""
        return int(self.preset.settings["batch_size"])

    def setting(self, key: str, default: Any) -> Any:
        """A preset setting, or ``default`` when the preset does not set it."""
        return self.preset.settings.get(key, default)

    def new_model(self, seed: int) -> nn.Module:
        """The plain network initialised from ``seed`` (without touching the global random state), on the device."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(torch.Generator().manual_seed(seed).get_state())
            model = self.build_model()
        return model.to(self.torch_device)

    def batches(self, split: str, generator: torch.Generator | None = None, size: int | None = None) -> Iterator[Pair]:
        """Minibatches of ``split``: shuffled by ``generator``, in order without one; ``size`` default the
        training batch size. Override it for data not held as tensors."""
        x, y = self.data.split(split)
        step = size or self.batch_size
        if generator is None:
            for start in range(0, x.shape[0], step):
                yield x[start : start + step], y[start : start + step]
            return
        order = torch.randperm(x.shape[0], generator=generator).to(x.device)
        for start in range(0, x.shape[0], step):
            idx = order[start : start + step]
            yield x[idx], y[idx]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, forward: Callable[[Any], Any] | None = None) -> dict[str, float]:
        """Loss and metrics over a whole split, model in evaluation mode; ``forward(x)`` default ``model(x)``."""
        model.eval()
        forward = forward or model
        totals: dict[str, Tensor] = {}
        count = 0
        for x, y in self.batches(split, None, int(self.setting("eval_batch_size", 1024))):
            out = forward(x)
            batch = x.shape[0]
            count += batch
            parts = {"loss": self.loss(out, y), **{name: fn(out, y) for name, fn in self.metrics.items()}}
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + torch.as_tensor(value).detach().double() * batch
        return {name: float(total) / count for name, total in totals.items()}

    # --- hooks with defaults ---------------------------------------------------------------------------------
    def weight_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The optimizer of the network's weights, in both doors (default: Adam)."""
        return torch.optim.Adam(params, lr=lr)

    def clip_gradients(self, params: list[nn.Parameter]) -> None:
        """Clip the weights' gradients before each step, in both doors (default: nothing)."""

    def lr_rule(self) -> NonMonotonicRule:
        """The learning-rate rule after each epoch's validation, in both doors (preset ``nonmono``, ``lr_decay``)."""
        return LrDecay(int(self.setting("nonmono", 5)), float(self.setting("lr_decay", 1.0)))

    def stn_defaults(self) -> dict[str, Any]:
        """STN's trainer settings for this task (``--method-arg`` overrides them)."""
        steps = math.ceil(self.train_size / self.batch_size)
        return {
            "epochs": int(self.setting("stn_epochs", 5 * self.preset.max_epochs)),
            "warmup_steps": round(float(self.setting("stn_warmup_epochs", 1)) * steps),
            "lr": float(self.preset.settings["lr"]),
            "hyper_lr": float(self.setting("stn_hyper_lr", 3e-3)),
        }

    # --- the two doors ---------------------------------------------------------------------------------------
    def make_trial(self, config: Config, seed: int) -> TorchTaskTrial:
        """The black-box door: the plain network at ``config``, seeded."""
        return TorchTaskTrial(self, self.space.validate(config), seed)

    def stn_problem(self, seed: int) -> Any:
        """The white-box door: the same network with STN layers (see :mod:`hpobench_stn.stn.generic`)."""
        from hpobench_stn.stn.generic import TorchStnProblem

        return TorchStnProblem(self, seed)


class TorchTaskTrial(TorchTrial):
    """One training of a :class:`TorchTask`'s plain network at a fixed configuration (the black-box door)."""

    task: TorchTask

    def __init__(self, task: TorchTask, config: Config, seed: int) -> None:
        super().__init__(task, config, seed)
        regs = task.regularisers
        self.shuffle = torch.Generator().manual_seed(seed)  # minibatch order
        self.noise = torch.Generator(device=task.torch_device).manual_seed(seed)  # augmentations
        self.dropout_rng = TrialRng(seed, task.torch_device)  # the plain dropout modules
        self.model = task.new_model(seed)
        self.dropouts = regs.dropout_columns(self.model)
        self.penalties = regs.bind_penalties(self.model, regs.penalty_names(self.model))
        self.params = list(self.model.parameters())
        self.optimizer = task.weight_optimizer(self.params, float(task.preset.settings["lr"]))
        self.decay = task.lr_rule()
        self._apply_config()

    def _apply_config(self) -> None:
        row = [float(self.config[name]) for name in self.task.space.names]
        self.values = torch.tensor([row], device=self.task.torch_device)
        self.task.regularisers.set_rates(self.model, self.dropouts, row)

    def set_config(self, config: Config) -> None:
        """Continue with new hyperparameters (PBT): new dropout rates, penalties and strengths."""
        super().set_config(config)
        self._apply_config()

    @property
    def generators(self) -> dict[str, Any]:
        """Minibatch order, augmentation noise, and the random state of the plain dropout modules."""
        return {"shuffle": self.shuffle, "noise": self.noise, "dropout": self.dropout_rng}

    def _train_one_epoch(self, meter: BudgetMeter) -> None:
        self.model.train()
        with self.dropout_rng.active():
            for x, y in self.task.batches("train", self.shuffle):
                meter.charge(x.shape[0])
                self.train_step(x, y)

    def train_step(self, x: Any, y: Any) -> Tensor:
        """One optimizer step on a minibatch at the configuration (model in training mode)."""
        task, regs = self.task, self.task.regularisers
        if regs.augments:
            x = regs.augment(x, self.values.expand(x.shape[0], -1), self.noise)
        out = self.model(x)
        loss = regs.training_loss(task.loss(out, y), out, y, self.values, self.penalties, None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        task.clip_gradients(self.params)
        self.optimizer.step()
        return loss.detach()

    def _evaluate_model(self, split: str) -> dict[str, float]:
        return self.task.evaluate(self.model, split)

"""PTB's white-box door: the language model of :mod:`tasks.ptb.model` built with STN layers.

A batch is one BPTT window of the training (or validation) stream; its rows are sequences, so the trainer's
per-example hyperparameters are per sequence: ``gates`` and ``values`` are ``(B, 7)``. The hidden state is
carried across the windows of each stream (detached) and reset at the start of every pass over it; the
training stream and the validation stream that STN's hyperparameter steps read (the validation split batchified
at the training batch size, as the reference code does) each keep their own. Every ``loss`` and ``outputs`` call on
the same window starts from the same state (Delta-STN calls them twice); the state the last ``loss`` call reached
is carried on when the next window is drawn (``outputs`` alone, which a ``torch.func`` transform may run, keeps
nothing).

The hyperparameter steps minimise the plain validation cross-entropy (model in evaluation mode: no dropout, no
α/β terms); the reference code added the α and β terms to that loss, which we do not (STN.md's rule: the
validation objective is the plain validation loss). Trainer defaults (``defaults``) are the reference PTB
settings of STN.md: SGD lr 30 on the weights with gradient clipping 0.25, Adam lr 0.01 on λ, σ fixed at 1, a
warm-up of one epoch of training windows, and the learning-rate rule of the black-box door after every epoch.
STN's epoch limit is ten times a black-box trial's, so the run's budget is what ends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from hpobench_stn.stn.problem import GateFn, StnProblem
from tasks.ptb.model import LmOutput, State, detach_state, evaluate_stream, lm_loss, windows
from tasks.ptb.task import NonMonotonicDecay, perplexity

if TYPE_CHECKING:
    from tasks.ptb.task import PtbTask


@dataclass
class Window:
    """One BPTT window: inputs and targets ``(T, B)``, and which stream it comes from."""

    inputs: Tensor
    targets: Tensor
    stream: str


class PtbStnProblem(StnProblem):
    """Data, STN language model and losses of the PTB task for STN."""

    def __init__(self, task: PtbTask, seed: int) -> None:
        s = task.preset.settings
        self.task = task
        self.space = task.space
        self.train_size = task.train_size
        self.bptt = int(s["bptt"])
        self.batch = int(s["batch_size"])
        self.clip = float(s["clip"])
        self.model = task.build_model(stn=True, seed=seed)
        self.mask_generator = torch.Generator(device=task.torch_device).manual_seed(seed)
        self.decay = NonMonotonicDecay(s["nonmono"], s["lr_decay"])
        self._state: dict[str, State | None] = {"train": None, "hyper": None}
        self._next_state: dict[str, State | None] = {"train": None, "hyper": None}
        self.defaults = {
            "epochs": 10 * task.preset.max_epochs,
            "warmup_steps": task.windows_per_epoch,
            "t_train": 2,
            "t_val": 1,
            "lr": float(s["lr"]),
            "hyper_lr": 0.01,
            "sigma_init": 1.0,
            "tune_sigma": False,
        }

    def _windows(self, stream: str, data: Tensor) -> Iterator[Window]:
        self._state[stream] = self._next_state[stream] = None
        for inputs, targets in windows(data, self.bptt):
            yield Window(inputs, targets, stream)
            self._state[stream] = self._next_state[stream]  # runs when the next window is drawn

    def train_batches(self, generator: torch.Generator) -> Iterator[Window]:
        """The training windows in order (the order carries the hidden state, so ``generator`` is unused)."""
        return self._windows("train", self.task.train_stream)

    def val_batches(self, generator: torch.Generator) -> Iterator[Window]:
        """The validation windows at the training batch size, in order, for the hyperparameter steps."""
        return self._windows("hyper", self.task.eval_stream("hyper"))

    def batch_size(self, batch: Window) -> int:
        """Sequences in the window (one example each, as in the black-box door)."""
        return int(batch.inputs.shape[1])

    def outputs(self, batch: Window, gates: Tensor, values: Tensor, train: bool) -> LmOutput:
        """The model's forward pass over the window from its stream's carried state (which it does not advance)."""
        device = self.task.torch_device
        return self.model(
            batch.inputs,
            self._state[batch.stream],
            values.to(device),
            gates.to(device),
            generator=self.mask_generator,
        )

    def criterion(self, out: LmOutput, batch: Window, values: Tensor, train: bool) -> Tensor:
        """Mean token cross-entropy of a forward pass, plus α·AR and β·TAR when ``train``."""
        return lm_loss(out, batch.targets, values, train)

    def loss(self, batch: Window, gates: Tensor, values: Tensor, train: bool) -> Tensor:
        """Mean token cross-entropy, plus α·AR and β·TAR when ``train``; the state it reaches is carried on."""
        out = self.outputs(batch, gates, values, train)
        self._next_state[batch.stream] = detach_state(out.state)
        return self.criterion(out, batch, values, train)

    def evaluate(self, split: str, gates: GateFn) -> dict[str, float]:
        """Loss and perplexity over the whole split at the unperturbed λ, state carried across windows."""
        stream = self.task.eval_stream(split)
        g, v = gates(stream.shape[1])
        device = self.task.torch_device
        loss = evaluate_stream(self.model, stream, self.bptt, v.to(device), g.to(device))
        return {"loss": loss, "perplexity": perplexity(loss)}

    def weight_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """Plain SGD, as the black-box door."""
        return torch.optim.SGD(params, lr=lr)

    def clip_gradients(self, params: list[nn.Parameter]) -> None:
        """Clip the weights' gradient norm at the preset's ``clip`` (0.25)."""
        torch.nn.utils.clip_grad_norm_(params, self.clip)

    def on_epoch_end(self, optimizer: torch.optim.Optimizer, epoch: int, val_loss: float) -> None:
        """The black-box door's learning-rate rule (the reference code's)."""
        self.decay.step(optimizer, val_loss)

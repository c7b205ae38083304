"""The CIFAR tasks' white-box door: the same network built with STN layers, regularised per example.

Each training example gets its own perturbed hyperparameters: its augmentation (jitter, cutout, input dropout and
scaling, and for VGG the affine transform) at its own strengths, and its own dropout rate in every dropout layer;
the STN layers' gates see the same (unconstrained) values. Validation and hyperparameter steps see normalised
images without augmentation or dropout.

Defaults (``StnProblem.defaults``; ``--method-arg`` overrides them), from STN.md's reference CIFAR run: weights
SGD with momentum 0.9 (:meth:`CifarStnProblem.weight_optimizer`) at the preset's learning rate (0.01 in the
paper preset, as the reference; the black-box door's rate in the others), λ and σ Adam at 3e-3, σ initialised at
0.5 and tuned, τ 1e-3 (the trainer's default), two weight steps per hyperparameter step, a warm-up of the
preset's ``stn_warmup_epochs`` (5 in the paper preset, as the reference; 1 epoch in the shorter presets) and
``stn_epochs`` epochs in all (``cpu``: 30, five trials' worth, enough to fill a 10-minute budget on a quiet
machine; the harness cuts the training at the budget and reports its best checkpoint). The learning-rate rule
is the black-box door's (:func:`tasks.cifar.task.apply_lr_rule`), applied after every epoch's validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpobench_stn.stn.problem import GateFn, StnProblem
from tasks.cifar.data import normalise
from tasks.cifar.task import DROPOUTS, apply_lr_rule, steps_per_epoch

if TYPE_CHECKING:
    from tasks.cifar.task import CifarTask

Batch = tuple[Tensor, Tensor]


class CifarStnProblem(StnProblem):
    """Data, STN network and losses of a CIFAR task for the STN trainer."""

    def __init__(self, task: CifarTask, seed: int) -> None:
        s = task.preset.settings
        self.task = task
        self.space = task.space
        self.train_size = task.train_size
        self.device = task.device
        self.model = task.build_model(n_hparams=len(task.space), seed=seed).to(task.device)
        self.noise = torch.Generator(device=task.device).manual_seed(seed)  # augmentation and dropout
        self.dropout_columns = [task.space.names.index(name) for name in DROPOUTS]
        self.history: list[float] = []
        self.defaults = {
            "epochs": int(s["stn_epochs"]),
            "warmup_steps": round(s["stn_warmup_epochs"] * steps_per_epoch(task)),
            "lr": float(s["lr"]),
            "hyper_lr": float(s["stn_hyper_lr"]),
            "sigma_init": 0.5,
            "tune_sigma": True,
        }

    def _batches(self, split: str, generator: torch.Generator) -> Iterator[Batch]:
        x_all, y_all = self.task.data.split(split)
        order = torch.randperm(x_all.shape[0], generator=generator).to(self.device)
        step = self.task.batch_size
        for start in range(0, x_all.shape[0], step):
            idx = order[start : start + step]
            yield x_all[idx], y_all[idx]

    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """Shuffled training minibatches of uint8 images and labels."""
        return self._batches("train", generator)

    def val_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """Shuffled validation minibatches (for the hyperparameter steps)."""
        return self._batches("val", generator)

    def batch_size(self, batch: Batch) -> int:
        """Examples in the batch."""
        return int(batch[0].shape[0])

    def outputs(self, batch: Batch, gates: Tensor, values: Tensor, train: bool) -> Tensor:
        """Logits; ``train``: each example augmented and dropped out at its own values."""
        x = batch[0]
        gates = gates.to(self.device)
        if train:
            values = values.to(self.device)
            images = self.task.augmenter(x, values, self.noise)
            return self.model(images, gates, values[:, self.dropout_columns], self.noise)
        return self.model(normalise(x), gates)

    def criterion(self, logits: Tensor, batch: Batch, values: Tensor, train: bool) -> Tensor:
        """Mean cross-entropy of the logits."""
        return F.cross_entropy(logits, batch[1])

    def loss(self, batch: Batch, gates: Tensor, values: Tensor, train: bool) -> Tensor:
        """Mean cross-entropy; ``train``: each example augmented and dropped out at its own values."""
        return self.criterion(self.outputs(batch, gates, values, train), batch, values, train)

    def evaluate(self, split: str, gates: GateFn) -> dict[str, float]:
        """Loss and accuracy over a whole split at the unperturbed λ (model in evaluation mode)."""
        return self.task.evaluate(self.model, split, gates)

    def weight_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """SGD with the preset's momentum (0.9), as the reference CIFAR run."""
        return torch.optim.SGD(params, lr=lr, momentum=float(self.task.preset.settings["momentum"]))

    def on_epoch_end(self, optimizer: torch.optim.Optimizer, epoch: int, val_loss: float) -> None:
        """The reference learning-rate rule (see :func:`tasks.cifar.task.apply_lr_rule`)."""
        apply_lr_rule(optimizer, self.history, val_loss, int(self.task.preset.settings["nonmono"]))

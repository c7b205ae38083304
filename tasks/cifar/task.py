"""The CIFAR-10 tasks: AlexNet (``cifar``) and VGG-16 (``cifar-vgg``) with regularisation and augmentation
hyperparameters, through the black-box door (fixed configuration) and the white-box door (STN, ``stn.py``).

Search space (the STN paper's fifteen for AlexNet; STN's initial values as the reference code's):

=================================  ==============  ======  =================================================
name                               range           init    what
=================================  ==============  ======  =================================================
``conv_dropout_0`` … ``_4``        rate 0 – 0.9    0.05    channel dropout after each convolution (block)
``fc_dropout_0``, ``fc_dropout_1``  rate 0 – 0.9    0.05    dropout at the two hidden fully connected layers
``input_dropout``                  rate 0 – 0.9    0.05    input values zeroed (survivors scaled by 1/(1-p))
``input_scale``                    0 – 0.3         0.05    image × U[1/(1+s), 1+s]
``hue``                            0 – 0.5         0.05    hue shift U[-h, h]
``saturation``, ``brightness``,    0 – 1           0.05    factor U[max(0, 1-b), 1+b]
``contrast``
``cutout_length``                  integer 0 – 24  4       side of the cutout squares (pixels)
``cutout_holes``                   integer 0 – 4   1       number of cutout squares
=================================  ==============  ======  =================================================

Dropout rates are capped at 0.9 (the reference caps them there for stability; the input dropout too, here).
The input-scaling range 0–0.3 and every initial value are the reference code's. VGG adds four affine
augmentation hyperparameters, with the ranges and initial values of the Delta-STN reference code's VGG run:
``rotation`` (0–45°, init 5), ``translate`` (0–0.5 of the image side, 0.05), ``scale`` (0–0.5, 0.05), ``shear``
(0–45°, x-shear, 5); its five conv dropouts act after each of the five blocks. Discrete hyperparameters reach
the task as integers in range (the space casts them in the black-box door, STN floors them).

Training (black-box door): SGD, momentum 0.9, the preset's learning rate, batch 128 (the paper; the tiny
presets use 50), no crop or flip, the augmentation of ``augment.py`` at the
configuration's strengths and dropout at its rates. The reference learning-rate rule, after every epoch's
validation: if more than ``nonmono`` epochs have been validated and this epoch's validation loss is worse than
the best one up to ``nonmono`` epochs ago, multiply the learning rate by 0.1 (the reference code's "non-monotonic"
criterion, ``nonmono`` 60 there; scaled to each preset's length here). The reference's patience-based stop is
not used: a trial runs the preset's epochs (the harness ends it at the budget). Metrics: validation loss and
accuracy each epoch; test loss and accuracy of the best-validation checkpoint.

Presets (the same for both networks except where noted):

* ``tiny``: the shipped slice (400/200/200 real images), AlexNet at 1/8 width with fc 64 (VGG at 1/16, fc 32),
  batch 50, lr 0.05, 3 epochs, ``nonmono`` 1: seconds, for tests.
* ``cpu``: the full validation and test splits and the first 10,000 training images; AlexNet at 1/4 width
  (16-48-96-64-64) with fc 256, lr 0.05; VGG-16 at 1/8 width (8-16-32-64-64) with fc 64, lr 0.02; batch 128,
  6 epochs, ``nonmono`` 2. The learning rates are raised from the reference's 0.01 because at these widths and
  lengths 0.01 barely leaves the initial loss (AlexNet: validation loss 2.16 after 6 epochs at 0.01, 1.65 at
  0.05; VGG: 0.05 and 0.1 stall at 2.30 without normalisation, 0.02 learns). Measured one trial of the default
  configuration on this 2-core machine while other jobs shared it (load average 4-5): AlexNet 164 s with
  torch's default two threads, 30 s with one thread (``OMP_NUM_THREADS=1``: under contention two spinning
  OpenMP threads cost 5x); VGG 65 s with one thread.
* ``paper``: the full 40k/10k/10k split and the paper's networks (AlexNet 64-192-384-256-256 with fc 4096;
  VGG-16 with fc 512), batch 128, lr 0.01, ``nonmono`` 60, 200 epochs; STN warm-up 5 epochs (the reference's).
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from hpobench_stn.budget import BudgetMeter
from hpobench_stn.errors import UserError
from hpobench_stn.space import Config, Float, Hyperparameter, Integer, Rate, SearchSpace
from hpobench_stn.task import Preset, Task
from hpobench_stn.torch_trial import NonMonotonicRule, TorchTrial
from tasks.cifar.augment import Augmenter
from tasks.cifar.data import CifarSplits, load_full, load_slice, normalise
from tasks.cifar.model import GatedNet, build_model

DROPOUTS = (*(f"conv_dropout_{i}" for i in range(5)), "fc_dropout_0", "fc_dropout_1")
DROP_MAX = 0.9
MAX_HOLES = 4


def _common_hyperparameters() -> list[Hyperparameter]:
    hps: list[Hyperparameter] = [
        Rate(name, 0.0, DROP_MAX, init=0.05, description=f"dropout rate ({name.replace('_', ' ')})")
        for name in DROPOUTS
    ]
    hps += [
        Rate("input_dropout", 0.0, DROP_MAX, init=0.05, description="input values zeroed with this probability"),
        Float("input_scale", 0.0, 0.3, init=0.05, description="image times U[1/(1+s), 1+s]"),
        Float("hue", 0.0, 0.5, init=0.05, description="hue shift U[-h, h] (turns)"),
        Float("saturation", 0.0, 1.0, init=0.05, description="saturation factor U[max(0, 1-s), 1+s]"),
        Float("brightness", 0.0, 1.0, init=0.05, description="brightness factor U[max(0, 1-b), 1+b]"),
        Float("contrast", 0.0, 1.0, init=0.05, description="contrast factor U[max(0, 1-c), 1+c]"),
        Integer("cutout_length", 0, 24, init=4, description="side of each cutout square (pixels)"),
        Integer("cutout_holes", 0, MAX_HOLES, init=1, description="number of cutout squares"),
    ]
    return hps


def alexnet_space() -> SearchSpace:
    """The fifteen hyperparameters of the STN paper's AlexNet experiment."""
    return SearchSpace(_common_hyperparameters())


def vgg_space() -> SearchSpace:
    """The fifteen, plus the affine augmentation VGG tunes (rotation, translation, scale, shear)."""
    return SearchSpace(
        [
            *_common_hyperparameters(),
            Float("rotation", 0.0, 45.0, init=5.0, description="rotation angle U[-r, r] (degrees)"),
            Float("translate", 0.0, 0.5, init=0.05, description="shift U[-t, t] of the image side, each axis"),
            Float("scale", 0.0, 0.5, init=0.05, description="zoom factor U[1-s, 1+s]"),
            Float("shear", 0.0, 45.0, init=5.0, description="x-shear angle U[-k, k] (degrees)"),
        ]
    )


class MultiplicativeDecay(NonMonotonicRule):
    """The reference CIFAR code's learning-rate rule (see the module docstring): the learning rate multiplied by
    ``factor`` (0.1) when :class:`~hpobench_stn.torch_trial.NonMonotonicRule` fires."""

    def __init__(self, nonmono: int, factor: float = 0.1, history: list[float] | None = None) -> None:
        super().__init__(nonmono, history)
        self.factor = factor

    def decayed(self, lr: float) -> float:
        """``lr * factor``."""
        return lr * self.factor


def apply_lr_rule(
    optimizer: torch.optim.Optimizer, history: list[float], val_loss: float, nonmono: int, factor: float = 0.1
) -> None:
    """The reference's non-monotonic decay: if more than ``nonmono`` epochs were validated before and
    ``val_loss`` is worse than the best of all but the last ``nonmono`` of them, multiply the lr by ``factor``.
    Appends ``val_loss`` to ``history`` (:class:`MultiplicativeDecay` over a history the caller holds)."""
    MultiplicativeDecay(nonmono, factor, history).step(optimizer, val_loss)


class CifarTrial(TorchTrial):
    """One training of the network at a fixed configuration (the black-box door)."""

    task: CifarTask

    def __init__(self, task: CifarTask, config: Config, seed: int) -> None:
        super().__init__(task, config, seed)
        s = task.preset.settings
        self.shuffle = torch.Generator().manual_seed(seed)  # minibatch order (CPU)
        self.noise = torch.Generator(device=task.device).manual_seed(seed)  # augmentation and dropout
        self.model = task.build_model(seed=seed).to(task.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=s["lr"], momentum=s["momentum"])
        self.decay = MultiplicativeDecay(s["nonmono"])

    @property
    def generators(self) -> dict[str, torch.Generator]:
        """The minibatch-order generator and the augmentation and dropout one."""
        return {"shuffle": self.shuffle, "noise": self.noise}

    def _train_one_epoch(self, meter: BudgetMeter) -> torch.Tensor:
        data, batch = self.task.data, self.task.batch_size
        order = torch.randperm(data.train_x.shape[0], generator=self.shuffle).to(self.task.device)
        self.model.train()
        losses = []
        for start in range(0, order.shape[0], batch):
            idx = order[start : start + batch]
            meter.charge(idx.shape[0])
            losses.append(self.train_step(data.train_x[idx], data.train_y[idx]))
        return torch.stack(losses).mean()  # on the device: read once, by the caller

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One SGD step on a minibatch of uint8 images: augmentation and dropout at the configuration."""
        rates = [float(self.config[name]) for name in DROPOUTS]
        x = self.task.augmenter(images, self.config, self.noise)
        loss = F.cross_entropy(self.model(x, None, rates, self.noise), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _evaluate_model(self, split: str) -> dict[str, float]:
        return self.task.evaluate(self.model, split)


def _preset(name: str, description: str, epochs: int, **settings: Any) -> Preset:
    base = {
        "data": "full",  # "slice": the shipped slice; "full": the full data (--data-dir, env, --download)
        "n_train": None,  # first n training images (None: all 40,000)
        "n_val": None,
        "n_test": None,
        "width": 1.0,
        "fc": None,  # hidden width of the fully connected layers (every preset sets it)
        "batch_size": 128,
        "eval_batch_size": 1000,
        "lr": 0.01,
        "momentum": 0.9,
        "nonmono": 60,
        "stn_epochs": epochs,
        "stn_warmup_epochs": 5,
        "stn_hyper_lr": 3e-3,
    }
    return Preset.from_defaults(name, description, epochs, base, settings)


class CifarTask(Task):
    """CIFAR-10 with the STN paper's AlexNet and its fifteen regularisation/augmentation hyperparameters."""

    name = "cifar"
    description = "CIFAR-10, AlexNet-style CNN, 15 dropout/augmentation hyperparameters (STN paper)"
    model_name = "alexnet"
    presets: ClassVar[dict[str, Preset]] = {
        "tiny": _preset(
            "tiny",
            "shipped slice (400 train / 200 val / 200 test real images), AlexNet at 1/8 width with fc 64, "
            "batch 50, lr 0.05, 3 epochs (seconds a trial)",
            3,
            data="slice",
            width=0.125,
            fc=64,
            batch_size=50,
            lr=0.05,
            nonmono=1,
            stn_epochs=3,
            stn_warmup_epochs=1,
        ),
        "cpu": _preset(
            "cpu",
            "full data, first 10,000 training images (validation and test whole), AlexNet at 1/4 width "
            "(16-48-96-64-64) with fc 256, batch 128, lr 0.05, 6 epochs (about two minutes a trial on 2 shared cores)",
            6,
            n_train=10_000,
            width=0.25,
            fc=256,
            lr=0.05,
            nonmono=2,
            stn_epochs=30,
            stn_warmup_epochs=1,
        ),
        "paper": _preset(
            "paper",
            "full data (40k/10k/10k), the paper's AlexNet (64-192-384-256-256, fc 4096), batch 128, SGD lr 0.01 "
            "momentum 0.9, lr rule nonmono 60, 200 epochs",
            200,
            fc=4096,
            nonmono=60,
            stn_epochs=200,
            stn_warmup_epochs=5,
        ),
    }

    @cached_property
    def space(self) -> SearchSpace:
        """The fifteen hyperparameters (see the module docstring)."""
        return alexnet_space()

    @cached_property
    def data(self) -> CifarSplits:
        """The preset's splits on the task's device: the shipped slice or the full data (possibly a subset)."""
        s = self.preset.settings
        splits = load_slice() if s["data"] == "slice" else load_full(self.data_dir, self.download)
        return splits.subset(s["n_train"], s["n_val"], s["n_test"]).to(self.device)

    @property
    def train_size(self) -> int:
        """Training images per epoch."""
        return int(self.data.train_x.shape[0])

    @property
    def batch_size(self) -> int:
        """Training minibatch size."""
        return int(self.preset.settings["batch_size"])

    @cached_property
    def augmenter(self) -> Augmenter:
        """The training-time augmentation, columns in the order of the search space."""
        return Augmenter(self.space.names, max_holes=MAX_HOLES)

    def build_model(self, n_hparams: int | None = None, seed: int | None = None) -> GatedNet:
        """The preset's network, plain (``n_hparams=None``) or with STN layers gated by ``n_hparams`` values."""
        s = self.preset.settings
        return build_model(self.model_name, n_hparams=n_hparams, seed=seed, width=s["width"], fc=s["fc"])

    def make_trial(self, config: Config, seed: int) -> CifarTrial:
        """A fresh network at ``config`` (validated), seeded."""
        return CifarTrial(self, self.space.validate(config), seed)

    def stn_problem(self, seed: int) -> Any:
        """The white-box door: the same network with STN layers (see ``tasks.cifar.stn``)."""
        from tasks.cifar.stn import CifarStnProblem

        return CifarStnProblem(self, seed)

    @torch.no_grad()
    def evaluate(self, model: GatedNet, split: str, gates: Any = None) -> dict[str, float]:
        """Mean cross-entropy and accuracy of ``model`` (in evaluation mode) over a whole split.

        ``gates(B)`` gives the STN gates for a batch (``None`` for a plain network).
        """
        if split not in ("val", "test"):
            raise UserError(f"unknown split {split!r}: use 'val' or 'test'")
        x_all, y_all = self.data.split(split)
        model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        step = int(self.preset.settings["eval_batch_size"])
        for start in range(0, x_all.shape[0], step):
            x, y = x_all[start : start + step], y_all[start : start + step]
            g = None if gates is None else gates(x.shape[0])[0].to(self.device)
            logits = model(normalise(x), g)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        n = x_all.shape[0]
        return {"loss": float(loss_sum) / n, "accuracy": float(correct) / n}

    def describe(self) -> dict[str, Any]:
        """The base description plus the model and where the data came from."""
        out = super().describe()
        out["model"] = self.model_name
        out["data_source"] = self.data.source
        return out

    def signature(self) -> dict[str, float]:
        """Cheap drift detectors: data moments, and losses of the seed-0 network on fixed images at the probes.

        ``train_loss_<probe>``: the freshly initialised network (seed 0, training mode) on the first 128 training
        images augmented at the probe configuration (default, all-low, all-high), dropout at its rates, the
        augmentation and dropout drawn from a generator seeded 0; ``val_loss_init``: the same network in
        evaluation mode on the first 256 validation images. Forward passes only, so the ``paper`` preset's
        signature costs seconds, not epochs.
        """
        data = self.data
        out: dict[str, float] = {}
        for split in ("train", "val", "test"):
            x, y = data.split(split)
            out[f"{split}_pixel_mean"] = float(x.sum(dtype=torch.int64)) / x.numel()
            out[f"{split}_label_mean"] = float(y.sum()) / y.numel()
        model = self.build_model(seed=0).to(self.device)
        x, y = data.train_x[:128], data.train_y[:128]
        with torch.no_grad():
            for probe, config in self.probe_configs().items():
                g = torch.Generator(device=self.device).manual_seed(0)
                model.train()
                logits = model(self.augmenter(x, config, g), None, [config[n] for n in DROPOUTS], g)
                out[f"train_loss_{probe}"] = float(F.cross_entropy(logits, y))
            model.eval()
            xv, yv = data.val_x[:256], data.val_y[:256]
            out["val_loss_init"] = float(F.cross_entropy(model(normalise(xv)), yv))
        return out


class CifarVggTask(CifarTask):
    """CIFAR-10 with VGG-16 (no batch norm): the fifteen hyperparameters plus four affine augmentations."""

    name = "cifar-vgg"
    description = "CIFAR-10, VGG-16 without batch norm, 15 + 4 affine augmentation hyperparameters"
    model_name = "vgg16"
    presets: ClassVar[dict[str, Preset]] = {
        "tiny": _preset(
            "tiny",
            "shipped slice (400 train / 200 val / 200 test real images), VGG-16 at 1/16 width with fc 32, "
            "batch 50, lr 0.05, 3 epochs (seconds a trial)",
            3,
            data="slice",
            width=1 / 16,
            fc=32,
            batch_size=50,
            lr=0.05,
            nonmono=1,
            stn_epochs=3,
            stn_warmup_epochs=1,
        ),
        "cpu": _preset(
            "cpu",
            "full data, first 10,000 training images (validation and test whole), VGG-16 at 1/8 width "
            "(8-16-32-64-64) with fc 64, batch 128, lr 0.02, 6 epochs (about two minutes a trial on 2 shared cores)",
            6,
            n_train=10_000,
            width=0.125,
            fc=64,
            lr=0.02,
            nonmono=2,
            stn_epochs=30,
            stn_warmup_epochs=1,
        ),
        "paper": _preset(
            "paper",
            "full data (40k/10k/10k), VGG-16 without batch norm (fc 512), batch 128, SGD lr 0.01 momentum 0.9, "
            "lr rule nonmono 60, 200 epochs",
            200,
            fc=512,
            nonmono=60,
            stn_epochs=200,
            stn_warmup_epochs=5,
        ),
    }

    @cached_property
    def space(self) -> SearchSpace:
        """The fifteen plus rotation, translate, scale and shear (see the module docstring)."""
        return vgg_space()


def steps_per_epoch(task: CifarTask) -> int:
    """Training minibatches per epoch."""
    return math.ceil(task.train_size / task.batch_size)

"""A worked example of a task with both doors: an MLP on scikit-learn's bundled 8x8 digits (no download).

Registered as ``digits``: ``python -m hpobench_stn run --task digits --method stn --budget 60s``. The same
definition serves every method: random search trains the plain network at fixed values, STN and Delta-STN train
its STN twin through the generic white-box door (:mod:`hpobench_stn.torch_task`).
"""

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from hpobench_stn.regularisers import L2, Dropout
from hpobench_stn.space import Float, Rate
from hpobench_stn.task import Preset
from hpobench_stn.torch_task import Splits, TorchTask, accuracy


def _preset(name: str, description: str, epochs: int, **settings: Any) -> Preset:
    base = {"hidden": 128, "n_train": 1000, "n_val": 400, "n_test": None, "batch_size": 64, "lr": 1e-3}
    return Preset(name, description, epochs, {**base, **settings})


class DigitsTask(TorchTask):
    """Two hidden ReLU layers with dropout on 8x8 digit images; tuned: the dropout rate and the weight decay."""

    name = "digits"
    description = "MLP on scikit-learn's 8x8 digits (1,797 images, 10 classes): dropout rate and weight decay"
    presets: ClassVar[dict[str, Preset]] = {
        "tiny": _preset(
            "tiny",
            "300/200/200 images, 32 hidden units, 3 epochs",
            3,
            hidden=32,
            n_train=300,
            n_val=200,
            n_test=200,
            lr=1e-2,
        ),
        "cpu": _preset("cpu", "1,000/400/397 images, 128 hidden units, 20 epochs (a second a trial)", 20),
        "paper": _preset("paper", "as cpu (the data set is small)", 20),
    }
    hyperparameters = (
        Dropout(Rate("dropout", 0.0, 0.9, init=0.1, description="dropout after each hidden layer"), modules="*"),
        L2(
            Float("weight_decay", 1e-6, 1.0, log=True, init=1e-4, per_example=False, description="L2 on weights"),
            params="*.weight",
        ),
    )
    metrics: ClassVar = {"accuracy": accuracy}

    def build_model(self) -> nn.Module:
        h = self.preset.settings["hidden"]
        return nn.Sequential(
            nn.Linear(64, h), nn.ReLU(), nn.Dropout(), nn.Linear(h, h), nn.ReLU(), nn.Dropout(), nn.Linear(h, 10)
        )

    def load_data(self) -> Splits:
        digits = load_digits()
        x, s = torch.tensor(digits.data, dtype=torch.float32) / 16.0, self.preset.settings
        return Splits.shuffled(x, torch.tensor(digits.target), s["n_train"], s["n_val"], s["n_test"])

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

"""The CIFAR networks, each defined once and built either from plain layers or from STN layers.

* :class:`AlexNet`: the STN paper's AlexNet-style network: five 3x3 convolutions 64-192-384-256-256 (strides
  2, 1, 1, 1, 1; padding 1; max-pool 2x2 after the 1st, 2nd and 5th), channel dropout after each (after the pool
  where there is one), then fully connected 1024 → 4096 → 4096 → 10 with dropout before the two hidden layers.
* :class:`VGG16`: VGG-16 without batch norm: 13 3x3 convolutions in five blocks (64x2, 128x2, 256x3, 512x3,
  512x3) each ending in a 2x2 max-pool, channel dropout after each block's pool, then 512 → 512 → 512 → 10 with
  dropout after the two hidden layers. Convolutions initialised Kaiming-normal (fan-out, as torchvision's VGG)
  with zero biases so that the 13 layers train without normalisation; the linear layers keep PyTorch's default
  (torchvision's N(0, 0.01²) shrinks the signal of the narrow presets' layers to nothing).

Both take a width multiplier for the channels and the hidden width ``fc`` so that the presets can shrink them.
With ``n_hparams=None`` the layers are ``nn.Conv2d``/``nn.Linear``; with ``n_hparams=n`` they are
:class:`~hpobench_stn.stn.layers.StnConv2d`/:class:`~hpobench_stn.stn.layers.StnLinear` and ``forward`` takes
the ``(B, n)`` gate inputs. Dropout takes one rate per layer, either fixed floats (a black-box trial) or a
``(B, 7)`` tensor of per-example rates (STN); with the model in evaluation mode there is no dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpobench_stn.stn.layers import GateInit, StnConv2d, StnLinear
from tasks.cifar.augment import keep_mask

#: Dropout slots of both networks, in the order of their rates: five convolutional, two fully connected.
N_DROPOUTS = 7

Rates = Tensor | Sequence[float] | None


def dropout(x: Tensor, rate: float | Tensor, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout of the units of ``(B, D)`` or the whole channels of ``(B, C, H, W)``.

    ``rate`` is one float for the batch or one rate per example (``(B,)``). Units (channels) are kept with
    probability 1 - p and scaled by 1/(1-p); the mask comes from ``generator`` (see
    :func:`tasks.cifar.augment.keep_mask`) so that a trial's dropout is reproducible and checkpointable.
    """
    if not isinstance(rate, Tensor):
        if rate == 0.0:
            return x
        rate = torch.full((x.shape[0],), float(rate), device=x.device)
    keep = (1.0 - rate).to(x.dtype).reshape(-1, 1)
    mask = keep_mask((x.shape[0], x.shape[1]), rate, generator).to(x.dtype).div_(keep)
    return x * mask.view(*mask.shape, *([1] * (x.dim() - 2)))


class GatedNet(nn.Module):
    """Base of the CIFAR networks: builds plain or STN layers and runs them with or without gates."""

    def __init__(self, n_hparams: int | None, gate_init: GateInit = "normal") -> None:
        super().__init__()
        self.n_hparams = n_hparams
        self.gate_init: GateInit = gate_init

    @property
    def is_stn(self) -> bool:
        """Whether the layers are STN layers (``forward`` then needs gates)."""
        return self.n_hparams is not None

    def _conv(self, cin: int, cout: int, stride: int = 1) -> nn.Module:
        if self.n_hparams is None:
            return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        return StnConv2d(cin, cout, 3, self.n_hparams, stride=stride, padding=1, gate_init=self.gate_init)

    def _linear(self, cin: int, cout: int) -> nn.Module:
        if self.n_hparams is None:
            return nn.Linear(cin, cout)
        return StnLinear(cin, cout, self.n_hparams, gate_init=self.gate_init)

    def _layer(self, layer: nn.Module, x: Tensor, gates: Tensor | None) -> Tensor:
        if self.n_hparams is None:
            return layer(x)
        if gates is None:
            raise ValueError("an STN network needs gates: forward(x, gates, ...)")
        return layer(x, gates)

    def _rate(self, rates: Rates, i: int) -> float | Tensor:
        if rates is None or not self.training:
            return 0.0
        return rates[:, i] if isinstance(rates, Tensor) and rates.dim() == 2 else rates[i]

    def weight_tensors(self, layer: nn.Module) -> list[Tensor]:
        """The weight matrices of a layer: ``weight``, or ``weight_e`` and ``weight_h`` of an STN layer."""
        return [layer.weight] if self.n_hparams is None else [layer.weight_e, layer.weight_h]

    def bias_tensors(self, layer: nn.Module) -> list[Tensor]:
        """The biases of a layer: ``bias``, or ``bias_e`` and ``bias_h`` of an STN layer."""
        return [layer.bias] if self.n_hparams is None else [layer.bias_e, layer.bias_h]


def _scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


class AlexNet(GatedNet):
    """The STN paper's AlexNet-style CIFAR network (see the module docstring), plain or with STN layers."""

    CHANNELS = (64, 192, 384, 256, 256)
    STRIDES = (2, 1, 1, 1, 1)
    POOL_AFTER = (0, 1, 4)

    def __init__(
        self,
        width: float = 1.0,
        fc: int = 4096,
        n_classes: int = 10,
        n_hparams: int | None = None,
        gate_init: GateInit = "normal",
        image_size: int = 32,
    ) -> None:
        super().__init__(n_hparams, gate_init)
        channels = [_scaled(c, width) for c in self.CHANNELS]
        self.convs = nn.ModuleList(
            self._conv(cin, cout, s) for cin, cout, s in zip([3, *channels[:-1]], channels, self.STRIDES, strict=True)
        )
        side = image_size
        for i, stride in enumerate(self.STRIDES):
            side = (side - 1) // stride + 1
            if i in self.POOL_AFTER:
                side //= 2
        self.flat = channels[-1] * side * side
        self.fc1 = self._linear(self.flat, fc)
        self.fc2 = self._linear(fc, fc)
        self.fc3 = self._linear(fc, n_classes)

    def forward(
        self, x: Tensor, gates: Tensor | None = None, rates: Rates = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Logits ``(B, classes)`` for normalised images; ``rates``: 7 dropout rates (floats or ``(B, 7)``)."""
        for i, conv in enumerate(self.convs):
            x = F.relu(self._layer(conv, x, gates))
            if i in self.POOL_AFTER:
                x = F.max_pool2d(x, 2)
            x = dropout(x, self._rate(rates, i), generator)
        x = x.flatten(1)
        x = dropout(x, self._rate(rates, 5), generator)
        x = F.relu(self._layer(self.fc1, x, gates))
        x = dropout(x, self._rate(rates, 6), generator)
        x = F.relu(self._layer(self.fc2, x, gates))
        return self._layer(self.fc3, x, gates)


class VGG16(GatedNet):
    """VGG-16 without batch norm (see the module docstring), plain or with STN layers."""

    BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

    def __init__(
        self,
        width: float = 1.0,
        fc: int = 512,
        n_classes: int = 10,
        n_hparams: int | None = None,
        gate_init: GateInit = "normal",
        image_size: int = 32,
    ) -> None:
        super().__init__(n_hparams, gate_init)
        self.blocks = nn.ModuleList()
        cin = 3
        for block in self.BLOCKS:
            layers = nn.ModuleList()
            for c in block:
                cout = _scaled(c, width)
                layers.append(self._conv(cin, cout))
                cin = cout
            self.blocks.append(layers)
        side = image_size // 2 ** len(self.BLOCKS)
        self.flat = cin * side * side
        self.fc1 = self._linear(self.flat, fc)
        self.fc2 = self._linear(fc, fc)
        self.fc3 = self._linear(fc, n_classes)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        for block in self.blocks:
            for conv in block:
                for w in self.weight_tensors(conv):
                    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
                for b in self.bias_tensors(conv):
                    b.zero_()

    def forward(
        self, x: Tensor, gates: Tensor | None = None, rates: Rates = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Logits ``(B, classes)`` for normalised images; ``rates``: 7 dropout rates (floats or ``(B, 7)``)."""
        for i, block in enumerate(self.blocks):
            for conv in block:
                x = F.relu(self._layer(conv, x, gates))
            x = dropout(F.max_pool2d(x, 2), self._rate(rates, i), generator)
        x = x.flatten(1)
        x = dropout(F.relu(self._layer(self.fc1, x, gates)), self._rate(rates, 5), generator)
        x = dropout(F.relu(self._layer(self.fc2, x, gates)), self._rate(rates, 6), generator)
        return self._layer(self.fc3, x, gates)


MODELS: dict[str, type[GatedNet]] = {"alexnet": AlexNet, "vgg16": VGG16}


def build_model(name: str, n_hparams: int | None = None, seed: int | None = None, **kwargs: object) -> GatedNet:
    """Build a network by name (``alexnet``, ``vgg16``); ``seed`` draws the initial weights without touching the
    global random state."""
    cls = MODELS[name]
    if seed is None:
        return cls(n_hparams=n_hparams, **kwargs)  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(n_hparams=n_hparams, **kwargs)  # type: ignore[arg-type]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def copy_elementary_from(stn_model: GatedNet, plain_model: GatedNet) -> None:
    """Load a plain network's weights into the elementary weights of the same network built with STN layers."""
    plain = [m for m in plain_model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    stn = [m for m in stn_model.modules() if isinstance(m, StnConv2d | StnLinear)]
    if len(plain) != len(stn):
        raise ValueError("the two networks differ in structure")
    with torch.no_grad():
        for p, s in zip(plain, stn, strict=True):
            s.weight_e.copy_(p.weight)
            s.bias_e.copy_(p.bias)

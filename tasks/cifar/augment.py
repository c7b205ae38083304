"""Batched data augmentation with per-example parameters: whole-batch tensor operations, no per-image Python.

Two layers:

* deterministic operations taking one parameter per example (``(B,)`` tensors): :func:`adjust_brightness`,
  :func:`adjust_contrast`, :func:`adjust_saturation`, :func:`adjust_hue` (the maths of torchvision's functional
  ops of the same names, which the tests compare against), :func:`cutout` (given hole centres), :func:`affine`
  (torchvision's ``affine`` convention: angle, translation in pixels, scale, shear; bilinear, zero fill);
* :class:`Augmenter`, the training pipeline: it draws each example's random parameters from the hyperparameters'
  strengths (one strength per example under STN, one per batch for a fixed configuration) with a seeded
  generator, and applies, in this order, on images in [0, 1]: affine (VGG), brightness, contrast, saturation,
  hue (torchvision's ``ColorJitter`` draws a random order per image; here the order is fixed), then normalises,
  then cutout (zeros in normalised space, i.e. the mean colour, as the reference), input pixel dropout
  (each input value zeroed with probability p, survivors scaled by 1/(1-p), as the reference) and input scaling
  (the image times U[1/(1+s), 1+s]).

Strength → random parameter, per example (as torchvision's ``ColorJitter``/``RandomAffine``): brightness,
contrast, saturation ``b``: factor U[max(0, 1-b), 1+b]; hue ``h``: shift U[-h, h]; rotation ``d``: angle U[-d, d]
degrees; translation ``t``: shifts U[-t·W, t·W], U[-t·H, t·H] pixels (not rounded to whole pixels); scale ``s``:
factor U[1-s, 1+s]; shear ``k``: x-shear U[-k, k] degrees; cutout: ``holes`` squares of side ``length`` with
centres uniform over the image (clipped at the border, as DeVries & Taylor's cutout).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tasks.cifar.data import MEAN, STD

__all__ = [
    "AFFINE",
    "JITTER",
    "Augmenter",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "affine",
    "affine_matrices",
    "brightness_",
    "contrast_",
    "cutout",
    "cutout_keep",
    "grayscale",
    "hole_memberships",
    "hue_",
    "input_scaling",
    "keep_mask",
    "pixel_dropout",
    "saturation_",
]

JITTER = ("brightness", "contrast", "saturation", "hue")
AFFINE = ("rotation", "translate", "scale", "shear")
_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale
_CHUNK = 32  # images per in-cache chunk of the colour pipeline (32 x 3 x 32 x 32 float32: 384 KiB)


def _per_example(p: Tensor) -> Tensor:
    return p.reshape(-1, 1, 1, 1)


_CONSTANTS: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}


def _constant(name: str, values: tuple[float, ...], like: Tensor, shape: tuple[int, ...]) -> Tensor:
    key = (name, like.device, like.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, device=like.device, dtype=like.dtype).view(shape)
    return _CONSTANTS[key]


def grayscale(img: Tensor) -> Tensor:
    """Luma ``(B, 1, H, W)`` of RGB images ``(B, 3, H, W)``."""
    weights = _constant("luma", _LUMA, img, (1, 1, 3))
    return torch.matmul(weights, img.flatten(2)).view(img.shape[0], 1, *img.shape[2:])


# In-place kernels on a tensor the caller owns (the pipeline's own buffer): no fresh full-size allocations, which on
# CPU cost more than the arithmetic. The public adjust_* functions below apply them to a copy.
def brightness_(x: Tensor, factor: Tensor) -> Tensor:
    """In place: ``clamp(f·x, 0, 1)`` per example."""
    return x.mul_(_per_example(factor)).clamp_(0.0, 1.0)


def contrast_(x: Tensor, factor: Tensor) -> Tensor:
    """In place: ``clamp(f·x + (1-f)·mean(luma(x)), 0, 1)`` per example."""
    f = _per_example(factor)
    mean = (x.mean(dim=(2, 3)) @ _constant("luma", _LUMA, x, (1, 1, 3)).view(3)).view(-1, 1, 1, 1)
    return x.mul_(f).add_((1.0 - f) * mean).clamp_(0.0, 1.0)


def saturation_(x: Tensor, factor: Tensor) -> Tensor:
    """In place: ``clamp(f·x + (1-f)·luma(x), 0, 1)`` per example."""
    f = _per_example(factor)
    gray = grayscale(x).mul_(1.0 - f)
    return x.mul_(f).add_(gray).clamp_(0.0, 1.0)


def adjust_brightness(img: Tensor, factor: Tensor) -> Tensor:
    """Multiply each image by its factor, clamped to [0, 1]."""
    return brightness_(img.clone(), factor)


def adjust_contrast(img: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale by its factor (0: flat grey, 1: unchanged)."""
    return contrast_(img.clone(), factor)


def adjust_saturation(img: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its grayscale by its factor (0: grayscale, 1: unchanged)."""
    return saturation_(img.clone(), factor)


def adjust_hue(img: Tensor, shift: Tensor) -> Tensor:
    """Rotate each image's hue by its shift (in turns, [-0.5, 0.5]) in HSV space; saturation and value kept
    (see :func:`hue_`). Returns a new tensor."""
    return hue_(img.clone(), shift)


def hue_(img: Tensor, shift: Tensor) -> Tensor:
    """In place: rotate each image's hue by its shift (in turns, [-0.5, 0.5]) in HSV space.

    RGB → HSV as usual (hue in sixths, ``h6`` in [0, 6)); HSV → RGB in closed form: channel n of (R, G, B) is
    ``v - (v - min)·clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + h6) mod 6`` and n = 5, 3, 1, computed here as
    ``clamp(2 - d, 0, 1)`` with ``d`` the distance on the hue circle (of length 6) from ``h6`` to 3, 5, 1.
    """
    r, g, b = img.unbind(1)
    maxc = img.amax(1)
    chroma = maxc - img.amin(1)
    # Which channel is the maximum (red first, then green, as the usual RGB→HSV) as 0/1 floats: maxc - c >= 0, so
    # 1 - sign(maxc - c) is 1 exactly where c is the maximum. Arithmetic instead of torch.where: far faster on CPU.
    is_r = torch.sign(maxc - r).neg_().add_(1.0)
    is_g = torch.sign(maxc - g).neg_().add_(1.0)
    h6 = torch.lerp((r - g).add_(chroma, alpha=4.0), (b - r).add_(chroma, alpha=2.0), is_g)
    h6 = torch.lerp(h6, g - b, is_r).div_(chroma.clamp_min(1e-12))  # in [-1, 5]; |numerator| <= chroma
    h6 += 6.0 * shift.reshape(-1, 1, 1)
    h6 -= 6.0 * torch.floor(h6 * (1.0 / 6.0))  # mod 6, on one plane
    centres = _constant("hue_centres", (3.0, 5.0, 1.0), img, (1, 3, 1, 1))
    out = (h6.unsqueeze(1) - centres).abs_()  # in [0, 6); circular distance min(d, 6 - d) = 3 - |d - 3|
    out.sub_(3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)  # the weight clamp(2 - distance, 0, 1)
    return torch.addcmul(maxc.unsqueeze(1), out, chroma.unsqueeze(1), value=-1.0, out=img)


def cutout(img: Tensor, length: Tensor, holes: Tensor, centres: Tensor) -> Tensor:
    """Zero ``holes[i]`` squares of side ``length[i]`` in image i, centred at ``centres[i, :holes[i]]``.

    ``centres``: ``(B, K, 2)`` integer (row, column) pairs, ``K`` at least the largest number of holes; a square
    covers rows ``[floor(y - L/2), floor(y + L/2))`` clipped to the image, columns likewise.
    """
    return img * cutout_keep(*hole_memberships(length, holes, centres, img.shape[2], img.shape[3])).to(img.dtype)


def hole_memberships(length: Tensor, holes: Tensor, centres: Tensor, H: int, W: int) -> tuple[Tensor, Tensor]:
    """Per hole, which rows ``(B, K, H)`` and which columns ``(B, K, W)`` it covers, as 0/1 floats (see cutout)."""
    B, K = centres.shape[:2]
    half = length.to(torch.float32).reshape(B, 1) / 2
    cy, cx = centres[..., 0].to(torch.float32), centres[..., 1].to(torch.float32)
    y1, y2 = torch.floor(cy - half).clamp_(0, H), torch.floor(cy + half).clamp_(0, H)
    x1, x2 = torch.floor(cx - half).clamp_(0, W), torch.floor(cx + half).clamp_(0, W)
    rows = torch.arange(H, device=centres.device, dtype=torch.float32)
    cols = torch.arange(W, device=centres.device, dtype=torch.float32)
    active = (torch.arange(K, device=centres.device) < holes.reshape(B, 1)).unsqueeze(-1)  # (B, K, 1)
    in_rows = (rows >= y1.unsqueeze(-1)) & (rows < y2.unsqueeze(-1)) & active
    in_cols = (cols >= x1.unsqueeze(-1)) & (cols < x2.unsqueeze(-1))
    return in_rows.to(torch.float32), in_cols.to(torch.float32)


def cutout_keep(in_rows: Tensor, in_cols: Tensor) -> Tensor:
    """``(B, 1, H, W)`` multiplier: 0 inside any hole, 1 elsewhere, from per-hole row and column memberships."""
    covered = torch.bmm(in_rows.transpose(1, 2), in_cols)  # (B, H, W): how many holes cover each pixel
    return covered.clamp_(max=1.0).neg_().add_(1.0).unsqueeze(1)


def affine_matrices(angle: Tensor, translate: Tensor, scale: Tensor, shear: Tensor) -> Tensor:
    """Inverse affine maps ``(B, 2, 3)`` in pixel units about the image centre (torchvision's convention).

    ``angle`` and ``shear`` ``(B,)`` (x-shear) or ``(B, 2)`` (x, y) in degrees, ``translate`` ``(B, 2)`` pixels
    (x, y), ``scale`` ``(B,)``. Output pixel p (centred coordinates) samples input pixel ``M[:, :2] p + M[:, 2]``.
    """
    shear = shear.reshape(shear.shape[0], -1)
    sx = torch.deg2rad(shear[:, 0])
    sy = torch.deg2rad(shear[:, 1]) if shear.shape[1] > 1 else torch.zeros_like(sx)
    rot = torch.deg2rad(angle)
    # Forward rotation-scale-shear R(a)·S(s)·SHy(sy)·SHx(sx) has determinant s²; its inverse, divided by s:
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / scale.reshape(-1, 1, 1)
    offset = -(inv @ translate.unsqueeze(-1))  # the inverse undoes the translation first
    return torch.cat([inv, offset], dim=-1)


def affine(img: Tensor, angle: Tensor, translate: Tensor, scale: Tensor, shear: Tensor) -> Tensor:
    """Per-example affine transforms (see :func:`affine_matrices`), bilinear, zero outside the image."""
    B, C, H, W = img.shape
    m = affine_matrices(angle.to(img.dtype), translate.to(img.dtype), scale.to(img.dtype), shear.to(img.dtype))
    # Pixel units about the centre → grid_sample's normalised units (align_corners=False: x_norm = x_pix / (W/2)).
    size = torch.tensor([W / 2, H / 2], dtype=img.dtype, device=img.device)
    theta = torch.cat([m[:, :, :2] * size.view(1, 1, 2) / size.view(1, 2, 1), m[:, :, 2:] / size.view(1, 2, 1)], -1)
    grid = F.affine_grid(theta, [B, C, H, W], align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def pixel_dropout(img: Tensor, rate: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Zero each input value with its example's probability; scale the survivors by 1/(1-p)."""
    keep = (1.0 - rate).reshape(-1, 1, 1, 1)
    return img * keep_mask(img.shape, rate, generator).div_(keep)


def keep_mask(shape: torch.Size | tuple[int, ...], rate: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """0/1 float32 mask of ``shape`` (batch first) whose entries are 1 with probability ``1 - rate[i]`` in row i.

    The draws are 16-bit uniform integers, four cut from each 64-bit draw (a quarter of the generator calls of
    ``torch.bernoulli``), so a rate is resolved to 1/65536; the comparison is done in float arithmetic,
    ``clamp(t + 1 - bits, 0, 1)``, which on CPU is several times faster than a boolean mask.
    """
    n = math.prod(shape)
    words = torch.empty(-(-n // 4), dtype=torch.int64, device=rate.device).random_(-(2**63), None, generator=generator)
    bits = words.view(torch.int16)[:n].view(shape).to(torch.float32)
    # P(bits <= t) = (t + 32769) / 65536 for a 16-bit uniform: t = keep·65536 - 32769, clipped to int16.
    t = ((1.0 - rate.to(torch.float32)) * 65536.0 - 32769.0).round_().clamp_(-32768, 32767)
    return bits.neg_().add_(t.add_(1.0).view(-1, *([1] * (len(shape) - 1)))).clamp_(0.0, 1.0)


def input_scaling(img: Tensor, strength: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Multiply each image by a factor drawn from U[1/(1+s), 1+s] with its example's strength s."""
    return img * _per_example(_scale_factors(strength, generator))


def _scale_factors(strength: Tensor, generator: torch.Generator | None) -> Tensor:
    low, high = 1.0 / (1.0 + strength), 1.0 + strength
    u = torch.rand(strength.shape, generator=generator, device=strength.device, dtype=strength.dtype)
    return low + (high - low) * u


class Augmenter:
    """The training-time augmentation of the CIFAR tasks, driven by hyperparameter strengths.

    ``names`` lists the hyperparameters in the order of the columns of an STN ``values`` tensor. Calling the
    augmenter on uint8 images ``(B, 3, H, W)`` returns normalised float32 images; the strengths are either a
    mapping name → float (a fixed configuration: operations at strength 0 are skipped, so they cost nothing) or
    a ``(B, n)`` tensor with one row per example (STN: every operation runs, at each example's strength).
    Names it does not know (dropout rates) are ignored; missing ones mean "off".
    """

    def __init__(self, names: Sequence[str], max_holes: int = 4) -> None:
        self.columns = {name: i for i, name in enumerate(names)}
        self.max_holes = max_holes
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _strengths(
        self, values: Tensor | Mapping[str, float], batch: int, device: torch.device
    ) -> dict[str, Tensor | None]:
        known = [*AFFINE, *JITTER, "cutout_length", "cutout_holes", "input_dropout", "input_scale"]
        out: dict[str, Tensor | None] = {}
        for name in known:
            if isinstance(values, Tensor):
                col = self.columns.get(name)
                out[name] = None if col is None else values[:, col].to(device=device, dtype=torch.float32)
            else:
                v = float(values.get(name, 0.0))
                out[name] = None if v == 0.0 else torch.full((batch,), v, device=device)
        return out

    @staticmethod
    def _uniform(low: Tensor, high: Tensor, generator: torch.Generator | None) -> Tensor:
        u = torch.rand(low.shape, generator=generator, device=low.device)
        return low + (high - low) * u

    def __call__(
        self, images: Tensor, values: Tensor | Mapping[str, float], generator: torch.Generator | None = None
    ) -> Tensor:
        """Augment a batch of uint8 images at the given strengths; returns normalised float32 images."""
        B, _, H, W = images.shape
        s = self._strengths(values, B, images.device)
        with torch.no_grad():
            x = images.to(torch.float32, copy=True)
            if images.dtype == torch.uint8:
                x.div_(255.0)  # as data.normalise, so that strength 0 gives exactly the evaluation input
            if any(s[name] is not None for name in AFFINE):
                x = self._affine(x, s, generator)
            jitter = []
            for name, op in zip(JITTER, (brightness_, contrast_, saturation_, hue_), strict=True):
                strength = s[name]
                if strength is None:
                    continue
                if name == "hue":
                    param = self._uniform(-strength, strength, generator)
                else:
                    param = self._uniform((1.0 - strength).clamp(min=0.0), 1.0 + strength, generator)
                jitter.append((op, param))
            mean, std = self._constants(x.device)
            # Chunk by chunk, so that the intermediate planes stay in cache: 4x faster for hue on CPU.
            for start in range(0, B, _CHUNK):
                chunk = x[start : start + _CHUNK]
                for op, param in jitter:
                    op(chunk, param[start : start + _CHUNK])
                chunk.sub_(mean).div_(std)  # x is this call's own tensor
            # Cutout, input dropout and input scaling are all multiplicative: one multiplier, one pass.
            factor: Tensor | None = None
            if s["input_scale"] is not None:
                factor = _scale_factors(s["input_scale"], generator)
            rate = s["input_dropout"]
            if rate is not None:
                factor = 1.0 / (1.0 - rate) if factor is None else factor / (1.0 - rate)
            multiplier = None if factor is None else _per_example(factor)
            length, holes = s["cutout_length"], s["cutout_holes"]
            if length is not None and holes is not None:
                keep = self._cutout_keep(length.floor(), holes.floor(), B, H, W, x.device, generator)
                multiplier = keep if multiplier is None else keep.mul_(multiplier)
            if rate is not None:
                drop = keep_mask(x.shape, rate, generator)
                multiplier = drop if multiplier is None else drop.mul_(multiplier)
            if multiplier is not None:
                x.mul_(multiplier)
        return x

    def _constants(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._cache:
            mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
            std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
            self._cache[device] = (mean, std)
        return self._cache[device]

    def _cutout_keep(
        self,
        length: Tensor,
        holes: Tensor,
        B: int,
        H: int,
        W: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> Tensor:
        centres = torch.stack(
            [
                torch.randint(0, H, (B, self.max_holes), generator=generator, device=device),
                torch.randint(0, W, (B, self.max_holes), generator=generator, device=device),
            ],
            -1,
        )
        return cutout_keep(*hole_memberships(length, holes, centres, H, W))

    def _affine(self, x: Tensor, s: dict[str, Tensor | None], generator: torch.Generator | None) -> Tensor:
        B, _, H, W = x.shape
        zero = torch.zeros(B, device=x.device)

        def symmetric(strength: Tensor | None, n: int = 1) -> Tensor:
            if strength is None:
                return zero if n == 1 else torch.zeros(B, n, device=x.device)
            u = torch.rand((B, n), generator=generator, device=x.device)
            out = strength.reshape(B, 1) * (2.0 * u - 1.0)
            return out[:, 0] if n == 1 else out

        angle = symmetric(s["rotation"])
        translate = symmetric(s["translate"], 2) * torch.tensor([W, H], device=x.device, dtype=x.dtype)
        scale = 1.0 + symmetric(s["scale"])
        shear = symmetric(s["shear"])
        return affine(x, angle, translate, scale, shear)

"""CIFAR hot paths, side by side in one process: batched augmentation, and the STN step against the fixed one.

1. **Augmentation of a batch of 128 CIFAR images with per-example parameters**: ours
   (:class:`tasks.cifar.augment.Augmenter`, whole-batch tensor operations, one row of strengths per example as
   under STN) against torchvision's per-image transforms doing the same work image by image: a
   ``ColorJitter(brightness, contrast, saturation, hue)`` built for each image at its own strengths (as the STN
   reference code does), ``ToTensor``, ``Normalize``, cutout through ``erase`` once per hole, input dropout and
   input scaling. The per-image route is timed twice: on PIL images (what the reference code does) and on
   float tensors (torchvision's tensor kernels). All at the same strengths (brightness, contrast, saturation
   0.4, hue 0.2, cutout 2 holes of 8 pixels, input dropout 0.1, input scaling 0.1; VGG's affine part is left out
   of this comparison).
2. **One training step of the STN network against the fixed-configuration network**, through the task's own
   code: :meth:`tasks.cifar.task.CifarTrial.train_step` (augmentation, dropout, forward, backward, SGD step) and
   the STN trainer's :meth:`~hpobench_stn.stn.trainer.StnTrainer.train_step` (perturbed per-example λ̃,
   per-example augmentation and dropout, STN layers); also the STN cycle (2 training steps + 1 hyperparameter
   step, the reference schedule) per training step.

Timing: the variants are interleaved step by step so that load from other processes hits them alike; medians
(and minima) over ``--reps`` repetitions after ``--warmup``. Usage::

    python benchmarks/cifar_throughput.py [--preset cpu] [--task cifar] [--data-dir DIR] [--reps 30] [--threads N]

``--data-dir`` (or ``HPOBENCH_STN_DATA``) points at the full CIFAR-10 for the ``cpu``/``paper`` presets; the
``tiny`` preset uses the shipped slice.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from PIL import Image

from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.stn.trainer import StnSettings, StnTrainer
from hpobench_stn.task import Task
from tasks.cifar.augment import Augmenter
from tasks.cifar.data import MEAN, STD, load_slice
from tasks.cifar.task import CifarTask, CifarVggTask

STRENGTHS = {
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.2,
    "cutout_length": 8,
    "cutout_holes": 2,
    "input_dropout": 0.1,
    "input_scale": 0.1,
}


def per_image_torchvision(images: list, strengths: torch.Tensor, names: list[str], tensors: bool) -> torch.Tensor:
    """The same augmentation image by image with torchvision's transforms (PIL images or float tensors)."""
    col = {n: i for i, n in enumerate(names)}
    normalize = T.Normalize(MEAN, STD)
    out = []
    for img, s in zip(images, strengths.tolist(), strict=True):
        jitter = T.ColorJitter(s[col["brightness"]], s[col["contrast"]], s[col["saturation"]], s[col["hue"]])
        x = jitter(img)
        x = normalize(x if tensors else TF.to_dtype(TF.pil_to_tensor(x), torch.float32, scale=True))
        length, holes = int(s[col["cutout_length"]]), int(s[col["cutout_holes"]])
        for _ in range(holes):
            cy, cx = torch.randint(0, 32, (2,)).tolist()
            y1, y2 = max(cy - length // 2, 0), min(cy + length // 2, 32)
            x1, x2 = max(cx - length // 2, 0), min(cx + length // 2, 32)
            x = TF.erase(x, y1, x1, y2 - y1, x2 - x1, torch.tensor(0.0))
        x = F.dropout(x, s[col["input_dropout"]])
        scale = s[col["input_scale"]]
        x = x * (1 / (1 + scale) + ((1 + scale) - 1 / (1 + scale)) * torch.rand(()))
        out.append(x)
    return torch.stack(out)


def timed(fns: dict[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, list[float]]:
    """Run the functions interleaved; seconds per call of each."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def report(times: dict[str, list[float]], baseline: str) -> None:
    """Print median and minimum per variant, and ratios against ``baseline``."""
    base_med = statistics.median(times[baseline])
    base_min = min(times[baseline])
    for name, ts in times.items():
        med, low = statistics.median(ts), min(ts)
        print(
            f"  {name:44s} median {1e3 * med:8.2f} ms   min {1e3 * low:8.2f} ms   "
            f"x{med / base_med:6.2f} (median)  x{low / base_min:6.2f} (min)  vs {baseline}"
        )


def augmentation_benchmark(reps: int, warmup: int) -> None:
    """Ours (batched, per-example strengths) against torchvision per image (PIL and tensors)."""
    names = list(STRENGTHS)
    batch = load_slice().train_x[:128]
    strengths = torch.tensor([STRENGTHS[n] for n in names]).repeat(128, 1)
    augmenter = Augmenter(names)
    generator = torch.Generator().manual_seed(0)
    pil_images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in batch]
    float_images = list(batch.float().div(255).unbind(0))
    times = timed(
        {
            "ours: batched, per-example strengths": lambda: augmenter(batch, strengths, generator),
            "torchvision per image (PIL, as the reference)": lambda: per_image_torchvision(
                pil_images, strengths, names, tensors=False
            ),
            "torchvision per image (float tensors)": lambda: per_image_torchvision(
                float_images, strengths, names, tensors=True
            ),
        },
        reps,
        warmup,
    )
    print("augmentation of a batch of 128 (brightness, contrast, saturation, hue, cutout, input dropout, scaling):")
    report(times, "ours: batched, per-example strengths")


def step_benchmark(task: Task, reps: int, warmup: int) -> None:
    """The fixed-configuration training step against the STN training step (and STN cycle) of the same network."""
    config = task.space.default()
    trial = task.make_trial(config, seed=0)
    trial.model.train()
    torch.manual_seed(0)
    problem = task.stn_problem(seed=0)
    trainer = StnTrainer(problem, StnSettings().resolved(problem, task.max_epochs), seed=0)
    meter = BudgetMeter(Budget(epochs=1e12), task.train_size)
    data = task.data
    n = task.batch_size
    images, labels = data.train_x[:n], data.train_y[:n]
    val_batch = (data.val_x[:n], data.val_y[:n])

    def stn_cycle() -> None:
        trainer.train_step((images, labels), meter)
        trainer.train_step((images, labels), meter)
        trainer.hyper_step(val_batch, meter)

    times = timed(
        {
            "fixed configuration: one training step": lambda: trial.train_step(images, labels),
            "STN: one training step": lambda: trainer.train_step((images, labels), meter),
            "STN: cycle (2 train + 1 hyper) / 2": stn_cycle,
        },
        reps,
        warmup,
    )
    times["STN: cycle (2 train + 1 hyper) / 2"] = [t / 2 for t in times["STN: cycle (2 train + 1 hyper) / 2"]]
    print(
        f"training step, task {task.name}, preset {task.preset.name} ({task.preset.description}), batch {n}, "
        f"{len(task.space)} hyperparameters:"
    )
    report(times, "fixed configuration: one training step")


def main() -> None:
    """Parse the arguments and run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="cifar", choices=["cifar", "cifar-vgg"])
    parser.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    parser.add_argument("--data-dir", default=os.environ.get("HPOBENCH_STN_DATA"))
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data_dir is None and args.preset != "tiny":
        shared = Path(__file__).resolve().parents[2] / "shared" / "data"
        args.data_dir = str(shared) if shared.is_dir() else None
    print("$ " + shlex.join([sys.executable, *sys.argv]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    augmentation_benchmark(args.reps, args.warmup)
    task_cls = CifarVggTask if args.task == "cifar-vgg" else CifarTask
    step_benchmark(task_cls(args.preset, data_dir=args.data_dir), args.reps, args.warmup)


if __name__ == "__main__":
    main()

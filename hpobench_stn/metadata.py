"""What a run records about itself so that it can be reproduced: settings, versions, git revision, device."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpobench_stn.budget import Budget
    from hpobench_stn.harness import RunSpec
    from hpobench_stn.optimizer import Method
    from hpobench_stn.task import Task
    from hpobench_stn.threads import ThreadChoice

PACKAGES = ("hpobench-stn", "numpy", "torch", "torchvision", "optuna", "scikit-optimize", "ray", "pandas")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change a result (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> dict[str, Any]:
    """The source tree's commit and whether it had uncommitted changes (None outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return {"commit": rev, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


@functools.cache
def source_revision() -> dict[str, Any]:
    """:func:`git_revision` as it was at this process's first call, which the command line makes at start-up:
    the code a process runs is the code it imported then, even if the checkout moves on during a long sweep."""
    return git_revision()


def device_info(device: str) -> dict[str, Any]:
    """The compute device a run used (GPU name when on CUDA)."""
    info: dict[str, Any] = {
        "requested": device,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    import torch

    info["torch_threads"] = torch.get_num_threads()
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def load_average() -> list[float] | None:
    """The machine's 1-, 5- and 15-minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def collect(
    spec: RunSpec, task: Task, method: Method, budget: Budget, threads: ThreadChoice | None = None
) -> dict[str, Any]:
    """The metadata record of one run; ``threads``: the run's thread count and why (see hpobench_stn.threads)."""
    return {
        "task": spec.task,
        "preset": spec.preset,
        "method": spec.method,
        "method_args": method.options.non_default(),
        "method_settings": method.settings(),
        "seed": spec.seed,
        "budget": budget.to_dict(),
        "budget_text": str(budget),
        "budget_unit": budget.unit,
        "clock": budget.clock,
        "trial_epochs": task.max_epochs,
        "trial_epochs_override": spec.trial_epochs,
        "task_args": dict(spec.task_args),
        "load_average_start": load_average(),
        "task_description": task.describe(),
        "data_dir": spec.data_dir,
        "device": device_info(spec.device),
        "threads": threads.to_dict() if threads is not None else None,
        "versions": package_versions(),
        "git": source_revision(),
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

"""hpobench-stn: a hyperparameter-optimisation benchmark suite built around Self-Tuning Networks.

The public API, importable from here (loaded on first use, so ``import hpobench_stn`` stays light and the analysis
side never imports torch):

* contracts: :class:`Task`, :class:`Trial`, :class:`Preset`, :class:`EpochReport` (tasks); :class:`Method`,
  :class:`Optimizer`, :class:`Outcome`, :class:`SearchExhausted` (methods); :class:`MethodSettings` and
  :func:`setting` (a method's settings); :class:`SearchSpace`, :func:`Float`, :func:`Rate`, :func:`Integer`;
* running: :class:`RunSpec`, :func:`execute`, :func:`run_sweep`, :class:`Budget`, :class:`BudgetMeter`;
* results: :class:`TrialStatus`, :class:`RunStatus`, :func:`load_runs`, :func:`load_events`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("hpobench-stn")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC: dict[str, str] = {
    "Task": "hpobench_stn.task",
    "Trial": "hpobench_stn.task",
    "Preset": "hpobench_stn.task",
    "EpochReport": "hpobench_stn.task",
    "Method": "hpobench_stn.optimizer",
    "Optimizer": "hpobench_stn.optimizer",
    "Outcome": "hpobench_stn.optimizer",
    "SearchExhausted": "hpobench_stn.optimizer",
    "MethodSettings": "hpobench_stn.settings",
    "setting": "hpobench_stn.settings",
    "SearchSpace": "hpobench_stn.space",
    "Float": "hpobench_stn.space",
    "Rate": "hpobench_stn.space",
    "Integer": "hpobench_stn.space",
    "RunSpec": "hpobench_stn.harness",
    "execute": "hpobench_stn.harness",
    "run_sweep": "hpobench_stn.sweep",
    "Budget": "hpobench_stn.budget",
    "BudgetMeter": "hpobench_stn.budget",
    "TrialStatus": "hpobench_stn.status",
    "RunStatus": "hpobench_stn.status",
    "load_runs": "hpobench_stn.store",
    "load_events": "hpobench_stn.store",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hpobench_stn' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)

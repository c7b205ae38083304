"""Registry of tasks and methods by short name, imported lazily.

Built-ins are ``"name": "module:Class"`` strings so that listing names imports nothing. Outside packages add
their own through the entry-point groups ``hpobench_stn.tasks`` and ``hpobench_stn.methods`` (see README).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from hpobench_stn.errors import UserError

TASK_GROUP = "hpobench_stn.tasks"
METHOD_GROUP = "hpobench_stn.methods"

BUILTIN_TASKS: dict[str, str] = {
    "quadratic": "tasks.quadratic.task:QuadraticTask",
    "cifar": "tasks.cifar.task:CifarTask",
    "cifar-vgg": "tasks.cifar.task:CifarVggTask",
    "ptb": "tasks.ptb.task:PtbTask",
    "digits": "examples.digits:DigitsTask",
}

BUILTIN_METHODS: dict[str, str] = {
    "grid": "baselines.grid:GridSearch",
    "random": "baselines.random_search:RandomSearch",
    "fixed": "baselines.fixed:FixedConfig",
    "replay": "baselines.replay:ScheduleReplay",
    "stn": "hpobench_stn.stn.method:STN",
    "delta-stn": "hpobench_stn.stn.method:DeltaSTN",
    "tpe": "baselines.optuna_search:TPESearch",
    "gp": "baselines.optuna_search:GPSearch",
    "cmaes": "baselines.optuna_search:CmaEsSearch",
    "skopt-gp": "baselines.skopt_search:SkoptGP",
    "skopt-forest": "baselines.skopt_search:SkoptForest",
    "asha": "baselines.ray_tune:ASHA",
    "hyperband": "baselines.ray_tune:HyperBand",
    "pbt": "baselines.ray_tune:PBT",
}


def _table(builtin: dict[str, str], group: str) -> dict[str, str]:
    table = dict(builtin)
    for ep in entry_points(group=group):
        table.setdefault(ep.name, ep.value)
    return table


def task_names() -> list[str]:
    """All registered task names."""
    return sorted(_table(BUILTIN_TASKS, TASK_GROUP))


def method_names() -> list[str]:
    """All registered method names."""
    return sorted(_table(BUILTIN_METHODS, METHOD_GROUP))


def _load(kind: str, name: str, table: dict[str, str]) -> Any:
    if name not in table:
        raise UserError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(table))}")
    module_name, _, attr = table[name].partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def get_task(name: str) -> Any:
    """The Task class registered under ``name`` (a clear error listing valid names otherwise)."""
    return _load("task", name, _table(BUILTIN_TASKS, TASK_GROUP))


def get_method(name: str) -> Any:
    """The Method class registered under ``name`` (a clear error listing valid names otherwise)."""
    return _load("method", name, _table(BUILTIN_METHODS, METHOD_GROUP))


def method_settings(name: str, args: dict[str, Any]) -> Any:
    """The settings dataclass of method ``name`` built from ``--method-arg`` pairs, every name, type and range
    checked (a :class:`~hpobench_stn.errors.UserError` naming the setting and what it takes otherwise)."""
    return get_method(name).Settings.from_args(args, name)


def build_task(name: str, preset: str, **options: Any) -> Any:
    """The task ``name`` at ``preset`` (``data_dir``, ``device``, ``download``, ``trial_epochs``, ``settings`` as
    keyword options)."""
    return get_task(name)(preset, **options)


def build_method(name: str, task: Any, seed: int, args: dict[str, Any]) -> Any:
    """Method ``name`` for ``task`` with its ``--method-arg`` settings; a bad setting is a ``UserError`` raised
    before anything runs."""
    method_settings(name, args)
    cls = get_method(name)
    try:
        method = cls(task.space, seed, task.max_epochs, **args)
    except (TypeError, ValueError) as exc:
        raise UserError(f"method {name!r}: {exc}") from None
    method.check_task(task)
    return method

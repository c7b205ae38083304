"""Registry of tasks and methods by short name, imported lazily.

Built-ins are ``"name": "module:Class"`` strings so that listing names imports nothing. Outside packages add
their own through the entry-point groups ``hpobench_stn.tasks`` and ``hpobench_stn.methods`` (see README). A
plugin may not take a built-in's name (it is refused, and ``list`` says so); a plugin that fails to import is an
error only when it is asked for (``list`` shows the failure beside everything that loads).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
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
}

#: The worked examples of ``examples/``: registered when that folder is importable (a source checkout run from its
#: root), since it is not installed.
EXAMPLE_TASKS: dict[str, str] = {"digits": "examples.digits:DigitsTask"}

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


KINDS = {"task": (BUILTIN_TASKS, TASK_GROUP), "method": (BUILTIN_METHODS, METHOD_GROUP)}


@dataclass(frozen=True)
class Entry:
    """Where a name's class lives (``module:attribute``) and the package that declared it (None: a built-in)."""

    value: str
    package: str | None = None


def _package(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None and dist.name else "an unknown package"


def _entries(kind: str) -> tuple[dict[str, Entry], list[tuple[str, str]]]:
    """The built-ins of ``kind`` plus its entry points, and ``(name, why)`` for each entry point refused because a
    built-in or a package found earlier has its name."""
    builtin, group = KINDS[kind]
    table = {name: Entry(value) for name, value in builtin.items()}
    if kind == "task" and _examples_importable():
        table.update({name: Entry(value) for name, value in EXAMPLE_TASKS.items() if name not in table})
    refused = []
    for ep in entry_points(group=group):
        package = _package(ep)
        taken = table.get(ep.name)
        if taken is None:
            table[ep.name] = Entry(ep.value, package)
        elif taken.package is None:
            why = f"it shadows the built-in {kind} of that name; the package must rename its entry point"
            refused.append((ep.name, f"{kind} {ep.name!r} of package {package} is refused: {why}"))
        elif taken != Entry(ep.value, package):
            why = f"package {taken.package} declares that name first; uninstall one of them or rename an entry point"
            refused.append((ep.name, f"{kind} {ep.name!r} of package {package} is refused: {why}"))
    return table, refused


def _examples_importable() -> bool:
    try:
        return importlib.util.find_spec("examples.digits") is not None
    except ImportError:  # no ``examples`` package on the path
        return False


def task_names() -> list[str]:
    """All registered task names."""
    return sorted(_entries("task")[0])


def method_names() -> list[str]:
    """All registered method names."""
    return sorted(_entries("method")[0])


def refused_plugins(names: list[str] | None = None) -> list[str]:
    """One line per entry point not registered because its name was taken (by a built-in or by a package found
    first); with ``names``, only those for these names."""
    return [line for kind in KINDS for name, line in _entries(kind)[1] if names is None or name in names]


def _import(entry: Entry) -> Any:
    module_name, _, attr = entry.value.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _load(kind: str, name: str) -> Any:
    table = _entries(kind)[0]
    if name not in table:
        where = f" ({name!r} is a worked example in examples/: run from a source checkout)" * (name in EXAMPLE_TASKS)
        raise UserError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(table))}{where}")
    entry = table[name]
    if entry.package is None:
        return _import(entry)  # a built-in that fails to import is a bug: its traceback says where
    try:
        return _import(entry)
    except Exception as exc:  # anything a plugin's import raises
        raise UserError(
            f"{kind} {name!r} of package {entry.package} ({name} = {entry.value}) cannot be loaded: "
            f"{type(exc).__name__}: {exc}; fix or uninstall that package"
        ) from None


def try_load(kind: str, name: str) -> tuple[Any, str | None]:
    """``(class, None)`` for a task or method (``kind`` "task" or "method") that loads, else ``(None, why)``: for
    ``list``, which shows what loads and, one line each, what does not."""
    try:
        return _load(kind, name), None
    except UserError as exc:
        return None, str(exc)
    except Exception as exc:
        return None, f"{kind} {name!r} (built-in) cannot be loaded: {type(exc).__name__}: {exc}"


def get_task(name: str) -> Any:
    """The Task class registered under ``name`` (a clear error listing valid names otherwise, or giving a plugin's
    import error)."""
    return _load("task", name)


def get_method(name: str) -> Any:
    """The Method class registered under ``name`` (a clear error listing valid names otherwise, or giving a
    plugin's import error)."""
    return _load("method", name)


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

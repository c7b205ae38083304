"""Method settings as data: each method declares its ``--method-arg`` settings once, as a frozen dataclass.

A field is a setting: its annotation is its type, its default the value used when the user gives none, and
:func:`setting` adds a range or a set of allowed values. :meth:`MethodSettings.from_args` builds the dataclass from the
user's ``key=value`` pairs, checking names, types and ranges before anything runs; a bad value raises a
:class:`~hpobench_stn.errors.UserError` that names the setting, the value and what is allowed. What a run stores
(``settings()``) and the hash in its folder name both come from the dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from hpobench_stn.errors import UserError


def setting(
    default: Any = None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple[Any, ...] | None = None,
    help: str = "",
) -> Any:
    """A settings field with an allowed range (``low``/``high`` inclusive, ``low_open`` excludes ``low``) or a set
    of allowed values, and a one-line help text (shown by ``list``)."""
    meta = {"low": low, "high": high, "low_open": low_open, "choices": choices, "help": help}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(kind: Any) -> str:
    if kind is type(None):
        return "None"
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(kind, "__name__", str(kind))


def _coerce(kind: Any, value: Any) -> tuple[bool, Any]:
    """(fits, value converted) for one annotated type; ints are accepted where floats are, never bools."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(kind):
            fits, converted = _coerce(option, value)
            if fits:
                return True, converted
        return False, value
    if kind is Any:
        return True, value
    if kind is type(None):
        return value is None, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, value
        return math.isfinite(value), float(value)
    if kind is str:
        return isinstance(value, str), value
    base = origin or kind
    return isinstance(value, base), value


@dataclass(frozen=True)
class MethodSettings:
    """Base of every method's settings (a method with none uses it as is)."""

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def names(cls) -> list[str]:
        """The setting names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def allowed(cls, name: str) -> str:
        """What a setting accepts, in words: ``float > 0``, ``int in [1, 100]``, ``one of 'a', 'b'``."""
        spec = next(f for f in dataclasses.fields(cls) if f.name == name)
        meta = spec.metadata
        kind = cls._hints()[name]
        options = [k for k in typing.get_args(kind) if k is not type(None)] if typing.get_origin(kind) else [kind]
        optional = options != list(typing.get_args(kind) or [kind])
        words = " or ".join(_type_name(k) for k in options)
        if meta.get("choices"):
            words = "one of " + ", ".join(repr(c) for c in meta["choices"])
        low, high = meta.get("low"), meta.get("high")
        if low is not None and high is not None:
            words += f" in {'(' if meta.get('low_open') else '['}{low:g}, {high:g}]"
        elif low is not None:
            words += f" {'>' if meta.get('low_open') else '>='} {low:g}"
        elif high is not None:
            words += f" <= {high:g}"
        return words + (", or None" if optional else "")

    @classmethod
    def describe(cls) -> list[str]:
        """One line per setting: name, what it accepts, default, help (the ``list`` command prints them)."""
        lines = []
        for spec in dataclasses.fields(cls):
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
            shown = repr(default)
            help_text = spec.metadata.get("help", "")
            lines.append(
                f"{spec.name}: {cls.allowed(spec.name)}, default {shown}{': ' + help_text if help_text else ''}"
            )
        return lines

    @classmethod
    def from_args(cls, args: Mapping[str, Any], method: str | None = None) -> Self:
        """The settings from ``--method-arg`` pairs, every name, type and range checked (``UserError`` otherwise)."""
        who = f"method {method!r}" if method else "settings"
        names = cls.names()
        unknown = [k for k in args if k not in names]
        if unknown:
            valid = "; ".join(f"{n} ({cls.allowed(n)})" for n in names) or "none"
            raise UserError(f"{who} has no setting {', '.join(map(repr, unknown))}; valid settings: {valid}")
        hints = cls._hints()
        values = {}
        for key, value in args.items():
            fits, converted = _coerce(hints[key], value)
            if not fits:
                raise UserError(f"{who}: setting {key}={value!r} is not allowed; {key} takes {cls.allowed(key)}")
            values[key] = converted
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{who}: {exc}") from None

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            self._check_range(spec, getattr(self, spec.name))
        self.check()

    def _check_range(self, spec: dataclasses.Field, value: Any) -> None:
        meta = spec.metadata
        if value is None or isinstance(value, bool):
            return
        choices = meta.get("choices")
        bad = choices is not None and value not in choices
        if isinstance(value, int | float) and not bad:
            low, high = meta.get("low"), meta.get("high")
            bad = (low is not None and (value < low or (meta.get("low_open") and value == low))) or (
                high is not None and value > high
            )
        if bad:
            raise ValueError(
                f"setting {spec.name}={value!r} is out of range; {spec.name} takes {self.allowed(spec.name)}"
            )

    def check(self) -> None:
        """Checks across settings (override; raise ``ValueError`` with a message that says what is allowed)."""

    def to_dict(self) -> dict[str, Any]:
        """Every setting and its value (what the run's metadata stores)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def non_default(self) -> dict[str, Any]:
        """The settings that differ from their defaults (what names the run's folder)."""
        out = {}
        for spec in dataclasses.fields(self):
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
            value = getattr(self, spec.name)
            if value != default or type(value) is not type(default):
                out[spec.name] = value
        return out


@dataclass(frozen=True)
class BlackBoxSettings(MethodSettings):
    """What every black-box search method takes (grid, random, the Optuna and skopt samplers, Ray Tune's
    schedulers): whether its first trial is the task's initial configuration, the point STN starts from, told to the
    method's model like any other trial."""

    start_at_default: bool = setting(True, help="first trial at the task's initial configuration (STN's start)")

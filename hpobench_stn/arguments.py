"""Parsing the command line's values: ``key=value`` settings, name lists and seeds, each refused with one clear
:class:`~hpobench_stn.errors.UserError` when malformed."""

from __future__ import annotations

import ast
from typing import Any

from hpobench_stn.errors import UserError


def parse_settings(pairs: list[str], option: str = "--method-arg") -> dict[str, Any]:
    """``key=value`` pairs; a value is a Python literal (number, bool, None, dict, list, quoted string) or else a
    bare word taken as a string; a value that starts like a literal but is not one is refused."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"malformed {option} {pair!r}: use key=value, e.g. {option} resolution=4")
        try:
            args[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError) as exc:
            if raw.strip()[:1] in tuple("{[('\"-+.0123456789"):
                reason = exc.msg if isinstance(exc, SyntaxError) else "not a literal"
                raise UserError(
                    f"malformed {option} {pair!r}: {raw.strip()!r} is not a Python literal ({reason}); "
                    "quote the whole pair for the shell, e.g. --method-arg \"config={'penalty_0': 0.1}\""
                ) from None
            args[key.strip()] = raw.strip()
    return args


def parse_names(text: str, what: str, example: str) -> list[str]:
    """Comma-separated names; none at all is refused."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError(f"{what} is empty: give comma-separated names, e.g. {what} {example}")
    return names


def parse_seeds(text: str, what: str = "--seeds") -> list[int]:
    """Comma-separated seeds, each checked; none at all is refused."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"malformed {what} {text!r}: use integers separated by commas, e.g. 0,1,2") from None
    if not values:
        raise UserError(f"{what} is empty: give comma-separated seeds, e.g. {what} 0,1,2")
    for value in values:
        check_seed(value, what)
    return values


def check_seed(seed: int, what: str = "--seed") -> None:
    """A seed is an integer in [0, 2**32) (what NumPy's and torch's generators take)."""
    if not 0 <= seed < 2**32:
        raise UserError(f"{what} {seed} is out of range: a seed is an integer in [0, 2**32), e.g. {what} 0")

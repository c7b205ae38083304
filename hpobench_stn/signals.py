"""Stopping on a signal: SIGTERM and SIGHUP (what Slurm, Kubernetes, ``timeout`` and a closed terminal send) stop a
run the way Ctrl-C does. The trial in progress is cut, the summary says ``interrupted``, and the same command
resumes; the process exits with 128 + the signal's number."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from hpobench_stn.errors import Interrupted

#: Signals turned into :class:`~hpobench_stn.errors.Interrupted` (SIGINT raises ``KeyboardInterrupt`` already).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: What an interruption is caught as.
INTERRUPTIONS = (KeyboardInterrupt, Interrupted)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread; the previous handlers
    come back afterwards."""
    previous = {sig: signal.signal(sig, _raise) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def signal_number(exc: BaseException) -> int:
    """The signal an interruption came from (SIGINT for ``KeyboardInterrupt``)."""
    return exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)


def signal_name(exc: BaseException) -> str:
    """``SIGTERM``, ``SIGINT``, …"""
    return signal.Signals(signal_number(exc)).name


def exit_code(exc: BaseException) -> int:
    """The exit code of a process stopped by ``exc``: 128 + the signal's number, as a shell reports it."""
    return 128 + signal_number(exc)

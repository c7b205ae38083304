"""The one vocabulary for how a trial and a run end, shared by tasks, optimizers, the Ray bridge, the store and the
analysis. Both are string enums: their values are what event logs and summaries store, so a stored ``"cut"`` and
:attr:`TrialStatus.CUT` compare equal."""

from __future__ import annotations

from enum import StrEnum


class TrialStatus(StrEnum):
    """How one trial ended."""

    COMPLETED = "completed"  # trained every epoch of its length
    CUT = "cut"  # the run's budget ended inside it (its reports up to then count)
    STOPPED = "stopped"  # the method stopped it early (multi-fidelity schedulers)
    DIVERGED = "diverged"  # a NaN or infinite validation loss
    FAILED = "failed"  # an exception inside the trial

    @property
    def has_value(self) -> bool:
        """Whether the trial's best validation loss is a result an optimizer may learn from."""
        return self in (TrialStatus.COMPLETED, TrialStatus.STOPPED)


class RunStatus(StrEnum):
    """How one run ended (``summary.json``'s ``status``)."""

    COMPLETED = "completed"  # the method spent its budget or finished, and an incumbent exists
    NO_RESULT = "no_result"  # the run ended without any trial finishing an epoch: nothing to report
    FAILED = "failed"  # the method itself crashed
    INTERRUPTED = "interrupted"  # a signal (SIGINT, SIGTERM, SIGHUP) ended it; the same command resumes it

"""Resuming a run whose folder has no completion marker: what an earlier, interrupted attempt left behind.

Ask/tell methods replay the trials that attempt finished (same proposals, same budget already spent) and train
the cut trial again; other methods start over, and the earlier partial event log is kept beside the new one as
``events.attempt-N.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpobench_stn.status import TrialStatus
from hpobench_stn.store import EVENTS, read_events


@dataclass
class FinishedTrial:
    """A trial an earlier attempt finished: its id, configuration, reports and ``trial_end`` event."""

    trial: int
    config: dict[str, Any]
    reports: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> TrialStatus:
        """How it ended."""
        return TrialStatus(self.end["status"])


@dataclass
class Spent:
    """The budget an earlier attempt spent on the trials it finished: wall-clock and CPU seconds, raw examples and
    (costed) epoch-equivalents."""

    wall: float = 0.0
    cpu: float = 0.0
    examples: int = 0
    epochs: float | None = None

    def seconds(self, clock: str) -> float:
        """The seconds of ``clock`` ("wall" or "cpu")."""
        return self.cpu if clock == "cpu" else self.wall


def finished_trials(events: list[dict[str, Any]]) -> list[FinishedTrial]:
    """Trials that ended (not cut) in an earlier attempt, with their reports, in order."""
    trials: dict[int, FinishedTrial] = {}
    for ev in events:
        kind, tid = ev.get("event"), ev.get("trial")
        if kind == "trial_start":
            trials[tid] = FinishedTrial(tid, ev["config"])
        elif kind == "report" and tid in trials:
            trials[tid].reports.append(ev)
        elif kind == "trial_end" and tid in trials:
            trials[tid].end = ev
    return [t for t in trials.values() if t.end and t.end["status"] != TrialStatus.CUT]


def prepare(path: Path, replays_trials: bool) -> tuple[bool, list[FinishedTrial], Spent]:
    """Look at what an earlier attempt left in ``path``: (whether there was one, trials to replay, budget spent).

    ``replays_trials``: the method is an ask/tell optimizer (its finished trials are replayed); otherwise the earlier
    event log is moved aside and the run starts over.
    """
    previous = read_events(path)
    if not previous:
        return False, [], Spent()
    if not replays_trials:
        attempt = 1
        while (path / f"events.attempt-{attempt}.jsonl").exists():
            attempt += 1
        (path / EVENTS).rename(path / f"events.attempt-{attempt}.jsonl")
        return True, [], Spent()
    replay = finished_trials(previous)
    kept = {t.trial for t in replay}
    ends = [ev for ev in previous if ev.get("event") == "trial_end" and ev["trial"] in kept]
    if not ends:
        return True, replay, Spent()
    last = ends[-1]
    return True, replay, Spent(last["t"], last.get("cpu_t", 0.0), last["examples"], last.get("epochs"))

"""Results store: one folder per run, written so that a crash cannot corrupt it, readable by any tool.

``metadata.json``  everything needed to reproduce the run (written atomically at the start)
``events.jsonl``   append-only event log, one JSON object per line, flushed as it happens
``summary.json``   the incumbent and totals (written atomically at the end)
``COMPLETE``       the completion marker; a sweep skips runs that have it

Loaders return pandas DataFrames; a truncated last line of an event log (a kill mid-write) is ignored. A file that
cannot be read otherwise (a corrupt ``summary.json`` or ``metadata.json``, an unreadable line inside the event log)
is a :class:`DamagedFile`, which names the file and the line.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from hpobench_stn.errors import UserError

#: Event and summary fields that measure the machine rather than the method (time, load): the only fields in which two
#: runs with the same seed may differ.
MEASURED_FIELDS = frozenset(
    {"t", "cpu_t", "seconds", "wall_seconds", "cpu_seconds", "load_average_start", "load_average_end"}
)

METADATA = "metadata.json"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
COMPLETE = "COMPLETE"
REQUIRED_METADATA = ("task", "preset", "method", "seed", "budget_text")


class DamagedFile(UserError):
    """A file of a run folder that cannot be read: ``path``, ``line`` (event logs, 1-based; else None) and
    ``reason``. Analysis leaves the run out with a warning naming the file."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        self.path, self.reason, self.line = Path(path), reason, line
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}; the run is left out (repair or delete the file)")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _jsonable(value.item())
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(_jsonable(data), fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def settings_tag(settings: dict[str, Any]) -> str:
    """A short stable hash of non-default method settings ('' when there are none)."""
    if not settings:
        return ""
    blob = json.dumps(_jsonable(settings), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def run_dir(
    out: Path,
    task: str,
    preset: str,
    method: str,
    budget: str,
    seed: int,
    method_args: dict[str, Any] | None = None,
    task_args: dict[str, Any] | None = None,
) -> Path:
    """The folder of one run: ``out/task/preset[+hash]/method[+hash]/budget/seed-N``, the hashes naming the task's
    and the method's settings that differ from their defaults (none: no hash)."""
    method_tag, task_tag = settings_tag(method_args or {}), settings_tag(task_args or {})
    method_part = f"{method}+{method_tag}" if method_tag else method
    preset_part = f"{preset}+{task_tag}" if task_tag else preset
    return Path(out) / task / preset_part / method_part / budget.replace(",", "_") / f"seed-{seed}"


def is_complete(path: Path) -> bool:
    """True when the run folder carries the completion marker."""
    return (Path(path) / COMPLETE).exists()


class RunStore:
    """Writer for one run folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UserError(
                f"cannot write to output folder {self.path} ({exc.strerror}); choose a writable one with --out"
            ) from None
        self._events: TextIO | None = None

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        """Store the run's metadata (atomically)."""
        write_json_atomic(self.path / METADATA, metadata)

    def open_events(self) -> None:
        """Open the event log for appending (a resumed run appends to what it had, less a torn last line left by
        a kill mid-write, which would otherwise be glued to the first new event)."""
        file = self.path / EVENTS
        if file.exists():
            data = file.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(file, "r+b") as fh:
                    fh.truncate(data.rfind(b"\n") + 1)
        self._events = open(file, "a", buffering=1)  # noqa: SIM115 - kept open for the run

    def event(self, **fields: Any) -> None:
        """Append one event line and flush it."""
        if self._events is None:
            self.open_events()
        assert self._events is not None
        self._events.write(json.dumps(_jsonable(fields), sort_keys=True) + "\n")
        self._events.flush()

    def sync(self) -> None:
        """Force the event log to disk (called at trial boundaries)."""
        if self._events is not None:
            os.fsync(self._events.fileno())

    def finish(self, summary: dict[str, Any], complete: bool = True) -> None:
        """Write the summary, then (unless the run failed and should be tried again) the completion marker."""
        self.close()
        write_json_atomic(self.path / SUMMARY, summary)
        if complete:
            (self.path / COMPLETE).write_text("")

    def close(self) -> None:
        """Close the event log."""
        if self._events is not None:
            self._events.flush()
            os.fsync(self._events.fileno())
            self._events.close()
            self._events = None


def read_events(path: Path, strict: bool = False) -> list[dict[str, Any]]:
    """The events of one run folder; a truncated last line (a kill mid-write) is dropped. An archived run may hold
    them gzipped (``events.jsonl.gz``, as the committed reference results do; see :func:`archive_events`).

    A line that is not a JSON object before the last line, or an archive that cannot be unpacked, means the log is
    damaged: with ``strict`` that raises :class:`DamagedFile` (naming the file and line); without it the events up
    to that point are returned."""
    file = Path(path) / EVENTS
    archived = file.with_name(EVENTS + ".gz")
    if not file.exists() and not archived.exists():
        return []
    source = file if file.exists() else archived
    try:
        with open(file, "rb") if file.exists() else gzip.open(archived, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        if strict:
            raise DamagedFile(source, f"cannot be read ({exc})") from None
        return []
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    events = []
    for number, line in enumerate(lines[: last + 1], start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            if number - 1 == last:
                break  # torn by a kill mid-write
            if strict:
                raise DamagedFile(source, "not a JSON event (a torn or corrupted line)", line=number) from None
            break
        events.append(event)
    return events


def archive_events(path: Path) -> Path:
    """Gzip a complete run's event log in place (``events.jsonl`` → ``events.jsonl.gz``, byte-for-byte the same
    content, no timestamp in the gzip header); readers take either. Returns the archive's path."""
    path = Path(path)
    if not is_complete(path):
        raise UserError(f"run {path} is not complete; only complete runs are archived")
    file = path / EVENTS
    archived = file.with_name(EVENTS + ".gz")
    with open(archived, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(file.read_bytes())
    file.unlink()
    return archived


def find_runs(paths: Iterable[str | Path], complete_only: bool = True) -> Iterator[Path]:
    """Every run folder (one holding metadata.json) at or under ``paths``."""
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise UserError(f"no runs at {root}: the path does not exist")
        candidates = [root] if (root / METADATA).exists() else sorted(p.parent for p in root.rglob(METADATA))
        for run in candidates:
            if not complete_only or is_complete(run):
                yield run


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def method_label(meta: dict[str, Any]) -> str:
    """The name a run's method goes by in tables and figures: the method, with its ``--method-arg`` settings in
    brackets when it has any (``asha [num_cpus=1]``), so runs at different settings are never pooled. A replay's
    source schedule is left out (the replay table shows it)."""
    args = {k: v for k, v in (meta.get("method_args") or {}).items() if k != "schedule"}
    if meta.get("trial_epochs_override") is not None:
        args["trial_epochs"] = meta["trial_epochs_override"]
    return _labelled(meta["method"], args)


def preset_label(meta: dict[str, Any]) -> str:
    """The preset a run's task ran at, with its ``--task-arg`` settings in brackets (``cpu [data_seed=3]``), so runs
    on different problem instances are never pooled."""
    return _labelled(meta["preset"], meta.get("task_args") or {})


def _labelled(name: str, args: dict[str, Any]) -> str:
    shown = ", ".join(f"{key}={args[key]}" for key in sorted(args))
    return f"{name} [{shown}]" if shown else name


# metadata copied into each run's row (as ``meta.KEY``; dicts flattened): what the protocol and budget units need
ROW_METADATA = ("budget", "clock", "trial_epochs", "threads", "cost_factors", "git", "versions", "device", "started")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a run folder's file; :class:`DamagedFile` when it cannot be read or is not an object."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise DamagedFile(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DamagedFile(path, f"not a JSON object (a {type(data).__name__})")
    return data


def read_run(run: Path, events: bool = True) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(metadata, summary, events) of one run folder; the summary is ``{}`` while the run has none, the events
    ``[]`` unless asked for. Raises :class:`DamagedFile` for the first file that cannot be read."""
    meta = read_json(run / METADATA)
    missing = [key for key in REQUIRED_METADATA if key not in meta]
    if missing:
        raise DamagedFile(run / METADATA, f"lacks {', '.join(missing)}")
    summary = read_json(run / SUMMARY) if (run / SUMMARY).exists() else {}
    return meta, summary, read_events(run, strict=True) if events else []


def is_finished(run: Path, summary: dict[str, Any]) -> bool:
    """True for a run that ended: complete, or failed or without a result (its summary says so; it is not complete,
    so that running it again retries it, but until then it counts as a failed seed or one without incumbent)."""
    return is_complete(run) or summary.get("status") in ("failed", "no_result")


def _row(run: Path, meta: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    row = {
        "path": str(run),
        "task": meta["task"],
        "preset": preset_label(meta),
        "method": method_label(meta),
        "method_name": meta["method"],
        "seed": meta["seed"],
        "budget": meta["budget_text"],
        "complete": is_complete(run),
    }
    for key in ROW_METADATA:
        if isinstance(meta.get(key), dict):
            row.update(_flatten(meta[key], f"meta.{key}."))
        elif key in meta:
            row[f"meta.{key}"] = meta[key]
    row["meta.max_epochs"] = (meta.get("task_description") or {}).get("max_epochs")
    row.update(_flatten(meta.get("method_settings") or {}, "settings."))
    row.update(_flatten(summary))
    return row


def load_results(
    paths: Iterable[str | Path],
    complete_only: bool = True,
    on_damage: Callable[[DamagedFile], None] | None = None,
    events: bool = True,
) -> tuple[Any, Any]:
    """(runs, events) as :func:`load_runs` and :func:`load_events` give them, read in one pass so that both hold
    the same runs. A run with a damaged file is passed to ``on_damage`` and left out of both; without
    ``on_damage`` the :class:`DamagedFile` is raised."""
    import pandas as pd

    rows, frames = [], []
    for run in find_runs(paths, complete_only=False):
        try:
            meta, summary, log = read_run(run, events=events)
        except DamagedFile as damage:
            if on_damage is None:
                raise
            on_damage(damage)
            continue
        if complete_only and not is_finished(run, summary):
            continue
        row = _row(run, meta, summary)
        rows.append(row)
        if events:
            frame = pd.json_normalize(log) if log else pd.DataFrame()
            for key in ("task", "preset", "seed", "method", "method_name", "budget", "path"):
                frame[key] = row[key]
            frame["run_status"] = summary.get("status", "running")
            frames.append(frame)
    runs = pd.DataFrame(rows)
    return runs, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_runs(
    paths: Iterable[str | Path],
    complete_only: bool = True,
    on_damage: Callable[[DamagedFile], None] | None = None,
) -> Any:
    """One row per run: metadata (task, preset, method label (see :func:`method_label`), method name, seed,
    budget; ``meta.*``: budget units, clock, git, versions, device) joined with the flattened summary (nested keys
    joined with dots: ``incumbent.test_metrics.loss``, ``incumbent.config.penalty_0``). ``complete_only`` keeps the
    runs that ended (see :func:`is_finished`): failed runs are rows too, with ``status`` "failed"."""
    return load_results(paths, complete_only, on_damage, events=False)[0]


def load_events(
    paths: Iterable[str | Path],
    complete_only: bool = True,
    on_damage: Callable[[DamagedFile], None] | None = None,
) -> Any:
    """One row per event of every run, with the run's task, preset, budget, method, seed and ``run_status`` (its
    summary's status) beside it."""
    return load_results(paths, complete_only, on_damage)[1]

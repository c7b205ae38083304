"""Results store: one folder per run, written so that a crash cannot corrupt it, readable by any tool.

``metadata.json``  everything needed to reproduce the run (written atomically at the start)
``events.jsonl``   append-only event log, one JSON object per line, flushed as it happens
``summary.json``   the incumbent and totals (written atomically at the end)
``COMPLETE``       the completion marker; a sweep skips runs that have it

Loaders return pandas DataFrames; a truncated last line of an event log (a kill mid-write) is ignored.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from hpobench_stn.errors import UserError

METADATA = "metadata.json"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
COMPLETE = "COMPLETE"


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
) -> Path:
    """The folder of one run: ``out/task/preset/method[+hash]/budget/seed-N``."""
    tag = settings_tag(method_args or {})
    method_part = f"{method}+{tag}" if tag else method
    return Path(out) / task / preset / method_part / budget.replace(",", "_") / f"seed-{seed}"


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
        """Open the event log for appending (a resumed run appends to what it had)."""
        self._events = open(self.path / EVENTS, "a", buffering=1)  # noqa: SIM115 - kept open for the run

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


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of one run folder; a truncated last line is dropped. An archived run may hold them gzipped
    (``events.jsonl.gz``, as the committed reference results do; see :func:`archive_events`)."""
    file = Path(path) / EVENTS
    archived = file.with_name(EVENTS + ".gz")
    if not file.exists() and not archived.exists():
        return []
    events = []
    with open(file) if file.exists() else gzip.open(archived, "rt") as fh:
        for line in fh:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break
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
    shown = ", ".join(f"{key}={args[key]}" for key in sorted(args))
    return f"{meta['method']} [{shown}]" if shown else meta["method"]


def load_runs(paths: Iterable[str | Path], complete_only: bool = True) -> Any:
    """One row per run: metadata (task, preset, method label (see :func:`method_label`), method name, seed,
    budget) joined with the flattened summary (nested keys joined with dots: ``incumbent.test_metrics.loss``,
    ``incumbent.config.penalty_0``)."""
    import pandas as pd

    rows = []
    for run in find_runs(paths, complete_only):
        meta = json.loads((run / METADATA).read_text())
        summary = json.loads((run / SUMMARY).read_text()) if (run / SUMMARY).exists() else {}
        row = {
            "path": str(run),
            "task": meta["task"],
            "preset": meta["preset"],
            "method": method_label(meta),
            "method_name": meta["method"],
            "seed": meta["seed"],
            "budget": meta["budget_text"],
            "complete": is_complete(run),
        }
        row.update(_flatten(meta.get("method_settings") or {}, "settings."))
        row.update(_flatten(summary))
        rows.append(row)
    return pd.DataFrame(rows)


def load_events(paths: Iterable[str | Path], complete_only: bool = True) -> Any:
    """One row per event of every run, with the run's task, preset, budget, method and seed beside it."""
    import pandas as pd

    frames = []
    for run in find_runs(paths, complete_only):
        meta = json.loads((run / METADATA).read_text())
        events = read_events(run)
        frame = pd.json_normalize(events) if events else pd.DataFrame()
        for key in ("task", "preset", "seed"):
            frame[key] = meta[key]
        frame["method"] = method_label(meta)
        frame["method_name"] = meta["method"]
        frame["budget"] = meta["budget_text"]
        frame["path"] = str(run)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

"""One writer per run folder: a lock file a run holds while it writes.

``LOCK`` in the run folder names its holder (host, PID, the process's start time, the machine's boot, when it
took the lock, the command, and the Ray task when the run is one). It is created with ``O_CREAT | O_EXCL``, so of
two processes starting at once exactly one wins; the other gets :class:`RunHeldError` naming the holder.

A lock is taken over, not obeyed, when its holder is gone:

- same host: the PID is not running, or is a different process now (its start time differs), or the machine
  has rebooted since (another boot id);
- a Ray task: the lock was taken by an earlier attempt of the same task (Ray retries a task only once the worker
  running it has died, which on a lost node can be another host);
- any host: the lock is stale, i.e. its file has not been touched for ``STALE_SECONDS``. The holder touches it
  every ``REFRESH_SECONDS`` from a background thread, so a lock goes stale only when its holder died on another
  host (or was suspended for that long). This assumes the hosts' clocks agree to well within that time.

Taking over is itself guarded by a second O_EXCL file (``LOCK.break``), so two processes that find the same dead
lock cannot both take it. The lock is released when the run ends, also on exceptions, on SIGTERM and SIGHUP
(when no other handler is installed for them); a SIGKILL leaves it for the next run to take over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from hpobench_stn.errors import UserError

LOCK = "LOCK"
REFRESH_SECONDS = 30.0
STALE_SECONDS = 300.0
BREAK_STALE_SECONDS = 30.0  # a LOCK.break older than this was left by a process that died while taking over
PARTIAL_GRACE_SECONDS = 5.0  # an unreadable lock this young is still being written by its creator


class RunHeldError(UserError):
    """The run folder is locked by a live process: another run is writing it."""

    def __init__(self, path: str | Path, holder: dict[str, Any]) -> None:
        self.path = Path(path)
        self.holder = dict(holder)
        super().__init__(
            f"run folder {self.path} is being written by another process ({describe(self.holder)}); wait for it "
            f"to finish or stop it, then run this again; if no such process exists, delete {self.path / LOCK}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # Ray sends it from a worker to the driver
        return (type(self), (str(self.path), self.holder))


def describe(holder: dict[str, Any]) -> str:
    """``host H, PID P, since T`` for a lock's holder."""
    if not holder:
        return "holder unknown: the lock file is unreadable"
    since = f", since {holder['started']}" if holder.get("started") else ""
    return f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}{since}"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused PID from the holder."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, start: int | None) -> bool:
    """True when process ``pid`` runs (not a zombie) and, when ``start`` is known, is the same process."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():  # Linux
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        return fields[0] != "Z" and (start is None or int(fields[19]) == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ray_task_id() -> str | None:
    """The id of the Ray task this process runs (the same for every retry of it), or None; never imports Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        context = ray.get_runtime_context()
        return context.get_task_id() if context.worker.mode == ray.WORKER_MODE else None
    except Exception:  # a private corner of Ray that may change: then only the other rules apply
        return None


class RunLock:
    """The lock of one run folder; use as ``with RunLock(path):`` around everything that writes the folder.

    ``previous`` is the holder whose dead or stale lock was taken over (None when the folder was free).
    """

    def __init__(self, path: str | Path, refresh: float = REFRESH_SECONDS, stale_after: float = STALE_SECONDS) -> None:
        self.path = Path(path)
        self.file = self.path / LOCK
        self.refresh = refresh
        self.stale_after = stale_after
        self.previous: dict[str, Any] | None = None
        self.lost = False
        self._token = uuid.uuid4().hex
        self._pid = os.getpid()  # a forked child inherits the object (and the signal handlers), not the lock
        self._made_folder = False
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._old_handlers: dict[int, Any] = {}

    # --- taking and releasing ------------------------------------------------------------------------------------
    def acquire(self) -> RunLock:
        """Take the lock, taking over a dead or stale one; raises :class:`RunHeldError` when a live process has it."""
        self._pid = os.getpid()
        try:
            if not self.path.exists():
                self.path.mkdir(parents=True, exist_ok=True)
                self._made_folder = True
            self._take()
        except OSError as exc:
            self._undo_folder()
            raise UserError(
                f"cannot write to output folder {self.path} ({exc.strerror}); choose a writable one with --out"
            ) from None
        self._start_refresher()
        self._catch_signals()
        return self

    def _take(self) -> None:
        deadline = time.monotonic() + 10 * PARTIAL_GRACE_SECONDS
        while True:
            if self._create():
                return
            raw, age = self._read()
            if raw is None:  # released between our attempt and the read: try again
                continue
            holder = _parse(raw)
            reason = self._why_free(holder, age)
            if reason is None:
                if holder or age >= PARTIAL_GRACE_SECONDS or time.monotonic() > deadline:
                    self._undo_folder()
                    raise RunHeldError(self.path, holder)
                time.sleep(0.05)  # its creator is writing it
                continue
            if self._break(raw):
                self.previous = {**holder, "taken_over_because": reason}
            else:
                time.sleep(0.05)

    def release(self) -> None:
        """Give the lock up (only if it is still ours) and remove the run folder if taking the lock made it and
        nothing was written there."""
        if os.getpid() != self._pid:
            return
        self._stop.set()
        if self._refresher is not None and self._refresher is not threading.current_thread():
            self._refresher.join(timeout=5)
        self._refresher = None
        self._restore_signals()
        if self._is_ours():
            with contextlib.suppress(FileNotFoundError):
                self.file.unlink()
        self._undo_folder()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # --- the lock file -------------------------------------------------------------------------------------------
    def holder(self) -> dict[str, Any]:
        """What this process writes into the lock file."""
        me = os.getpid()
        return {
            "host": socket.gethostname(),
            "pid": me,
            "pid_start": _process_start(me),
            "boot_id": _boot_id(),
            "ray_task": _ray_task_id(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "started_unix": time.time(),
            "command": sys.argv,
            "token": self._token,
        }

    def _create(self) -> bool:
        try:
            fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(self.holder(), sort_keys=True).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _read(self) -> tuple[bytes | None, float]:
        """The lock file's bytes and seconds since it was last touched; (None, 0) when there is none."""
        try:
            with open(self.file, "rb") as fh:  # opening revalidates a network file system's cached attributes
                return fh.read(), time.time() - os.fstat(fh.fileno()).st_mtime
        except FileNotFoundError:
            return None, 0.0

    def _why_free(self, holder: dict[str, Any], age: float) -> str | None:
        """Why the lock with ``holder``, last touched ``age`` seconds ago, may be taken over; None if it may not."""
        if age > self.stale_after:
            return f"stale: untouched for {age:.0f} s"
        if not holder:
            return None
        if holder.get("ray_task") and holder["ray_task"] == _ray_task_id():
            return "an earlier attempt of this Ray task"
        if holder.get("host") != socket.gethostname():
            return None
        if holder.get("boot_id") and _boot_id() and holder["boot_id"] != _boot_id():
            return "the host has rebooted since"
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _alive(pid, holder.get("pid_start")):
            return f"PID {pid} is no longer running"
        return None

    def _break(self, seen: bytes) -> bool:
        """Remove the lock file if it still holds ``seen``, guarded so that only one process does it."""
        guard = self.file.with_name(LOCK + ".break")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - guard.stat().st_mtime > BREAK_STALE_SECONDS:
                    guard.unlink()
            return False
        try:
            raw, _ = self._read()
            if raw == seen:
                self.file.unlink()
                return True
            return False
        finally:
            os.close(fd)
            guard.unlink()

    def _is_ours(self) -> bool:
        raw, _ = self._read()
        return raw is not None and _parse(raw).get("token") == self._token

    def _undo_folder(self) -> None:
        if self._made_folder:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only when empty
            self._made_folder = False

    # --- keeping it fresh ----------------------------------------------------------------------------------------
    def _start_refresher(self) -> None:
        self._stop.clear()
        self._refresher = threading.Thread(target=self._keep_fresh, name=f"run-lock {self.path}", daemon=True)
        self._refresher.start()

    def _keep_fresh(self) -> None:
        while not self._stop.wait(self.refresh):
            if not self._is_ours():
                self.lost = True
                print(f"warning: the lock of {self.path} was taken over by another process", file=sys.stderr)
                return
            with contextlib.suppress(OSError):
                os.utime(self.file)

    # --- signals -------------------------------------------------------------------------------------------------
    def _catch_signals(self) -> None:
        """On SIGTERM/SIGHUP with no handler of the program's own: release, then die of the signal as before."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.release()  # nothing in a forked child (see release)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}

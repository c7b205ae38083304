"""Ray plumbing: connect a driver to a cluster, start an embedded Ray on loopback, and start/stop a local head.

Facts this module relies on (Ray 2.60): Ray replaces ``127.0.0.1`` with the machine's routable address and
listens on every interface unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is in the environment of the driver
and of every Ray process, and Ray reads that variable when it is imported; with it set, every listener is on
127.0.0.1. So everything this project starts on one machine (the embedded Ray of ``--ray-address local`` and of
the Ray Tune methods, the :class:`LocalHead` of tests and benchmarks) sets it before importing Ray and binds to
127.0.0.1. Ray's token authentication guards the cluster: an embedded Ray creates ``~/.ray/auth_token`` when it
is missing, ``ray start --head`` uses that token when it exists, and :func:`init_ray` sends it when connecting.
Ray starts its workers at nice 15; the Ray this project starts runs them at normal priority
(``RAY_worker_niceness=0``), so that on a busy machine they compete evenly with everything else.

Nothing here is imported unless Ray is asked for; ``import ray`` happens inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from hpobench_stn.errors import UserError

LOOPBACK = "127.0.0.1"
CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
NICENESS_ENV = "RAY_worker_niceness"


def is_loopback(address: str) -> bool:
    """True for ``local`` and for addresses on 127.0.0.0/8 or ``localhost`` (with or without a port)."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0] if ":" in address else address
    return address == "local" or host == "localhost" or host.startswith("127.")


def loopback_environ(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: this process's) that keeps Ray on 127.0.0.1, uses token authentication, and
    runs Ray's workers at normal priority (Ray's default, nice 15, starves them on a busy machine)."""
    out = dict(os.environ if env is None else env)
    out[CLUSTER_ENV] = "0"
    out.setdefault(AUTH_MODE_ENV, "token")
    out.setdefault(NICENESS_ENV, "0")
    return out


@contextlib.contextmanager
def temporary_environ(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block (Ray and Tune read some when they start)."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def token_available() -> bool:
    """True when a Ray authentication token can be found (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``), the places Ray itself looks."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()


def import_ray(loopback: bool) -> ModuleType:
    """Import Ray, first setting ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for loopback use.

    Ray reads the variable once, when it is imported, into ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``; if
    Ray was imported before (by the user, or a test), that constant is set too, or Ray would listen on every
    interface even with the variable in the environment of its processes (measured with Ray 2.60).
    """
    if loopback:
        os.environ[CLUSTER_ENV] = "0"
    import ray
    from ray._private import ray_constants

    if loopback and ray_constants.ENABLE_RAY_CLUSTER:
        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def init_ray(address: str | None = "local", num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Connect this process to Ray; returns True when this call did it (so the caller shuts it down).

    ``address`` ``"local"`` or ``None`` starts an embedded Ray on 127.0.0.1 (no dashboard); anything else connects
    to that existing cluster (``HOST:PORT`` of its head). An existing connection is reused as it is.
    """
    loopback = address is None or is_loopback(address)
    local = address in (None, "local")
    if AUTH_MODE_ENV not in os.environ and "ray" not in sys.modules and (local or token_available()):
        # Read when Ray is imported. A new local Ray uses token authentication by default (this only spares its
        # warning); to connect, `ray start`'s rule: token authentication when a token exists.
        os.environ[AUTH_MODE_ENV] = "token"
    ray = import_ray(loopback)
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if local:
        with temporary_environ(**{NICENESS_ENV: os.environ.get(NICENESS_ENV, "0")}):
            ray.init(
                address="local",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                **quiet,
            )
        return True
    _check_reachable(address)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(
            f"cannot connect to the Ray cluster at {address} ({str(exc).splitlines()[0]}); start one with "
            "`ray start --head --port PORT` and pass HOST:PORT (its token, if it uses token authentication, in "
            "RAY_AUTH_TOKEN or ~/.ray/auth_token), or use --ray-address local"
        ) from None
    return True


def shutdown_ray(grace: float = 10.0) -> None:
    """Disconnect from Ray (shutting down the embedded Ray this process started), then end that Ray's processes
    that outlived the shutdown: children of this process whose command line names the session. Seen with Ray
    2.60 on a starved machine: the log monitor of every embedded Ray kept running, one more per Ray Tune run of a
    long sweep. Processes of other Rays (another user's, a cluster's) are never touched."""
    import ray

    session = _session_dir()
    ray.shutdown()
    if session is None:
        return
    leftovers = [pid for pid in _children(os.getpid()) if session in _cmdline(pid)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        alive = [pid for pid in leftovers if _running(pid)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_running(pid) for pid in alive):
            time.sleep(0.1)
    for pid in leftovers:  # they are this process's children: reap them
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _session_dir() -> str | None:
    """The session folder of the Ray this process is connected to, when it started that Ray here."""
    try:
        from ray._private import worker

        node = worker.global_worker.node
        return str(node.get_session_dir_path()) if node is not None and node.head else None
    except Exception:  # a private API: without it only the leftover clean-up is skipped
        return None


def _children(parent: int) -> list[int]:
    """Process ids whose parent is ``parent`` (Linux /proc; elsewhere none)."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast, with a clear message, when nothing listens at ``HOST:PORT`` (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return  # "auto" and the like: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(
            f"cannot reach a Ray head at {address} ({exc.strerror or exc}); start one there with "
            "`ray start --head --port PORT`, check the address, or use --ray-address local"
        ) from None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _session_of(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[3])  # fields after the command: state, ppid, pgrp, session


class LocalHead:
    """A Ray head on 127.0.0.1 that this process starts and stops: ``ray start --head --block`` in a new session.

    Ray's daemons stay in that session (workers get their own process groups but keep the session), so
    :meth:`stop` ends exactly the processes whose session id is the head's: no ``ray stop``, which would end every
    Ray process of the user on the machine. Use it as a context manager.
    """

    def __init__(self, num_cpus: int = 2, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.num_cpus = num_cpus
        self.port = port or free_port()
        self.env = loopback_environ(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"hpobench-ray-head-{self.port}.log"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the address to connect drivers to."""
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 90.0) -> str:
        """Start the head and wait until it accepts connections; returns its address."""
        if self.env.get(AUTH_MODE_ENV) == "token" and not self.env.get("RAY_AUTH_TOKEN") and not token_available():
            subprocess.run(  # the default token file, as an embedded `ray.init()` would create it
                [_ray_cli(), "get-auth-token", "--generate"], env=self.env, capture_output=True, check=False
            )
        command = [
            _ray_cli(),
            "start",
            "--head",
            "--port",
            str(self.port),
            "--node-ip-address",
            LOOPBACK,
            "--num-cpus",
            str(self.num_cpus),
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--block",
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with code {self.process.returncode}; see {self.log}")
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return self.address
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Ray head did not start within {timeout:.0f} s; see {self.log}")

    def pids(self) -> list[int]:
        """The processes of the head's session (the head, Ray's daemons and workers)."""
        if self.process is None:
            return []
        sid = self.process.pid
        return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _session_of(int(p.name)) == sid]

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the head's session, wait up to ``grace`` seconds, then SIGKILL what is left of it."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(_running(pid) for pid in self.pids()):
                time.sleep(0.1)  # the head stays unreaped meanwhile, so that its pid (the session id) is not reused
            if not any(_running(pid) for pid in self.pids()):
                break
        self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> LocalHead:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _running(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _ray_cli() -> str:
    """The ``ray`` command of this Python environment."""
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"

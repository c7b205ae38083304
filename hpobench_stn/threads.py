"""CPU threads for a run: never more than the cores the run can have, and thread pools that wait without spinning.

A run's default thread count is the smallest of:

- ``affinity``: the physical cores among the CPUs this process may run on (``os.sched_getaffinity``; hyperthread
  siblings count once, as torch's own default does);
- ``quota``: the container's CPU quota (cgroup v2 ``cpu.max``), when there is one;
- ``ray``: the CPUs Ray assigned to the task, when the run is a Ray task;
- ``load``: the cores left by the rest of the machine: the allowed cores minus the load that is not this
  process's (the larger of the 1-minute load average and the number of threads runnable right now), rounded.

and never less than 1. ``--threads N`` overrides it (source ``user``). The choice is recorded in the run's
metadata with the figures it came from.

OpenMP threads that spin while they wait for work steal the cores other threads need when the machine is shared;
:func:`quiet_thread_pools` makes them sleep instead (``OMP_WAIT_POLICY=PASSIVE`` for GNU OpenMP, which torch
ships, ``KMP_BLOCKTIME=0`` for Intel's). OpenMP reads these when it is loaded, so the command line sets them
before torch is first imported. :func:`apply_threads` sets torch's pools and numpy's BLAS pool to the count.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Set only when absent: a user's own setting wins.
QUIET_POOLS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
LOAD_WINDOW = 60.0  # seconds: the time constant of the kernel's 1-minute load average
SOURCES = ("affinity", "quota", "ray", "load")  # in this order when several give the same count
_before_torch: bool | None = None  # whether the first quiet_thread_pools call came before torch was imported


def quiet_thread_pools() -> None:
    """Make OpenMP's worker threads sleep, not spin, while they wait (takes effect if torch is not yet imported)."""
    global _before_torch
    if _before_torch is None:
        _before_torch = "torch" not in sys.modules
    for name, value in QUIET_POOLS.items():
        os.environ.setdefault(name, value)


def pool_settings() -> dict[str, Any]:
    """The thread-pool environment as torch's OpenMP read it: the variables, and whether they were set before
    torch was imported (if not, OpenMP ignored them)."""
    settings: dict[str, Any] = {name: os.environ.get(name) for name in (*QUIET_POOLS, "OMP_NUM_THREADS")}
    settings["set_before_torch"] = bool(_before_torch)
    return settings


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count of a run and why: ``source`` is ``user`` or the limit that set it (see the module doc);
    ``limits`` holds every limit found, ``load`` the load figures the ``load`` limit came from."""

    count: int
    source: str
    limits: dict[str, int] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record stored in the run's metadata, with the thread-pool environment (:func:`pool_settings`)."""
        return {**asdict(self), "pools": pool_settings()}


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int]) -> int:
    """The physical cores among ``cpus`` (hyperthread siblings count once); ``len(cpus)`` when unknown."""
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology / "core_cpus_list").read_text().strip())
        except OSError:
            try:
                cores.add((topology / "thread_siblings_list").read_text().strip())
            except OSError:
                return len(cpus)
    return max(1, len(cores))


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The CPUs a cgroup v2 quota allows this process (rounded up), or None without a quota."""
    try:
        relative = Path("/proc/self/cgroup").read_text().strip().splitlines()[0].split(":", 2)[2]
        text = (root / relative.lstrip("/") / "cpu.max").read_text().split()
    except (OSError, IndexError):
        return None
    if len(text) != 2 or text[0] == "max":
        return None
    return max(1, math.ceil(int(text[0]) / int(text[1])))


def ray_cpus() -> int | None:
    """The CPUs Ray assigned to the task this process runs, or None outside a Ray task (Ray is never imported)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        context = ray.get_runtime_context()
        if context.worker.mode != ray.WORKER_MODE:
            return None
        cpus = context.get_assigned_resources().get("CPU")
    except Exception:  # Ray's runtime context differs between versions: then no Ray limit
        return None
    return max(1, math.floor(cpus)) if cpus else None


def own_load() -> float:
    """This process's share of the 1-minute load average: its CPU time (and its finished children's), spread
    evenly over its life, as the kernel's exponential average with a one-minute time constant would weigh it."""
    times = os.times()
    cpu = times.user + times.system + times.children_user + times.children_system
    life = max(_process_age(), 1e-3)
    return cpu / life * (1.0 - math.exp(-life / LOAD_WINDOW))


def _process_age() -> float:
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return time.process_time()  # a lower bound: the process has run at least this long


def runnable_now(samples: int = 5, interval: float = 0.02) -> float:
    """Threads runnable on the machine right now, not counting the one asking (median of a few samples)."""
    counts = []
    for index in range(samples):
        try:
            counts.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            return 0.0
        if index < samples - 1:
            time.sleep(interval)
    return float(sorted(counts)[len(counts) // 2])


def load_limit(cores: int) -> tuple[int, dict[str, float]]:
    """The cores left to this process by the rest of the machine's load, and the figures it came from."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        return cores, {}
    mine = own_load()
    now = runnable_now()
    others = max(load1 - mine, now, 0.0)
    figures = {"load_1m": round(load1, 2), "own_1m": round(mine, 2), "runnable_now": now, "others": round(others, 2)}
    return max(1, min(cores, math.floor(cores - others + 0.5))), figures


def choose_threads(requested: int | None = None) -> ThreadChoice:
    """The thread count for a run: ``requested`` when given, else the smallest limit (see the module doc)."""
    if requested is not None:
        return ThreadChoice(requested, "user")
    cores = physical_cores(allowed_cpus())
    limits: dict[str, int] = {"affinity": cores}
    quota = cpu_quota()
    if quota is not None:
        limits["quota"] = quota
    assigned = ray_cpus()
    if assigned is not None:
        limits["ray"] = assigned
    limits["load"], figures = load_limit(min(limits.values()))
    count = min(limits.values())
    source = next(name for name in SOURCES if limits.get(name) == count)
    return ThreadChoice(count, source, limits, figures)


def apply_threads(choice: ThreadChoice) -> None:
    """Size torch's intra-op pool to the choice, its inter-op pool to 1 where torch still allows it (once per
    process, before any parallel work), and numpy's BLAS pool to the choice."""
    quiet_thread_pools()
    import torch

    torch.set_num_threads(choice.count)
    with contextlib.suppress(RuntimeError):  # torch allows it once, before any inter-op work
        torch.set_num_interop_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=choice.count, user_api="blas")


def configure_threads(requested: int | None = None) -> ThreadChoice:
    """Choose this run's thread count (see :func:`choose_threads`) and apply it; returns the choice."""
    choice = choose_threads(requested)
    apply_threads(choice)
    return choice

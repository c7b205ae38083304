"""Sweeps: many runs (tasks x methods x seeds); completed runs are skipped, so a re-run of a killed sweep finishes
the rest (a half-finished run resumes from its event log).

By default everything runs in this process, one run after another, and Ray is never imported. With a Ray address
each run is a Ray task with its own resources, sent to an existing cluster (``HOST:PORT``) or to an embedded Ray
(``local``); every worker writes its run folder under ``out``, which must be a path every node can reach. A run
whose worker dies is retried by Ray up to ``max_retries`` times (the retry resumes from the run's event log) and
then recorded as failed; the driver shows one progress bar over the grid of runs.

A run another process is writing (its folder's lock is held, see ``hpobench_stn.lock``) is not run: its status
is ``held``, with the holder, and a later sweep runs it if it is still not complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any

from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.lock import RunHeldError, describe
from hpobench_stn.signals import INTERRUPTIONS
from hpobench_stn.store import RunStore, is_complete

INTERRUPT_GRACE_SECONDS = 30.0
WAIT_SECONDS = 1.0


def run_sweep(
    specs: list[RunSpec],
    progress: bool = True,
    *,
    ray_address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    max_retries: int = 2,
) -> dict[str, dict[str, Any]]:
    """Run every spec not yet complete; return ``{run folder: {"status": ..., ...}}`` in the order of ``specs``.

    Without ``ray_address`` the runs go one by one in this process; with it, as Ray tasks (see the module doc).
    """
    if ray_address is not None:
        return _run_sweep_on_ray(specs, progress, ray_address, cpus_per_run, gpus_per_run, max_retries)
    from tqdm import tqdm

    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(specs, desc="sweep", unit="run", file=sys.stderr, disable=not progress, position=0)
    for spec in bar:
        key = str(spec.path)
        if is_complete(spec.path):
            results[key] = {"status": "skipped"}
            continue
        try:
            summary = execute(spec, progress=False)
        except RunHeldError as exc:  # another process writes this run: leave it to that one
            results[key] = _held(exc)
            bar.set_postfix_str(f"{spec.task}/{spec.method}/seed {spec.seed}: held")
            continue
        results[key] = {
            "status": summary["status"],
            "val_loss": summary.get("val_loss"),
            "test_loss": summary.get("test_loss"),
        }
        bar.set_postfix_str(f"{spec.task}/{spec.method}/seed {spec.seed}: {summary['status']}")
    return results


def _held(exc: RunHeldError) -> dict[str, Any]:
    return {"status": "held", "holder": describe(exc.holder)}


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    return {"status": summary["status"], "val_loss": summary.get("val_loss"), "test_loss": summary.get("test_loss")}


def execute_brief(spec: RunSpec) -> dict[str, Any]:
    """Run one spec (resuming it if it was cut) and return its status and losses; what a sweep worker runs."""
    return _brief(execute(spec, progress=False))


def _run_sweep_on_ray(
    specs: list[RunSpec],
    progress: bool,
    address: str,
    cpus_per_run: float,
    gpus_per_run: float,
    max_retries: int,
) -> dict[str, dict[str, Any]]:
    from tqdm import tqdm

    from hpobench_stn.ray_cluster import init_ray, shutdown_ray

    results: dict[str, dict[str, Any]] = {}
    todo = []
    for spec in specs:
        results[str(spec.path)] = {"status": "pending" if not is_complete(spec.path) else "skipped"}
        if results[str(spec.path)]["status"] == "pending":
            todo.append(spec)
    if not todo:
        return results
    with contextlib.redirect_stdout(sys.stderr):  # Ray prints worker deaths and the like to stdout
        started = init_ray(address)  # before any output: a wrong address is one line of error
        bar = tqdm(total=len(specs), desc="sweep", unit="run", file=sys.stderr, disable=not progress, position=0)
        bar.update(len(specs) - len(todo))
        try:
            return _drive_on_ray(todo, results, bar, cpus_per_run, gpus_per_run, max_retries)
        finally:
            bar.close()
            if started:
                shutdown_ray()


def _drive_on_ray(
    todo: list[RunSpec],
    results: dict[str, dict[str, Any]],
    bar: Any,
    cpus_per_run: float,
    gpus_per_run: float,
    max_retries: int,
) -> dict[str, dict[str, Any]]:
    """Send every run as a Ray task, collect them as they finish, and record runs whose worker kept dying."""
    import ray

    remote = ray.remote(execute_brief).options(
        num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries, retry_exceptions=False
    )
    pending = {remote.remote(_portable(spec)): spec for spec in todo}
    try:
        _collect(pending, results, bar, max_retries)
    except INTERRUPTIONS:
        _pass_on_interruption(list(pending))
        raise
    return results


def _pass_on_interruption(refs: list[Any]) -> None:
    """Interrupt the runs still going (Ray raises ``KeyboardInterrupt`` in their workers, so each writes an
    ``interrupted`` summary and resumes next time) and give them a little while to do so."""
    import ray

    for ref in refs:
        ray.cancel(ref)
    ray.wait(refs, num_returns=len(refs), timeout=INTERRUPT_GRACE_SECONDS)


def _collect(pending: dict[Any, RunSpec], results: dict[str, dict[str, Any]], bar: Any, max_retries: int) -> None:
    """Collect the runs as they finish, recording runs whose worker kept dying."""
    import ray

    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)  # returns to Python for signals
        if not done:
            continue
        spec = pending.pop(done[0])
        key = str(spec.path)
        try:
            results[key] = ray.get(done[0])
        except ray.exceptions.RayTaskError as exc:  # an error escaped the harness (bad input, data missing)
            if isinstance(exc.cause, RunHeldError):
                results[key] = _held(exc.cause)
            else:
                results[key] = {"status": "failed", "error": str(exc.cause) if exc.cause else str(exc)}
        except ray.exceptions.RayError as exc:  # the worker or its node died on every attempt
            error = f"worker died {max_retries + 1} times: {type(exc).__name__}"
            results[key] = {"status": "failed", "error": error}
            store = RunStore(spec.path)
            store.event(event="run_failed", error=error, attempts=max_retries + 1)
            store.close()
        bar.update(1)
        bar.set_postfix_str(f"{spec.task}/{spec.method}/seed {spec.seed}: {results[key]['status']}")


def _portable(spec: RunSpec) -> RunSpec:
    """The spec with absolute paths, since workers do not share the driver's working directory."""
    data_dir = str(Path(spec.data_dir).resolve()) if spec.data_dir else None
    return dataclasses.replace(spec, out=Path(spec.out).resolve(), data_dir=data_dir)

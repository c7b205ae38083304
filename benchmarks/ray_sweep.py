"""A sweep on a local Ray cluster with two workers against the same sweep run one by one in one process.

The sweep is 4 runs (random search on the quadratic task's ``cpu`` preset, seeds 0-3, an epoch budget, so both
ways do exactly the same work). The cluster is a ``ray start --head`` on 127.0.0.1 with 2 CPUs started before the
clock starts (as a user's cluster would be); each run is a Ray task with 1 CPU, so two run at a time. The clock
covers the whole ``run_sweep`` call: for Ray, connecting, shipping the runs, workers importing the project, and
writing results. Each way writes into its own fresh folder; the two ways alternate (``--repeats``), so that load
from other processes on the machine hits both alike, and the load average is printed. Target on a 2-core
machine: at least 1.7x.

Usage: ``python benchmarks/ray_sweep.py [--budget 20000ep] [--preset cpu] [--method random] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hpobench_stn.harness import RunSpec
from hpobench_stn.ray_cluster import LocalHead
from hpobench_stn.sweep import run_sweep


def _specs(out: Path, args: argparse.Namespace) -> list[RunSpec]:
    return [
        RunSpec("quadratic", args.method, seed=seed, budget=args.budget, preset=args.preset, out=out)
        for seed in range(4)
    ]


def _timed(specs: list[RunSpec], **ray: object) -> float:
    start = time.perf_counter()
    results = run_sweep(specs, progress=False, **ray)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    statuses = sorted({r["status"] for r in results.values()})
    if statuses != ["completed"]:
        raise SystemExit(f"runs ended {statuses}, not all completed")
    return seconds


def main() -> None:
    """Run both ways, alternately, and print the times and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="20000ep", help="per run (epochs, so both ways do the same work)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--method", default="random")
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each way, alternating")
    args = parser.parse_args()
    print("command:", shlex.join(sys.orig_argv))
    print(f"4 runs: quadratic/{args.preset}, {args.method}, seeds 0-3, {args.budget} each; {os.cpu_count()} CPUs")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    times: dict[str, list[float]] = {"one by one": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp, LocalHead(num_cpus=2) as head:
        for repeat in range(args.repeats):
            root = Path(tmp) / str(repeat)
            times["one by one"].append(_timed(_specs(root / "sequential", args)))
            times["ray"].append(_timed(_specs(root / "ray", args), ray_address=head.address, cpus_per_run=1))
            print(f"repeat {repeat}: one by one {times['one by one'][-1]:.1f} s, Ray {times['ray'][-1]:.1f} s")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    seq, par = statistics.median(times["one by one"]), statistics.median(times["ray"])
    print(f"one by one, in this process:      median {seq:.1f} s, best {min(times['one by one']):.1f} s")
    print(f"Ray cluster, 2 workers x 1 CPU:   median {par:.1f} s, best {min(times['ray']):.1f} s")
    print(
        f"speed-up: {seq / par:.2f}x median, {min(times['one by one']) / min(times['ray']):.2f}x best (target >= 1.7x)"
    )


if __name__ == "__main__":
    main()

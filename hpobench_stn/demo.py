"""``python -m hpobench_stn demo``: the suite's main job in small.

STN against a few baselines (random search, Optuna's TPE, Ray Tune's ASHA, the initial configuration) at the same
budget, on the shipped PTB slice, a few seeds; then the comparison table in the terminal. The run folders are left
under ``--out`` for ``table``, ``plot`` and ``report``; running the demo again skips what is done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hpobench_stn.errors import UserError

#: (method, its --method-arg settings): ASHA runs one trial at a time, so its run is sequential like the others.
METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("stn", {}),
    ("random", {}),
    ("tpe", {}),
    ("asha", {"num_cpus": 1}),
    ("fixed", {}),
)
DEFAULT_OUT = "results/demo"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``demo`` subcommand."""
    demo = sub.add_parser("demo", help="STN against random, TPE, ASHA and the initial configuration, in minutes")
    demo.add_argument("--task", default="ptb", help="a task with a shipped slice (default ptb; also cifar, digits)")
    demo.add_argument(
        "--budget",
        default="12ep",
        help="per run, the same for every method (default 12ep: twelve epochs of the fixed network's compute)",
    )
    demo.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    demo.add_argument("--out", default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    demo.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the demo's sweep and print its comparison table; exit code 0 when every run ended with a result."""
    from analysis import tables
    from analysis.cli import load
    from hpobench_stn.arguments import parse_seeds
    from hpobench_stn.budget import Budget
    from hpobench_stn.harness import RunSpec
    from hpobench_stn.registry import get_task
    from hpobench_stn.sweep import run_sweep

    budget = str(Budget.parse(args.budget))
    seeds = parse_seeds(args.seeds)
    if "tiny" not in get_task(args.task).presets:
        raise UserError(f"task {args.task!r} has no tiny preset to demonstrate on; use --task ptb")
    out = Path(args.out)
    specs = [
        RunSpec(args.task, method, seed, budget, "tiny", out, dict(method_args), threads=args.threads)
        for seed in seeds
        for method, method_args in METHODS
    ]
    print(
        f"demo: {', '.join(m for m, _ in METHODS)} on {args.task} (tiny preset, shipped slice), {len(seeds)} seeds, "
        f"{Budget.parse(budget).unit} each",
        file=sys.stderr,
    )
    results = run_sweep(specs, progress=not args.quiet)
    runs, events, _ = load([str(out / args.task / "tiny")])
    runs = runs[runs["budget"] == budget]
    events = events[events["budget"] == budget] if not events.empty else events
    print(tables.to_markdown(tables.build(runs, events)))
    print(f"\nrun folders: {out}/{args.task}/tiny; next: python -m hpobench_stn report --runs {out} --out {out}")
    return 0 if all(r["status"] in ("completed", "skipped") for r in results.values()) else 1

"""Command line: ``python -m hpobench_stn {run,sweep,list}``.

Bad input (unknown names, malformed budgets, unwritable folders, configurations out of bounds, missing data)
prints one line starting with ``error:`` and exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from hpobench_stn.arguments import check_seed, parse_names, parse_seeds, parse_settings
from hpobench_stn.errors import UserError
from hpobench_stn.signals import INTERRUPTIONS, exit_code, signal_name, signals_as_interrupts

DATA_DIR_ENV = "HPOBENCH_STN_DATA"
DEFAULT_OUT = "results/runs"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="task size: tiny (seconds), cpu (minutes), paper")
    parser.add_argument(
        "--budget",
        default="30s",
        help="per run: wall-clock (90s, 15m, 2h) and/or epoch-equivalents (20ep), e.g. 10m,50ep",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what the budget's seconds count: wall-clock (default) or CPU-seconds of the run's processes",
    )
    parser.add_argument(
        "--trial-epochs",
        type=int,
        default=None,
        metavar="N",
        help="epochs of one black-box trial (ASHA/HyperBand's maximum, PBT's member, fixed's training); "
        "default: the preset's",
    )
    parser.add_argument(
        "--task-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task setting overriding the preset's, repeatable (e.g. data_seed=3 for another quadratic instance)",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"folder with the real data (default: ${DATA_DIR_ENV}, else the shipped slices)",
    )
    parser.add_argument("--download", action="store_true", help="download missing data (needs internet)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--method-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method setting, repeatable (see `list`)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per run (default: the cores free for it: CPU affinity, Ray's CPUs, the machine's load)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--schedule",
        default=None,
        metavar="RUN",
        help="for --method replay: the run folder whose hyperparameter schedule to follow",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m hpobench_stn",
        description="Hyperparameter-optimisation benchmark around Self-Tuning Networks",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="one run: a method on a task with a seed and a budget")
    run.add_argument("--task", required=True)
    run.add_argument("--method", required=True)
    run.add_argument("--seed", type=int, default=0)
    _common(run)

    sweep = sub.add_parser("sweep", help="tasks x methods x seeds; skips completed runs, so a re-run resumes")
    sweep.add_argument("--tasks", required=True, help="comma-separated task names")
    sweep.add_argument("--methods", required=True, help="comma-separated method names")
    sweep.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    sweep.add_argument(
        "--shuffle",
        type=int,
        default=None,
        metavar="SEED",
        help="run the grid in an order shuffled with this seed (reference sweeps: no method always runs first)",
    )
    sweep.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS|local",
        help="run each run as a Ray task on the cluster at HOST:PORT, or on an embedded Ray with 'local'",
    )
    sweep.add_argument("--cpus-per-run", type=float, default=None, help="with --ray-address: CPUs per run (1)")
    sweep.add_argument("--gpus-per-run", type=float, default=None, help="with --ray-address: GPUs per run (0)")
    sweep.add_argument(
        "--max-retries", type=int, default=None, help="with --ray-address: retries of a run whose worker dies (2)"
    )
    _common(sweep)

    sub.add_parser("list", help="tasks, methods and presets with one-line descriptions")
    from hpobench_stn import demo

    demo.add_parser(sub)
    from analysis.cli import add_parsers

    add_parsers(sub)
    return parser


def _resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here; use --device cpu")
    elif device != "cpu":
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    return device


def _data_dir(args: argparse.Namespace) -> str | None:
    data_dir = args.data_dir or os.environ.get(DATA_DIR_ENV)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(f"data folder {data_dir} does not exist; pass an existing folder to --data-dir")
    return data_dir


def _check_out(out: str) -> Path:
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A probe file of this process's own: runs started side by side must not delete each other's.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to output folder {out} ({exc.strerror}); choose another with --out") from None
    return path


def _cmd_list() -> None:
    """Every task and method that loads; one line for each that does not, and for each plugin refused."""
    from hpobench_stn.registry import method_names, refused_plugins, task_names, try_load

    print("tasks:")
    for name in task_names():
        cls, why = try_load("task", name)
        if cls is None:
            print(f"  {name:14s} FAILED: {why}")
            continue
        print(f"  {name:14s} {cls.description}")
        for preset in cls.presets.values():
            print(f"      --preset {preset.name:6s} {preset.description}")
    print("methods:")
    for name in method_names():
        cls, why = try_load("method", name)
        if cls is None:
            print(f"  {name:14s} FAILED: {why}")
            continue
        print(f"  {name:14s} {cls.description}")
        for line in cls.Settings.describe():
            print(f"      --method-arg {line}")
    refused = refused_plugins()
    if refused:
        print("plugins refused:")
        for line in refused:
            print(f"  {line}")


def _print_summary(spec: Any, summary: dict[str, Any]) -> None:
    inc = summary.get("incumbent") or {}
    test = (inc.get("test_metrics") or {}) if inc else {}
    line = (
        f"{spec.task}/{spec.method} seed {spec.seed}: {summary['status']} ({summary['stop_reason']}), "
        f"{summary['trials']} trials, {summary['epochs']:.2f} ep, {summary['seconds']:.1f} s; "
    )
    if inc:
        line += f"best val_loss {inc['val_loss']:.5g}"
        line += "".join(f", test {k} {v:.5g}" for k, v in test.items())
        if "regret" in summary:
            line += f", regret {summary['regret']:.4g}"
    else:
        line += summary.get("error") or "no result"
    print(line)
    print(f"results: {spec.path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input)."""
    from hpobench_stn.threads import quiet_thread_pools

    quiet_thread_pools()  # before torch is first imported: OpenMP reads these settings when it loads
    args = build_parser().parse_args(argv)
    from hpobench_stn.metadata import source_revision

    source_revision()  # the checkout as this process imported it (recorded with every run)
    try:
        with signals_as_interrupts():
            return _dispatch(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except INTERRUPTIONS as exc:
        print(
            f"interrupted ({signal_name(exc)}): completed runs and finished trials are kept; "
            "re-run the same command to resume",
            file=sys.stderr,
        )
        return exit_code(exc)


def _ray_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Ray settings of a sweep, checked; empty without --ray-address (then nothing Ray is imported)."""
    given = {
        "cpus_per_run": args.cpus_per_run,
        "gpus_per_run": args.gpus_per_run,
        "max_retries": args.max_retries,
    }
    if args.ray_address is None:
        stray = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if stray:
            raise UserError(f"{', '.join(stray)} only applies with --ray-address ADDRESS|local")
        return {}
    if not args.ray_address.strip():
        raise UserError("--ray-address needs HOST:PORT of a Ray head, or 'local' for an embedded Ray")
    options = {"cpus_per_run": 1.0, "gpus_per_run": 0.0, "max_retries": 2}
    options.update({k: v for k, v in given.items() if v is not None})
    if options["cpus_per_run"] <= 0:
        raise UserError(f"--cpus-per-run must be positive, got {options['cpus_per_run']:g}")
    if options["gpus_per_run"] < 0:
        raise UserError(f"--gpus-per-run cannot be negative, got {options['gpus_per_run']:g}")
    if options["max_retries"] < 0:
        raise UserError(f"--max-retries cannot be negative, got {options['max_retries']}")
    return {"ray_address": args.ray_address.strip(), **options}


def _dispatch(args: argparse.Namespace) -> int:
    from hpobench_stn.budget import Budget
    from hpobench_stn.harness import RunSpec
    from hpobench_stn.registry import get_task, method_settings, refused_plugins
    from hpobench_stn.sweep import run_sweep

    if args.command == "list":
        _cmd_list()
        return 0
    if args.command == "demo":
        from hpobench_stn import demo

        return demo.run(args)
    if args.command in ("table", "plot", "report"):
        from analysis.cli import dispatch

        return dispatch(args)
    Budget.parse(args.budget, args.clock)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    if args.trial_epochs is not None and args.trial_epochs < 1:
        raise UserError(f"--trial-epochs must be at least 1, got {args.trial_epochs}")
    method_args = parse_settings(args.method_arg)
    task_args = parse_settings(args.task_arg, "--task-arg")
    if args.schedule is not None:
        method_args["schedule"] = str(Path(args.schedule).resolve())
    out = _check_out(args.out)
    device = _resolve_device(args.device)
    data_dir = _data_dir(args)
    if args.command == "run":
        check_seed(args.seed)
        tasks, methods, seeds = [args.task], [args.method], [args.seed]
    else:
        tasks = parse_names(args.tasks, "--tasks", "quadratic,ptb")
        methods = parse_names(args.methods, "--methods", "random,stn")
        seeds = parse_seeds(args.seeds, "--seeds")
    for task in tasks:
        cls = get_task(task)
        if args.preset not in cls.presets:
            raise UserError(
                f"unknown preset {args.preset!r} for task {task!r}; valid presets: {', '.join(cls.presets)}"
            )
        cls.presets[args.preset].with_settings(task_args, task)  # an unknown or mistyped --task-arg: refused now
    for method in methods:
        method_settings(method, method_args)  # names, types and ranges checked before anything runs
    for line in refused_plugins(tasks + methods):  # the user may have meant the plugin: say which one runs
        print(f"warning: {line}; the built-in runs", file=sys.stderr)
    specs = [
        RunSpec(
            task=t,
            method=m,
            seed=s,
            budget=args.budget,
            preset=args.preset,
            out=out,
            method_args=method_args,
            data_dir=data_dir,
            device=device,
            download=args.download,
            threads=args.threads,
            clock=args.clock,
            trial_epochs=args.trial_epochs,
            task_args=task_args,
        )
        for t in tasks
        for m in methods
        for s in seeds
    ]
    if args.command == "run":
        from hpobench_stn.harness import execute

        summary = execute(specs[0], progress=not args.quiet)
        _print_summary(specs[0], summary)
        return 0 if summary["status"] == "completed" else 1
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(specs)
    results = run_sweep(specs, progress=not args.quiet, **_ray_options(args))
    print(json.dumps(results, indent=1))
    return 0 if all(r["status"] in ("completed", "skipped") for r in results.values()) else 1

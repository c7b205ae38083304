"""Sweeps: many runs (tasks x methods x seeds) in one process; completed runs are skipped, so a re-run of a
killed sweep finishes the rest (a half-finished run resumes from its event log)."""

from __future__ import annotations

import sys
from typing import Any

from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.store import is_complete


def run_sweep(specs: list[RunSpec], progress: bool = True) -> dict[str, dict[str, Any]]:
    """Run every spec not yet complete, in order; return ``{run folder: {"status": ..., ...}}``."""
    from tqdm import tqdm

    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(specs, desc="sweep", unit="run", file=sys.stderr, disable=not progress, position=0)
    for spec in bar:
        key = str(spec.path)
        if is_complete(spec.path):
            results[key] = {"status": "skipped"}
            continue
        summary = execute(spec, progress=False)
        results[key] = {
            "status": summary["status"],
            "val_loss": summary.get("val_loss"),
            "test_loss": summary.get("test_loss"),
        }
        bar.set_postfix_str(f"{spec.task}/{spec.method}/seed {spec.seed}: {summary['status']}")
    return results

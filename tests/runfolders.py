"""Run folders written by hand in the store's format (metadata.json, events.jsonl, summary.json, COMPLETE), with
known answers, for the analysis tests."""

import json
import math
from pathlib import Path


def write_run(
    root: Path,
    method: str,
    seed: int,
    val: float | None,
    test: float | None,
    reports: list[tuple],
    hparams=None,
    budget: str = "10ep",
    args: dict | None = None,
    task: str = "toy",
    status: str = "completed",
    budget_units: dict | None = None,
    meta_extra: dict | None = None,
    summary_extra: dict | None = None,
) -> Path:
    """One run folder. ``reports``: (t, epochs, val_loss) or (t, epochs, val_loss, cpu_t) per report event;
    ``val=None`` writes a run without an incumbent (every trial diverged); ``status="failed"`` leaves out the
    completion marker, as the harness does for a run whose method crashed."""
    path = root / task / "cpu" / (method + ("+" + str(len(args)) if args else "")) / budget / f"seed-{seed}"
    path.mkdir(parents=True)
    meta = {"task": task, "preset": "cpu", "method": method, "seed": seed, "budget_text": budget}
    meta["method_args"] = args or {}
    meta["budget"] = budget_units or _units(budget)
    meta |= meta_extra or {}
    (path / "metadata.json").write_text(json.dumps(meta))
    summary = {
        "status": status,
        "seconds": 10.0 * (seed + 1),
        "epochs": 10.0,
        "trials": 2,
        "incumbent": None,
    }
    if val is not None:
        summary |= {"val_loss": val, "test_loss": test, "incumbent": {"val_loss": val, "test_metrics": {"loss": test}}}
    summary |= summary_extra or {}
    (path / "summary.json").write_text(json.dumps(summary))
    lines = []
    for report in reports:
        t, e, v = report[:3]
        line = {"event": "report", "t": t, "epochs": e, "val_loss": _jsonable(v), "trial": 0}
        if len(report) > 3:
            line["cpu_t"] = report[3]
        if hparams:
            line["hparams"] = hparams(e)
        lines.append(line)
    (path / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if status != "failed":
        (path / "COMPLETE").write_text("")
    return path


def _units(budget: str) -> dict:
    if budget.endswith("ep"):
        return {"epochs": float(budget[:-2]), "seconds": None}
    if budget.endswith("s"):
        return {"epochs": None, "seconds": float(budget[:-1])}
    return {"epochs": None, "seconds": None}


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else "inf"
    return value

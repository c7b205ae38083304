"""Sweeps: a re-run does the work once; a sweep killed with SIGKILL and re-run completes every run exactly once; a run
another process writes is left to it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpobench_stn.harness import RunSpec
from hpobench_stn.lock import LOCK, RunLock
from hpobench_stn.store import find_runs, read_events

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["sweep", "--tasks", "quadratic", "--methods", "grid,random", "--seeds", "0,1", "--quiet"]


def _sweep(out, budget, sweep=SWEEP, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "hpobench_stn", *sweep, "--budget", budget, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        **kw,
    )


def test_sweep_twice_does_the_work_once(tmp_path):
    first = _sweep(tmp_path, "60ep")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert [v["status"] for v in json.loads(out).values()] == ["completed"] * 4
    logs = {p: (p / "events.jsonl").read_text() for p in find_runs([tmp_path])}
    assert len(logs) == 4
    second = _sweep(tmp_path, "60ep")
    out, _ = second.communicate(timeout=300)
    assert all(v["status"] == "skipped" for v in json.loads(out).values())
    assert {p: (p / "events.jsonl").read_text() for p in find_runs([tmp_path])} == logs


def test_sweep_skips_a_run_another_process_writes_and_says_so(tmp_path):
    held = RunSpec("quadratic", "random", seed=1, budget="20ep", out=tmp_path).path
    sweep = ["sweep", "--tasks", "quadratic", "--methods", "random", "--seeds", "0,1", "--quiet"]
    with RunLock(held):  # this test process writes seed 1
        proc = _sweep(tmp_path, "20ep", sweep)
        out, err = proc.communicate(timeout=300)
        assert [p.name for p in held.iterdir()] == [LOCK], "the sweep wrote into a run another process holds"
    results = json.loads(out)
    assert proc.returncode == 1, err  # not every run is complete
    assert results[str(held)] == {"status": "held", "holder": results[str(held)]["holder"]}
    assert f"PID {os.getpid()}" in results[str(held)]["holder"]
    (other,) = [v for k, v in results.items() if k != str(held)]
    assert other["status"] == "completed"


@pytest.mark.slow
def test_sweep_killed_midway_resumes_without_duplicates(tmp_path):
    proc = _sweep(tmp_path, "4000ep")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(find_runs([tmp_path]))) < 1:
        time.sleep(0.1)
    time.sleep(1.0)  # let the next run get going, then kill it mid-trial
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    complete_before = list(find_runs([tmp_path]))
    assert 1 <= len(complete_before) < 4, "the kill should land midway"
    rerun = _sweep(tmp_path, "4000ep")
    _out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    runs = list(find_runs([tmp_path]))
    assert len(runs) == 4 and len(list(find_runs([tmp_path], complete_only=False))) == 4
    for run in runs:
        ends = [ev["trial"] for ev in read_events(run) if ev["event"] == "trial_end"]
        assert len(ends) == len(set(ends)), f"duplicated trials in {run}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["epochs"] <= 4000 and summary["status"] == "completed"


def test_a_shuffled_sweep_runs_its_grid_in_a_seeded_random_order(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "hpobench_stn", "sweep", "--tasks", "quadratic", "--methods", "random,grid"]
    command += ["--seeds", "0,1,2", "--budget", "2ep", "--quiet", "--shuffle", "7", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=True).stdout
    order = [(Path(p).parts[-3], Path(p).parts[-1]) for p in json.loads(out)]
    nested = [(m, f"seed-{s}") for m in ("random", "grid") for s in (0, 1, 2)]
    assert sorted(order) == sorted(nested) and order != nested  # the whole grid, not in nested order
    assert len(list(tmp_path.rglob("COMPLETE"))) == 6

"""The comparison protocol's run settings: the clock the budget's seconds count, the trial length, the problem
instance. Each is part of the run's identity (folder and label) and recorded with it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpobench_stn.errors import UserError
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.store import load_runs, read_events

ROOT = Path(__file__).resolve().parent.parent


def _trial_lengths(path):
    reports = [e for e in read_events(path) if e["event"] == "report"]
    lengths = {}
    for report in reports:
        lengths[report["trial"]] = max(lengths.get(report["trial"], 0), report["epoch"])
    return lengths


def test_fixed_trains_at_the_given_trial_length_in_its_own_folder(tmp_path):
    short = RunSpec("quadratic", "fixed", budget="100ep", out=tmp_path)
    long = RunSpec("quadratic", "fixed", budget="100ep", out=tmp_path, trial_epochs=30)
    assert short.path != long.path
    execute(short, progress=False), execute(long, progress=False)
    assert _trial_lengths(short.path) == {0: 10} and _trial_lengths(long.path) == {0: 30}
    meta = json.loads((long.path / "metadata.json").read_text())
    assert meta["trial_epochs"] == 30 and meta["trial_epochs_override"] == 30
    labels = set(load_runs([tmp_path])["method"])
    assert labels == {"fixed", "fixed [trial_epochs=30]"}  # never pooled with the preset-length control


def test_random_search_and_replay_follow_the_trial_length(tmp_path):
    spec = RunSpec("quadratic", "random", budget="40ep", out=tmp_path, trial_epochs=4)
    execute(spec, progress=False)
    assert set(_trial_lengths(spec.path).values()) == {4} and len(_trial_lengths(spec.path)) == 10
    source = RunSpec("quadratic", "stn", budget="20ep", out=tmp_path)
    execute(source, progress=False)
    replay = RunSpec("quadratic", "replay", budget="30ep", out=tmp_path, trial_epochs=25)
    replay.method_args = {"schedule": str(source.path), "mode": "final"}
    execute(replay, progress=False)
    assert _trial_lengths(replay.path) == {0: 25}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["asha", "hyperband", "pbt"])
def test_ray_tune_methods_honour_the_trial_length(tmp_path, method):
    budget = "12ep" if method == "pbt" else "24ep"  # PBT: 12 / 3 = 4 members of the trial length
    spec = RunSpec("quadratic", method, budget=budget, out=tmp_path, trial_epochs=3, method_args={"num_cpus": 1})
    assert execute(spec, progress=False)["status"] == "completed"
    lengths = _trial_lengths(spec.path)
    if method == "pbt":
        assert lengths == {0: 3, 1: 3, 2: 3, 3: 3}
    else:
        assert max(lengths.values()) == 3  # the longest trial is the given trial length, not the preset's 10


def test_a_task_setting_is_another_problem_instance_in_its_own_folder(tmp_path):
    default = RunSpec("quadratic", "fixed", budget="10ep", out=tmp_path)
    other = RunSpec("quadratic", "fixed", budget="10ep", out=tmp_path, task_args={"data_seed": 3})
    first, second = execute(default, progress=False), execute(other, progress=False)
    assert default.path != other.path and "tiny+" in str(other.path)
    assert first["optimum_val_loss"] != second["optimum_val_loss"]
    meta = json.loads((other.path / "metadata.json").read_text())
    assert meta["task_args"] == {"data_seed": 3} and meta["task_description"]["settings"]["data_seed"] == 3
    assert set(load_runs([tmp_path])["preset"]) == {"tiny", "tiny [data_seed=3]"}


@pytest.mark.parametrize(
    ("task_args", "message"),
    [({"colour": 1}, "task 'quadratic' has no setting 'colour'"), ({"data_seed": "x"}, "data_seed takes a int")],
)
def test_a_bad_task_setting_is_refused(tmp_path, task_args, message):
    with pytest.raises(UserError, match=message):
        execute(RunSpec("quadratic", "random", out=tmp_path, task_args=task_args), progress=False)
    assert not any(tmp_path.rglob("metadata.json"))


def test_every_run_records_its_clock_load_and_both_kinds_of_seconds(tmp_path):
    spec = RunSpec("quadratic", "random", budget="2s", clock="cpu", out=tmp_path)
    summary = execute(spec, progress=False)
    assert spec.path.parent.name == "2s-cpu" and summary["clock"] == "cpu"
    assert summary["cpu_seconds"] == pytest.approx(summary["seconds"], abs=0.05)
    assert summary["wall_seconds"] > 0 and len(summary["load_average_start"]) == 3
    assert len(summary["load_average_end"]) == 3
    meta = json.loads((spec.path / "metadata.json").read_text())
    assert meta["clock"] == "cpu" and meta["budget"]["clock"] == "cpu" and "CPU-seconds" in meta["budget_unit"]
    events = read_events(spec.path)
    assert all("cpu_t" in e and "t" in e for e in events)


def _busy_loops(n):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _cpu_run(out):
    command = [sys.executable, "-m", "hpobench_stn", "run", "--task", "ptb", "--method", "random", "--budget", "8s"]
    command += ["--clock", "cpu", "--threads", "1", "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    return json.loads(next(Path(out).rglob("summary.json")).read_text())


@pytest.mark.slow
def test_a_cpu_time_budget_buys_the_same_work_on_a_busy_machine(tmp_path):
    quiet = _cpu_run(tmp_path / "quiet")
    loops = _busy_loops(os.cpu_count() or 1)  # one busy loop per core competes with the run
    try:
        busy = _cpu_run(tmp_path / "busy")
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert busy["wall_seconds"] > 1.3 * quiet["wall_seconds"]  # the run waited for the CPU...
    assert busy["epochs"] == pytest.approx(quiet["epochs"], rel=0.10)  # ...and trained as much

"""How runs end when something goes wrong: no result, a signal, a refused run; each says what happened."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpobench_stn.errors import UserError
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.store import read_events

ROOT = Path(__file__).resolve().parent.parent


def _start(*args, out):
    command = [sys.executable, "-m", "hpobench_stn", "run", *args, "--out", str(out), "--quiet", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path, event, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and any(e.get("event") == event for e in read_events(path.parent)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {event} event in {path} after {timeout} s")


def test_a_run_that_produced_nothing_says_so_and_is_tried_again(tmp_path):
    spec = RunSpec("quadratic", "random", budget="0.01ep", out=tmp_path)  # less than one minibatch
    summary = execute(spec, progress=False)
    assert summary["status"] == "no_result" and summary["incumbent"] is None
    assert "ended before any trial finished an epoch" in summary["error"] and "larger --budget" in summary["error"]
    assert not (spec.path / "COMPLETE").exists()
    assert execute(spec, progress=False)["status"] == "no_result"  # tried again, not skipped
    starts = [e for e in read_events(spec.path) if e["event"] == "run_start"]
    assert [s["resumed"] for s in starts] == [False, True]  # the second attempt resumed the first's folder


def test_the_command_line_exits_non_zero_when_a_run_produced_nothing(tmp_path):
    run = _start("--task", "quadratic", "--method", "random", "--budget", "0.01ep", out=tmp_path)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1 and "no_result" in out and "larger --budget" in out, out + err


def test_a_run_whose_every_trial_diverged_has_no_result_and_is_final(tmp_path, test_registry):
    args = {"config": {"penalty_0": 2.0}}  # the faulty task diverges for penalty_0 in [1, 3)
    spec = RunSpec("faulty-quadratic", "fixed", budget="30ep", out=tmp_path, method_args=args)
    summary = execute(spec, progress=False)
    assert summary["status"] == "no_result" and "every trial diverged" in summary["error"]
    assert (spec.path / "COMPLETE").exists()  # trying again would diverge again


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_cuts_the_trial_records_the_run_interrupted_and_the_same_command_resumes(tmp_path, sig, code):
    args = ("--task", "quadratic", "--method", "random", "--budget", "1500ep")
    run = _start(*args, out=tmp_path)
    folder = tmp_path / "quadratic" / "tiny" / "random" / "1500ep" / "seed-0"
    _wait_for(folder / "events.jsonl", "trial_end")
    run.send_signal(sig)
    _, err = run.communicate(timeout=120)
    assert run.returncode == code, err
    assert f"interrupted ({signal.Signals(sig).name})" in err and "re-run the same command to resume" in err
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "interrupted" and not (folder / "COMPLETE").exists()
    events = read_events(folder)
    started = [e["trial"] for e in events if e["event"] == "trial_start"]
    ends = [e for e in events if e["event"] == "trial_end"]
    assert [e["trial"] for e in ends] == started  # the trial in progress, if any, was ended: cut
    assert all(e["status"] != "cut" or "interrupted" in e["error"] for e in ends)
    assert events[-1]["event"] == "run_end" and events[-1]["status"] == "interrupted"
    again = _start(*args, out=tmp_path)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    events = read_events(folder)
    finished = [e["trial"] for e in events if e["event"] == "trial_end" and e["status"] != "cut"]
    assert finished == sorted(set(finished))  # every finished trial once, none trained twice
    assert json.loads((folder / "summary.json").read_text())["epochs"] <= 1500


def test_a_signal_during_stn_training_is_recorded_too(tmp_path):
    run = _start("--task", "quadratic", "--method", "stn", "--budget", "5m", out=tmp_path)
    folder = tmp_path / "quadratic" / "tiny" / "stn" / "300s" / "seed-0"
    _wait_for(folder / "events.jsonl", "report")
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=120)
    assert run.returncode == 143
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    assert [e["status"] for e in read_events(folder) if e["event"] == "trial_end"] == ["cut"]


@pytest.mark.parametrize(
    ("task", "method", "extra", "message"),
    [
        ("doorless-quadratic", "stn", [], "has no white-box door"),
        ("doorless-quadratic", "delta-stn", [], "has no white-box door"),
        ("cifar", "random", ["--preset", "cpu"], "CIFAR-10"),  # the data folder below holds no CIFAR-10
    ],
)
def test_a_refused_run_leaves_no_folder(tmp_path, test_registry, task, method, extra, message):
    empty = tmp_path / "empty-data"
    empty.mkdir()
    spec = RunSpec(task, method, out=tmp_path / "out", data_dir=str(empty), preset=(extra or ["", "tiny"])[1])
    with pytest.raises(UserError, match=message):
        execute(spec, progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_a_replay_of_another_tasks_schedule_is_refused_before_its_folder_exists(tmp_path):
    source = RunSpec("quadratic", "stn", budget="60ep", out=tmp_path / "src")
    execute(source, progress=False)
    args = {"schedule": str(source.path)}
    spec = RunSpec("quadratic", "replay", preset="cpu", out=tmp_path / "out", method_args=args)
    with pytest.raises(UserError, match="replay it on that task and preset"):
        execute(spec, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_replay_on_another_instance_of_the_task_is_refused(tmp_path):
    source = RunSpec("quadratic", "stn", budget="60ep", out=tmp_path / "src", task_args={"data_seed": 2})
    execute(source, progress=False)
    spec = RunSpec("quadratic", "replay", out=tmp_path / "out", method_args={"schedule": str(source.path)})
    with pytest.raises(UserError, match=r"another instance of the task \(data_seed=2\); replay it with --task-arg"):
        execute(spec, progress=False)
    spec.task_args = {"data_seed": 2}
    assert execute(spec, progress=False)["status"] == "completed"

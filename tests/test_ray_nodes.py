"""A Ray cluster of two nodes on this machine (a head and a second ``ray start --address`` node, both on 127.0.0.1)
that loses a node mid-sweep: the runs the lost node was running are retried on the head, resumed from their event
logs and completed, with nothing duplicated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpobench_stn.ray_cluster import LOOPBACK, _running, _session_of
from hpobench_stn.store import COMPLETE, find_runs, read_events

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _parent(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _run_log(pid):
    """The run event log a sweep worker has open, or None."""
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.endswith("events.jsonl"):
                return Path(target)
    except OSError:
        pass
    return None


def _sweep_workers(raylet):
    """``{pid: run event log}`` of the sweep workers the raylet ``raylet`` (a node) runs."""
    workers = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent(int(entry.name)) == raylet:
            log = _run_log(int(entry.name)) if _cmdline(int(entry.name)).startswith("ray::execute_brief") else None
            if log is not None:
                workers[int(entry.name)] = log
    return workers


def _session(sid):
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _session_of(int(p.name)) == sid]


@pytest.fixture
def two_nodes():
    """A head with one CPU and a second node with one CPU (so two runs at a time go one to each node), in a session
    of their own; stopped through the helper, then by that session id, and checked gone."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(TESTS)))}
    helper = subprocess.Popen(
        [sys.executable, str(TESTS / "two_node_cluster.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        cluster = json.loads(helper.stdout.readline())
        cluster["helper"] = helper
        yield cluster
    finally:
        pids = _session(helper.pid)
        if helper.poll() is None:
            helper.communicate("stop\n", timeout=60)
        for pid in _session(helper.pid):
            os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while time.time() < deadline and any(_running(p) for p in pids):
            time.sleep(0.1)
        assert not [p for p in pids if _running(p)], "processes of the cluster outlived its shutdown"


def _listeners(pids):
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split()[3] for line in lines if any(f"pid={pid}," in line for pid in pids)]


@pytest.mark.slow
def test_runs_of_a_lost_node_are_retried_on_the_other_resumed_and_completed(tmp_path, two_nodes):
    command = [sys.executable, "-m", "hpobench_stn", "sweep", "--tasks", "quadratic", "--methods", "random"]
    command += ["--seeds", "0,1,2", "--budget", "3000ep", "--out", str(tmp_path), "--quiet"]
    command += ["--ray-address", two_nodes["address"], "--cpus-per-run", "1", "--max-retries", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sweep = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lost, on_head = None, set()
    deadline = time.time() + 120
    while lost is None and time.time() < deadline and sweep.poll() is None:
        on_head |= set(_sweep_workers(two_nodes["head_raylet"]).values())
        for log in _sweep_workers(two_nodes["node_raylet"]).values():
            if log.read_text().count('"trial_end"') >= 3:
                lost = log.parent
        time.sleep(0.05)
    assert lost is not None, "no run was seen going on the second node"
    listeners = _listeners(_session(two_nodes["helper"].pid))
    assert listeners and all(a.rsplit(":", 1)[0] in (LOOPBACK, f"[::ffff:{LOOPBACK}]") for a in listeners), listeners
    two_nodes["helper"].stdin.write("kill-node\n")
    two_nodes["helper"].stdin.flush()
    assert two_nodes["helper"].stdout.readline().strip() == "killed"
    deadline = time.time() + 300
    while sweep.poll() is None and time.time() < deadline:  # a loaded machine may start the head's runs late
        on_head |= set(_sweep_workers(two_nodes["head_raylet"]).values())
        time.sleep(0.05)
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err
    assert [v["status"] for v in json.loads(out).values()] == ["completed"] * 3, out
    assert on_head - {lost / "events.jsonl"}, "the head ran none of the other runs: they were not spread"
    runs = list(find_runs([tmp_path], complete_only=False))
    assert len(runs) == 3
    for run in runs:
        assert (run / COMPLETE).exists() and not (run / "LOCK").exists()
        events = read_events(run)
        kinds = [e["event"] for e in events]
        ends = [e["trial"] for e in events if e["event"] == "trial_end"]
        assert len(ends) == len(set(ends)), f"a trial of {run} ended twice"
        assert kinds.count("run_end") == 1 and kinds[-1] == "run_end"
        assert json.loads((run / "summary.json").read_text())["epochs"] == 3000
        starts = [i for i, kind in enumerate(kinds) if kind == "run_start"]
        if run == lost:
            assert len(starts) == 2, "the lost node's run was not retried"
            assert events[starts[1]]["resumed"] and events[starts[1]]["replayed_trials"] >= 3  # resumed
            assert kinds.index("run_end") > starts[1]
        else:
            assert len(starts) == 1, f"{run} ran twice"

"""One writer per run folder: of two runs started at once one writes and the other exits naming it; a dead or
stale holder's lock is taken over; a live one's is respected; the lock goes when its holder ends."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.lock import LOCK, RunHeldError, RunLock
from hpobench_stn.store import read_events

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "hpobench_stn", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _plant(folder, **holder):
    """A lock file as another process would have left it."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2025-01-01T00:00:00+0000", **holder}
    (folder / LOCK).write_text(json.dumps(record))
    return folder / LOCK


def test_two_runs_started_at_once_one_writes_the_other_names_it(tmp_path):
    args = ["run", "--task", "quadratic", "--method", "random", "--budget", "6s", "--quiet", "--out", str(tmp_path)]
    first, second = _cli(*args), _cli(*args)
    results = {p.pid: (p, *p.communicate(timeout=300)) for p in (first, second)}
    codes = sorted(p.returncode for p, _, _ in results.values())
    assert codes == [0, 2], [err for _, _, err in results.values()]
    (winner,) = [pid for pid, (p, _, _) in results.items() if p.returncode == 0]
    (loser_err,) = [err for p, _, err in results.values() if p.returncode == 2]
    lines = loser_err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run folder "), loser_err
    assert f"host {socket.gethostname()}, PID {winner}" in lines[0] and "wait for it to finish" in lines[0]
    run = RunSpec("quadratic", "random", budget="6s", out=tmp_path).path
    events = [e["event"] for e in read_events(run)]
    assert events.count("run_start") == 1 and events.count("run_end") == 1
    assert {p.name for p in run.iterdir()} == {"metadata.json", "events.jsonl", "summary.json", "COMPLETE"}


def test_a_lock_whose_holder_died_is_taken_over_and_released(tmp_path):
    spec = RunSpec("quadratic", "random", budget="5ep", out=tmp_path)
    _plant(spec.path, pid=_dead_pid())
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed"
    assert not (spec.path / LOCK).exists(), "the run took the dead holder's lock and released it at the end"
    assert [e["event"] for e in read_events(spec.path)].count("run_start") == 1


def test_a_live_holder_is_respected_before_anything_is_written(tmp_path):
    run = RunSpec("quadratic", "random", budget="5ep", out=tmp_path).path
    _plant(run)  # this test process holds it
    proc = _cli("run", "--task", "quadratic", "--method", "random", "--budget", "5ep", "--out", str(tmp_path))
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and f"PID {os.getpid()}" in line and str(run / LOCK) in line
    assert [p.name for p in run.iterdir()] == [LOCK]


@pytest.mark.parametrize(
    ("holder", "age", "taken"),
    [
        ({"pid": os.getpid()}, 0, False),  # alive, this host
        ({"pid": os.getpid(), "pid_start": 1}, 0, True),  # the PID is another process now
        ({"pid": os.getpid(), "boot_id": "an-earlier-boot"}, 0, True),  # the host rebooted since
        ({"host": "elsewhere", "pid": 1}, 60, False),  # another host, touched a minute ago
        ({"host": "elsewhere", "pid": 1}, 3600, True),  # another host, stale
        ({"pid": os.getpid()}, 3600, True),  # stale even when alive: its refresher stopped (suspended)
    ],
)
def test_when_a_lock_is_taken_over(tmp_path, holder, age, taken):
    boot = Path("/proc/sys/kernel/random/boot_id")
    if "boot_id" in holder and not boot.exists():
        pytest.skip("no boot id on this system")
    lock_file = _plant(tmp_path, **holder)
    planted = lock_file.read_text()
    old = time.time() - age
    os.utime(lock_file, (old, old))
    if taken:
        with RunLock(tmp_path) as lock:
            assert lock.previous["pid"] == holder["pid"] and lock.previous["taken_over_because"]
            assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        assert not lock_file.exists()
    else:
        with pytest.raises(RunHeldError, match=f"PID {holder['pid']}"):
            RunLock(tmp_path).acquire()
        assert lock_file.read_text() == planted


RACE = textwrap.dedent(
    """
    import sys, time
    from hpobench_stn.lock import RunHeldError, RunLock
    start = float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))
    try:
        with RunLock(sys.argv[1]):
            print("won", flush=True)
            time.sleep(2.0)
    except RunHeldError:
        print("held", flush=True)
    """
)


@pytest.mark.parametrize("planted", ["free", "dead holder"])
def test_of_processes_starting_at_once_exactly_one_takes_the_lock(tmp_path, planted):
    if planted == "dead holder":
        _plant(tmp_path, pid=_dead_pid())
    start = time.time() + 2.0
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(tmp_path), str(start)], stdout=subprocess.PIPE, text=True, env=ENV
        )
        for _ in range(6)
    ]
    said = sorted(p.communicate(timeout=120)[0].strip() for p in racers)
    assert said == ["held"] * 5 + ["won"], said
    assert not (tmp_path / LOCK).exists() and not (tmp_path / f"{LOCK}.break").exists()


def test_sigterm_releases_the_lock(tmp_path):
    code = f"from hpobench_stn.lock import RunLock\nimport time\nwith RunLock({str(tmp_path)!r}):\n"
    code += "    print('locked', flush=True)\n    time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # it still dies of the signal
    assert not (tmp_path / LOCK).exists()


def test_the_holder_keeps_its_lock_fresh_and_notices_when_it_is_taken(tmp_path, capsys):
    with RunLock(tmp_path, refresh=0.05) as lock:
        old = time.time() - 1000
        os.utime(tmp_path / LOCK, (old, old))
        time.sleep(0.5)
        assert time.time() - (tmp_path / LOCK).stat().st_mtime < 5
        (tmp_path / LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 1}))  # someone broke it
        time.sleep(0.5)
        assert lock.lost
    assert "was taken over by another process" in capsys.readouterr().err
    assert json.loads((tmp_path / LOCK).read_text())["host"] == "elsewhere", "not ours, so not removed"


def test_a_lock_on_a_new_folder_leaves_no_empty_folder_when_nothing_was_written(tmp_path):
    with RunLock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK).exists()
    assert not (tmp_path / "run").exists()

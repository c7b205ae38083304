"""Threads: a run's default never takes cores others are using or it may not run on, the thread pools wait
passively, and the choice is recorded."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpobench_stn.threads import allowed_cpus, choose_threads, physical_cores

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
RUN = ["run", "--task", "quadratic", "--method", "random"]
CORES = physical_cores(allowed_cpus())


def _busy_loops(count):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def _stop(procs):
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(CORES < 2, reason="needs at least two cores to tell one thread from the default")
def test_a_run_on_busy_cores_gets_one_thread_and_records_why(tmp_path):
    loops = _busy_loops(CORES)
    try:
        time.sleep(0.5)
        result = subprocess.run(
            [sys.executable, "-m", "hpobench_stn", *RUN, "--budget", "2ep", "--quiet", "--out", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
    finally:
        _stop(loops)
    assert result.returncode == 0, result.stderr
    (meta_file,) = tmp_path.rglob("metadata.json")
    meta = json.loads(meta_file.read_text())
    assert meta["device"]["torch_threads"] == 1
    threads = meta["threads"]
    assert threads["count"] == 1 and threads["source"] == "load", threads
    assert threads["limits"]["affinity"] == CORES and threads["load"]["others"] >= CORES - 0.5
    pools = threads["pools"]
    assert pools["OMP_WAIT_POLICY"] == "PASSIVE" and pools["set_before_torch"], pools


def test_cpu_affinity_limits_the_default():
    code = f"import os; os.sched_setaffinity(0, {{{min(allowed_cpus())}}})\n"  # as taskset -c would
    code += "from hpobench_stn.threads import configure_threads; import torch; c = configure_threads()\n"
    code += "print(c.count, c.limits['affinity'], torch.get_num_threads())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1", "1"]


def test_threads_option_overrides_the_default():
    choice = choose_threads(3)
    assert (choice.count, choice.source) == (3, "user")

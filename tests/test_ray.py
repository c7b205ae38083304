"""Ray: the Ray Tune methods (asha, hyperband, pbt) and sweeps on a real local Ray cluster.

One embedded Ray serves the Ray Tune tests and one ``ray start --head`` on 127.0.0.1 serves the cluster tests (both
module-scoped: Ray's start-up is slow). Teardown stops exactly the processes they started (the embedded Ray through
``ray.shutdown``, the head by its session id), and checks that none is left.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from baselines.ray_trainable import Ledger, resume_trial
from baselines.ray_tune import PBT, clip_to_space, ray_search_space
from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.cli import main
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.lock import LOCK, RunLock
from hpobench_stn.ray_cluster import LOOPBACK, LocalHead, _running, free_port, init_ray, shutdown_ray
from hpobench_stn.space import Float, Integer, Rate, SearchSpace
from hpobench_stn.store import MEASURED_FIELDS, find_runs, read_events
from tasks.quadratic.task import QuadraticTask

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
SPACE = SearchSpace([Float("lr", 1e-4, 1.0, log=True), Float("wd", 0.0, 0.1), Rate("dropout"), Integer("holes", 0, 4)])


def _descendants(pid):
    """Every process below ``pid`` (read from /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _listeners(pids):
    """The local addresses that processes among ``pids`` listen on (from ``ss -ltnp``)."""
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    found = []
    for line in lines:
        if any(f"pid={pid}," in line for pid in pids):
            found.append(line.split()[3])
    return found


def _on_loopback(address):
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in (LOOPBACK, f"::ffff:{LOOPBACK}")


def _open_event_log(pid):
    """The run event log a process has open (a sweep worker writing its run), or None."""
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.endswith("events.jsonl"):
                return Path(target)
    except OSError:
        pass
    return None


def _busy_worker(head, min_trials=3):
    """A sweep worker of ``head`` whose run has finished at least ``min_trials`` trials, with that run's log."""
    for pid in head.pids():
        if _cmdline(pid).startswith("ray::execute_brief"):
            log = _open_event_log(pid)
            if log is not None and log.read_text().count('"trial_end"') >= min_trials:
                return pid, log
    return None, None


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


# --- no Ray needed ---------------------------------------------------------------------------------------------
def test_ray_search_space_comes_from_the_space():
    from ray.tune.search.sample import Float as RayFloat
    from ray.tune.search.sample import Integer as RayInteger

    domains = ray_search_space(SPACE)
    assert isinstance(domains["lr"], RayFloat) and (domains["lr"].lower, domains["lr"].upper) == (1e-4, 1.0)
    assert type(domains["lr"].get_sampler()).__name__ == "_LogUniform"
    assert type(domains["wd"].get_sampler()).__name__ == "_Uniform" and domains["dropout"].upper == 0.9
    assert isinstance(domains["holes"], RayInteger) and (domains["holes"].lower, domains["holes"].upper) == (0, 5)
    samples = [domains["holes"].sample() for _ in range(200)]
    assert set(samples) == {0, 1, 2, 3, 4}


def test_clip_to_space_keeps_pbt_perturbations_inside():
    clipped = clip_to_space(SPACE, {"lr": 1.2, "wd": -0.01, "dropout": 0.5, "holes": 5, "_seed": 7})
    assert clipped == {"lr": 1.0, "wd": 0.0, "dropout": 0.5, "holes": 4, "_seed": 7}


@pytest.mark.parametrize(
    ("budget", "args", "population", "member_epochs"),
    [
        (Budget(epochs=100), {}, 5, 20),  # as many trial-length members as the budget pays for
        (Budget(epochs=30), {}, 2, 20),  # at least two
        (Budget(epochs=400), {}, 20, 20),
        (Budget(epochs=2000), {}, 32, 62),  # the cap binds: members train longer, so the budget is spent
        (Budget(seconds=600), {}, 4, PBT.UNTIL_BUDGET_ENDS),  # wall-clock: a population that trains to the end
        (Budget(seconds=600, epochs=100), {}, 5, 20),
        (Budget(epochs=100), {"population": 2}, 2, 50),
        (Budget(seconds=600), {"population": 8, "member_epochs": 30}, 8, 30),
    ],
)
def test_pbt_population_fills_the_budget(budget, args, population, member_epochs):
    pbt = PBT(SPACE, seed=0, max_epochs=20, **args)
    ctx = SimpleNamespace(meter=BudgetMeter(budget, train_size=100))
    assert (pbt.num_samples(ctx), pbt.trial_length(ctx)) == (population, member_epochs)


def test_ledger_never_grants_more_than_the_budget():
    ledger = Ledger(examples_left=500, deadline=time.time() + 60)
    assert ledger.grant("a", 200)[0] == 200 and ledger.grant("b", 200)[0] == 200
    ledger.refund("a", 0)
    assert ledger.state()["outstanding"] == 400  # a's report is on its way to the driver
    ledger.confirm("a", 200)
    ledger.refund("b", 10)  # b's epoch needed 190
    ledger.confirm("b", 190)
    assert ledger.grant("a", 200)[0] == 110  # only 110 left
    ledger.cut("a", 110, 96)  # cut mid-epoch: 96 spent, never reported; the ledger closes
    assert ledger.grant("b", 200)[0] == 0
    state = ledger.state() | {"seconds": 0}
    assert state == {"left": 0, "outstanding": 0, "unreported": 96, "unreported_cpu": 0.0, "seconds": 0}
    late = Ledger(examples_left=math.inf, deadline=time.time() - 1)
    assert late.grant("a", 200)[0] == 0  # wall-clock spent
    cpu = Ledger(examples_left=math.inf, deadline=math.inf, cpu_seconds_left=5.0)
    assert cpu.grant("a", 200) == (200, 5.0, "cpu")  # a CPU-time budget: the worker meters its own CPU
    cpu.set_cpu_left(0.0)  # the driver's CPU meter says the budget is spent
    assert cpu.grant("a", 200)[0] == 0


def test_meter_record_counts_without_raising():
    meter = BudgetMeter(Budget(epochs=1), train_size=100)
    meter.record(80)
    meter.record(40)  # reported by a remote trial; the ledger kept it within budget, the meter just counts
    assert meter.examples == 120 and meter.exhausted


def test_resumed_trial_trains_with_its_own_configuration():
    """PBT's exploit: the state comes from the donor, the hyperparameters from the exploiting trial."""
    task = QuadraticTask("tiny")
    donor_config = {name: 0.01 for name in task.space.names}
    new_config = {name: 2.0 for name in task.space.names}
    donor = task.make_trial(donor_config, seed=5)
    meter = BudgetMeter(Budget(epochs=100), task.train_size)
    for _ in range(3):
        donor.train_epoch(meter)
    saved = {"state": donor.state_dict(), "trial": "donor"}
    exploited = resume_trial(task, new_config, 123, saved)
    assert exploited.config == new_config and exploited.epoch == 3
    reference = task.make_trial(donor_config, seed=5)
    reference.load_state_dict(saved["state"])
    reference.config = dict(new_config)
    same_as_donor = task.make_trial(donor_config, seed=5)
    same_as_donor.load_state_dict(saved["state"])
    got = exploited.train_epoch(meter).val_loss
    assert got == reference.train_epoch(meter).val_loss
    assert got != same_as_donor.train_epoch(meter).val_loss


@pytest.mark.slow
def test_sweep_without_ray_address_never_imports_ray(tmp_path):
    code = (
        "import sys; from hpobench_stn.cli import main; "
        f"rc = main(['sweep', '--tasks', 'quadratic', '--methods', 'random', '--budget', '10ep', '--quiet', "
        f"'--out', {str(tmp_path)!r}]); "
        "assert rc == 0; assert 'ray' not in sys.modules, 'ray was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cpus-per-run", "2"], "--cpus-per-run only applies with --ray-address"),
        (["--ray-address", "local", "--cpus-per-run", "0"], "--cpus-per-run must be positive"),
        (["--ray-address", "local", "--gpus-per-run", "-1"], "--gpus-per-run cannot be negative"),
        (["--ray-address", "local", "--max-retries", "-1"], "--max-retries cannot be negative"),
        (["--ray-address", f"127.0.0.1:{free_port()}"], "cannot reach a Ray head at 127.0.0.1:"),
    ],
)
def test_bad_ray_options_give_one_clear_line(tmp_path, capsys, args, message):
    rc = main(["sweep", "--tasks", "quadratic", "--methods", "random", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]


# --- Ray Tune methods on an embedded Ray -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded_ray():
    """One embedded Ray (2 CPUs) for the module; workers can import the test-only tasks."""
    import ray  # noqa: F401  (imported before init_ray on purpose: it must still keep Ray on 127.0.0.1)

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(ROOT), old) if p)
    assert init_ray("local", num_cpus=2)
    from ray._raylet import AuthenticationMode, get_authentication_mode

    assert get_authentication_mode() == AuthenticationMode.TOKEN
    pids = _descendants(os.getpid())
    yield pids
    shutdown_ray()
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old
    deadline = time.time() + 30
    while time.time() < deadline and any(_running(p) for p in pids):
        time.sleep(0.2)
    assert not [p for p in pids if _running(p)], "processes of the embedded Ray outlived ray.shutdown()"


def _check_run(path, summary, budget_epochs):
    events = read_events(path)
    starts = [e["trial"] for e in events if e["event"] == "trial_start"]
    ends = [e["trial"] for e in events if e["event"] == "trial_end"]
    reports = [e for e in events if e["event"] == "report"]
    assert starts == list(range(len(starts))) and sorted(ends) == starts  # int ids, each started and ended once
    assert summary["status"] == "completed" and summary["epochs"] <= budget_epochs
    assert all(e["epochs"] <= budget_epochs for e in events)
    stamps = [e["examples"] for e in events]
    assert stamps == sorted(stamps)
    assert {p.name for p in path.iterdir()} == {"metadata.json", "events.jsonl", "summary.json", "COMPLETE"}
    inc = summary["incumbent"]
    assert inc["val_loss"] == min(e["val_loss"] for e in reports if e["val_loss"] is not None)
    assert inc["test_metrics"] and summary["regret"] >= -1e-9
    return events


@pytest.mark.slow
@pytest.mark.parametrize(("method", "epochs"), [("asha", 40), ("hyperband", 80)])
def test_multi_fidelity_methods_spend_exactly_the_budget(tmp_path, embedded_ray, method, epochs):
    spec = RunSpec("quadratic", method, seed=1, budget=f"{epochs}ep", out=tmp_path)
    summary = execute(spec, progress=False)
    events = _check_run(spec.path, summary, epochs)
    assert summary["epochs"] == epochs and sum(e["event"] == "report" for e in events) == epochs  # whole epochs
    assert summary["trials_by_status"].get("stopped", 0) >= 1, summary  # the scheduler stopped trials early
    if method == "hyperband":  # it pauses trials at its rungs and resumes the best from their checkpoints
        resumed = [e for e in events if e["event"] == "trial_resumed"]
        assert resumed and all(e["epoch"] > 1 for e in resumed)
    assert not [e for e in events if e["event"] == "restart_without_checkpoint"]
    assert _listeners(embedded_ray) and all(_on_loopback(a) for a in _listeners(embedded_ray))


@pytest.mark.slow
def test_pbt_exploits_and_trains_with_the_perturbed_configuration(tmp_path, embedded_ray):
    args = {"population": 4, "perturbation_interval": 2}
    spec = RunSpec("quadratic", "pbt", seed=0, budget="40ep", out=tmp_path, method_args=args)
    summary = execute(spec, progress=False)
    events = _check_run(spec.path, summary, 40)
    assert summary["trials"] == 4 and summary["epochs"] == 40
    reports = [e for e in events if e["event"] == "report"]
    assert all(e["hparams"] == e["config"] for e in reports)  # the schedule, as STN's
    exploits = [e for e in events if e["event"] == "exploit"]
    assert exploits, "PBT never exploited"
    assert not [e for e in events if e["event"] == "restart_without_checkpoint"]
    space = QuadraticTask("tiny").space
    perturbed = resampled = 0
    for index, ex in enumerate(events):
        if ex["event"] != "exploit":
            continue
        before = [e for e in events[:index] if e["event"] == "report" and e["trial"] == ex["donor"]]
        assert before, "exploited a trial that had no report, so no checkpoint"
        donor_config = before[-1]["config"]
        after = next(e for e in events[index:] if e["event"] == "report" and e["trial"] == ex["trial"])
        assert after["config"] == ex["config"] != donor_config  # trained with the perturbed values
        assert after["epoch"] > 1 and after["epoch"] - 1 in {e["epoch"] for e in before}  # from a donor checkpoint
        space.validate(after["config"])
        for name, value in after["config"].items():
            hp = space[name]
            factors = [min(max(donor_config[name] * f, hp.low), hp.high) for f in (0.8, 1.2)]
            if any(math.isclose(value, f, rel_tol=1e-12) for f in factors):
                perturbed += 1
            else:
                resampled += 1
    assert perturbed > resampled  # PBT's explore: x0.8 or x1.2, resampling with probability 0.25


@pytest.mark.slow
def test_pbt_members_train_until_a_wall_clock_budget_ends(tmp_path, embedded_ray):
    # no perturbation within the run: Tune's pause and restore at each one would make the epoch count timing-bound
    args = {"population": 2, "perturbation_interval": 10**6}
    spec = RunSpec("quadratic", "pbt", seed=0, budget="15s", out=tmp_path, method_args=args)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed" and summary["stop_reason"] == "budget", summary
    assert summary["seconds"] >= 15 and summary["trials"] == 2
    reports = [e for e in read_events(spec.path) if e["event"] == "report"]
    assert max(e["epoch"] for e in reports) > 2 * QuadraticTask("tiny").max_epochs  # well past one trial's length
    assert summary["trials_by_status"] == {"cut": 2}, summary


@pytest.mark.slow
def test_failing_and_diverging_trials_are_recorded(tmp_path, embedded_ray, test_registry):
    spec = RunSpec("faulty-quadratic", "asha", seed=10, budget="40ep", out=tmp_path)  # seed: early faulty trials
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed" and summary["epochs"] <= 40
    statuses = summary["trials_by_status"]
    assert statuses.get("failed", 0) >= 1 and statuses.get("diverged", 0) >= 1, statuses
    failed = [e for e in read_events(spec.path) if e["event"] == "trial_end" and e["status"] == "failed"]
    assert all("simulated crash inside a trial" in e["error"] for e in failed)
    assert summary["incumbent"]["config"]["penalty_0"] < 1.0


# --- sweeps on a real Ray head ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def head():
    """A Ray head on 127.0.0.1 on a free port (``ray start --head --block``), stopped by its session id."""
    cluster = LocalHead(num_cpus=2, env={**os.environ, "PYTHONPATH": str(ROOT)})
    cluster.start()
    yield cluster
    pids = cluster.pids()
    cluster.stop()
    time.sleep(0.5)
    assert not [p for p in pids if _running(p)], "processes of the head outlived its stop()"
    assert not cluster.pids()


def _sweep(out, *extra, budget="30ep", methods="random,tpe", seeds="0,1"):
    command = [sys.executable, "-m", "hpobench_stn", "sweep", "--tasks", "quadratic", "--methods", methods]
    command += ["--seeds", seeds, "--budget", budget, "--out", str(out), "--quiet", *extra]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _without_timing(events):
    return [{k: v for k, v in e.items() if k not in MEASURED_FIELDS} for e in events]


@pytest.mark.slow
def test_sweep_on_a_ray_cluster_matches_a_local_sweep(tmp_path, head):
    local = _sweep(tmp_path / "local")
    out, err = local.communicate(timeout=300)
    assert local.returncode == 0, err
    cluster = _sweep(tmp_path / "cluster", "--ray-address", head.address, "--cpus-per-run", "1")
    out, err = cluster.communicate(timeout=300)
    assert cluster.returncode == 0, err
    assert [v["status"] for v in json.loads(out).values()] == ["completed"] * 4
    local_runs = {p.relative_to(tmp_path / "local") for p in find_runs([tmp_path / "local"])}
    cluster_runs = {p.relative_to(tmp_path / "cluster") for p in find_runs([tmp_path / "cluster"])}
    assert local_runs == cluster_runs and len(cluster_runs) == 4
    for rel in cluster_runs:
        a, b = tmp_path / "local" / rel, tmp_path / "cluster" / rel
        assert {p.name for p in a.iterdir()} == {p.name for p in b.iterdir()}
        assert _without_timing(read_events(a)) == _without_timing(read_events(b))  # same numbers, same seeds
        meta_a, meta_b = (json.loads((p / "metadata.json").read_text()) for p in (a, b))
        assert meta_a.keys() == meta_b.keys() and meta_a["method_settings"] == meta_b["method_settings"]
    again = _sweep(tmp_path / "cluster", "--ray-address", head.address)
    out, err = again.communicate(timeout=300)
    assert all(v["status"] == "skipped" for v in json.loads(out).values()), err
    listeners = _listeners(head.pids())
    assert listeners and all(_on_loopback(a) for a in listeners), listeners


@pytest.mark.slow
def test_a_killed_sweep_worker_is_retried_and_its_run_completes(tmp_path, head):
    sweep = _sweep(tmp_path, "--ray-address", head.address, budget="1500ep", methods="random", seeds="0,1")
    victim, log = None, None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and sweep.poll() is None:
        victim, log = _busy_worker(head)
        time.sleep(0.05)
    assert victim is not None, "no sweep worker was seen running"
    os.kill(victim, signal.SIGKILL)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err
    assert [v["status"] for v in json.loads(out).values()] == ["completed", "completed"]
    resumed = []
    for run in find_runs([tmp_path]):
        events = read_events(run)
        starts = [e for e in events if e["event"] == "run_start"]
        if len(starts) == 2:
            resumed.append(run)
            assert starts[1]["resumed"] and starts[1]["replayed_trials"] >= 3
        ends = [e["trial"] for e in events if e["event"] == "trial_end"]
        assert len(ends) == len(set(ends)), "a trial was counted twice"
        assert json.loads((run / "summary.json").read_text())["epochs"] == 1500
    assert resumed == [log.parent], "exactly the killed run is retried"
    assert "will be retried" in err


@pytest.mark.slow
def test_a_run_whose_worker_keeps_dying_is_recorded_failed_and_a_rerun_finishes_it(tmp_path, head):
    options = {"budget": "1500ep", "methods": "random", "seeds": "0"}
    sweep = _sweep(tmp_path, "--ray-address", head.address, "--max-retries", "0", **options)
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and sweep.poll() is None:
        victim, _ = _busy_worker(head)
        time.sleep(0.05)
    assert victim is not None, "no sweep worker was seen running"
    os.kill(victim, signal.SIGKILL)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 1
    (result,) = json.loads(out).values()
    assert result["status"] == "failed" and "worker died 1 times" in result["error"]
    (run,) = find_runs([tmp_path], complete_only=False)
    assert read_events(run)[-1]["event"] == "run_failed" and not (run / "COMPLETE").exists()
    again = _sweep(tmp_path, "--ray-address", head.address, **options)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert [v["status"] for v in json.loads(out).values()] == ["completed"]


@pytest.mark.slow
def test_ray_tune_methods_run_inside_a_cluster_sweep(tmp_path, head):
    """Runs of a sweep share one Ray job: each Ray Tune experiment keeps its own trainable, ledger and budget."""
    sweep = _sweep(tmp_path, "--ray-address", head.address, budget="20ep", methods="asha,pbt", seeds="0")
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err
    assert [v["status"] for v in json.loads(out).values()] == ["completed", "completed"]
    for run in find_runs([tmp_path]):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["epochs"] == 20 and "failed" not in summary["trials_by_status"], summary
        assert {p.name for p in run.iterdir()} == {"metadata.json", "events.jsonl", "summary.json", "COMPLETE"}


@pytest.mark.slow
def test_a_cluster_sweep_leaves_a_held_run_alone_and_sizes_threads_by_ray(tmp_path, head):
    held = RunSpec("quadratic", "random", seed=1, budget="20ep", out=tmp_path).path
    with RunLock(held):  # this test process writes seed 1; the worker that gets it must leave it
        sweep = _sweep(tmp_path, "--ray-address", head.address, budget="20ep", methods="random", seeds="0,1")
        out, err = sweep.communicate(timeout=300)
        assert [p.name for p in held.iterdir()] == [LOCK]
    assert sweep.returncode == 1, err
    results = json.loads(out)
    assert results[str(held)]["status"] == "held", results
    assert f"PID {os.getpid()}" in results[str(held)]["holder"]
    (done,) = find_runs([tmp_path])
    threads = json.loads((done / "metadata.json").read_text())["threads"]
    assert threads["limits"]["ray"] == 1 and threads["count"] == 1, threads  # --cpus-per-run 1
    assert threads["pools"]["set_before_torch"], "the worker imported torch before OpenMP was told to wait passively"

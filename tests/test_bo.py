"""Bayesian optimisation baselines: Optuna (tpe, gp, cmaes) and scikit-optimize (skopt-gp, skopt-forest)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState
from skopt.space import Integer as SkInteger
from skopt.space import Real

from baselines.optuna_search import TRIAL_ATTR, optuna_distributions
from baselines.skopt_search import skopt_dimensions
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.optimizer import Outcome
from hpobench_stn.registry import get_method
from hpobench_stn.space import Float, Integer, Rate, SearchSpace
from hpobench_stn.store import read_events

ROOT = Path(__file__).resolve().parent.parent
SPACE = SearchSpace([Float("lr", 1e-4, 1.0, log=True), Float("wd", 0.0, 0.1), Rate("dropout"), Integer("holes", 0, 4)])
OPTIMUM = {"lr": 1e-2, "wd": 0.03, "dropout": 0.3, "holes": 1}
BO = ["tpe", "gp", "cmaes", "skopt-gp", "skopt-forest"]


def _objective(config):
    """A smooth bowl with its minimum at OPTIMUM (log scale for lr)."""
    return (
        (math.log10(config["lr"]) - math.log10(OPTIMUM["lr"])) ** 2 / 16
        + ((config["wd"] - OPTIMUM["wd"]) / 0.1) ** 2
        + ((config["dropout"] - OPTIMUM["dropout"]) / 0.9) ** 2
        + 0.05 * abs(config["holes"] - OPTIMUM["holes"])
    )


def _drive(opt, n):
    values = []
    for trial_id in range(n):
        config = opt.ask(trial_id)
        SPACE.validate(config)
        values.append(_objective(config))
        opt.tell(trial_id, config, Outcome(values[-1], "completed", 5))
    return values


def test_optuna_distributions_come_from_the_space():
    dists = optuna_distributions(SPACE)
    assert dists["lr"] == FloatDistribution(1e-4, 1.0, log=True)
    assert dists["wd"] == FloatDistribution(0.0, 0.1)
    assert dists["dropout"] == FloatDistribution(0.0, 0.9)
    assert dists["holes"] == IntDistribution(0, 4)


def test_skopt_dimensions_come_from_the_space():
    lr, wd, dropout, holes = skopt_dimensions(SPACE)
    assert isinstance(lr, Real) and lr.prior == "log-uniform" and (lr.low, lr.high) == (1e-4, 1.0)
    assert isinstance(wd, Real) and wd.prior == "uniform" and (wd.low, wd.high) == (0.0, 0.1)
    assert (dropout.low, dropout.high) == (0.0, 0.9)
    assert isinstance(holes, SkInteger) and (holes.low, holes.high) == (0, 4)
    assert [d.name for d in (lr, wd, dropout, holes)] == SPACE.names


@pytest.mark.parametrize(
    "name",
    [
        "tpe",
        "cmaes",
        "skopt-forest",
        pytest.param("gp", marks=pytest.mark.slow),
        pytest.param("skopt-gp", marks=pytest.mark.slow),
    ],
)
def test_seeds_differ_and_proposals_learn(name):
    """Different seeds propose differently, and after the random start the proposals move towards the optimum
    (they would not if ``tell`` were ignored). A purely random start: SPACE's initial configuration lies near the
    optimum (its lr is the optimal one), which would make the start's best hard to beat within these few trials."""
    cls = get_method(name)
    kw = {"n_initial_points": 5} if name.startswith("skopt") else {"n_startup_trials": 5}
    if name == "cmaes":
        kw = {"n_startup_trials": 1, "popsize": 6}
    kw["start_at_default"] = False
    n = 30 if name in ("tpe", "cmaes") else 14
    first = _drive(cls(SPACE, 1, 5, **kw), n)
    assert first != _drive(cls(SPACE, 2, 5, **kw), n)
    start, end = first[:5], first[-5:]
    assert min(end) < min(start) and sum(end) / 5 < sum(start) / 5


def test_optuna_tells_failures_as_fail_and_skips_cut_trials():
    opt = get_method("tpe")(SPACE, 0, 5)
    for trial_id, outcome in enumerate(
        [
            Outcome(0.5, "completed", 5),
            Outcome(None, "failed", 1),
            Outcome(None, "diverged", 2),
            Outcome(None, "cut", 1),
        ]
    ):
        opt.tell(trial_id, opt.ask(trial_id), outcome)
    states = [t.state for t in opt.study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING]
    assert [t.user_attrs[TRIAL_ATTR] for t in opt.study.get_trials()] == [0, 1, 2, 3]


def test_skopt_tells_failures_as_the_worst_value_seen():
    opt = get_method("skopt-forest")(SPACE, 0, 5)
    opt.tell(0, opt.ask(0), Outcome(None, "failed", 1))  # nothing succeeded yet: skipped
    opt.tell(1, opt.ask(1), Outcome(0.2, "completed", 5))
    opt.tell(2, opt.ask(2), Outcome(0.7, "completed", 5))
    opt.tell(3, opt.ask(3), Outcome(None, "diverged", 2))
    opt.tell(4, opt.ask(4), Outcome(None, "cut", 1))  # never told
    assert opt._opt.yi == [0.2, 0.7, 0.7]


def test_optuna_storage_reuses_a_stored_trial_instead_of_counting_it_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = get_method("gp")(SPACE, 3, 5, persist=True)
    first.open_study(url, "resume-me")
    done = first.ask(0)
    first.tell(0, done, Outcome(0.3, "completed", 5))
    running = first.ask(1)  # the attempt dies while trial 1 trains
    second = get_method("gp")(SPACE, 3, 5, persist=True)
    second.open_study(url, "resume-me")
    assert second.ask(0) == done and second.ask(1) == running
    second.tell(0, done, Outcome(0.3, "completed", 5))  # a replayed tell: already finished in the storage
    second.tell(1, running, Outcome(0.1, "completed", 5))
    study = optuna.load_study(study_name="resume-me", storage=url)
    assert [(t.state, t.value) for t in study.get_trials()] == [(TrialState.COMPLETE, 0.3), (TrialState.COMPLETE, 0.1)]


def test_persisted_run_resumes_without_double_counting(tmp_path):
    """A kill after trial 2 was half done, with the storage ahead of the event log: the resumed run ends where an
    uninterrupted one does, and the study holds each trial once."""
    args = {"persist": True}
    full = execute(RunSpec("quadratic", "tpe", seed=4, budget="50ep", out=tmp_path / "full", method_args=args), False)
    part = RunSpec("quadratic", "tpe", seed=4, budget="50ep", out=tmp_path / "part", method_args=args)
    execute(part, progress=False)
    lines = (part.path / "events.jsonl").read_text().splitlines()
    cut = [i for i, line in enumerate(lines) if json.loads(line)["event"] == "trial_start"][2] + 5
    (part.path / "events.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    for name in ("COMPLETE", "summary.json"):
        (part.path / name).unlink()
    resumed = execute(part, progress=False)
    assert resumed["incumbent"]["config"] == full["incumbent"]["config"]
    assert resumed["val_loss"] == full["val_loss"] and resumed["epochs"] == full["epochs"] == 50
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{part.path / 'optuna.db'}")
    ids = [t.user_attrs[TRIAL_ATTR] for t in study.get_trials()]
    assert ids == list(range(5)) and all(t.state == TrialState.COMPLETE for t in study.get_trials())
    ends = [e["trial"] for e in read_events(part.path) if e["event"] == "trial_end"]
    assert ends == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", BO)
def test_run_on_the_quadratic_task(tmp_path, name):
    summary = execute(RunSpec("quadratic", name, seed=0, budget="40ep", out=tmp_path), progress=False)
    assert summary["status"] == "completed" and summary["trials"] == 4 and summary["epochs"] == 40
    assert summary["regret"] >= -1e-9 and summary["incumbent"]["test_metrics"]


@pytest.mark.slow
def test_persisted_run_killed_for_real_resumes_to_the_same_result(tmp_path):
    """SIGKILL a persisted TPE run mid-way, run the same command again: same proposals as an uninterrupted run."""
    command = [sys.executable, "-m", "hpobench_stn", "run", "--task", "quadratic", "--method", "tpe", "--seed", "2"]
    command += ["--budget", "300ep", "--method-arg", "persist=True", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    full = subprocess.run([*command, "--out", str(tmp_path / "full")], cwd=ROOT, env=env, capture_output=True)
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen([*command, "--out", str(tmp_path / "part")], cwd=ROOT, env=env)
    deadline = time.time() + 120
    logs: list[Path] = []
    while time.time() < deadline and not (logs and logs[0].read_text().count('"trial_end"') >= 12):
        logs = list((tmp_path / "part").rglob("events.jsonl"))
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = logs[0].parent
    assert not (run / "COMPLETE").exists(), "the kill should land mid-run"
    again = subprocess.run([*command, "--out", str(tmp_path / "part")], cwd=ROOT, env=env, capture_output=True)
    assert again.returncode == 0, again.stderr
    expected = {
        e["trial"]: e["config"]
        for e in read_events(next((tmp_path / "full").rglob("events.jsonl")).parent)
        if e["event"] == "trial_start"
    }
    starts = [e for e in read_events(run) if e["event"] == "trial_start"]
    assert all(e["config"] == expected[e["trial"]] for e in starts)  # the cut trial is retrained as it was
    assert sorted(e["trial"] for e in read_events(run) if e["event"] == "trial_end") == list(range(30))
    assert json.loads((run / "summary.json").read_text())["epochs"] == 300
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{run / 'optuna.db'}")
    labelled = [t for t in study.get_trials() if TRIAL_ATTR in t.user_attrs]
    assert [t.user_attrs[TRIAL_ATTR] for t in labelled] == list(range(30))
    assert all(t.state == TrialState.COMPLETE for t in labelled)
    assert all(t.state == TrialState.FAIL for t in study.get_trials() if t not in labelled)  # killed mid-ask

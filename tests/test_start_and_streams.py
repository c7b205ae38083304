"""The comparison protocol's start and random streams: every black-box method's first trial is the task's initial
configuration (unless turned off), two methods at one seed never share a random start, every method's k-th trial
trains with the same seed, and a model-based sampler's summary says how many trials its model proposed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.optimizer import Outcome
from hpobench_stn.registry import build_task, get_method
from hpobench_stn.seeds import method_seed
from hpobench_stn.space import Float, Integer, Rate, SearchSpace
from hpobench_stn.store import read_events
from hpobench_stn.trial_runner import trial_seed

ROOT = Path(__file__).resolve().parent.parent
SPACE = SearchSpace([Float("lr", 1e-4, 1.0, log=True), Float("wd", 0.0, 0.1), Rate("dropout"), Integer("holes", 0, 4)])
ASK_TELL = ["random", "grid", "tpe", "gp", "cmaes", "skopt-gp", "skopt-forest"]
RAY = ["asha", "hyperband", "pbt"]
MODEL_BASED = ["tpe", "gp", "cmaes", "skopt-gp", "skopt-forest"]
DEFAULT = build_task("quadratic", "tiny").space.default()


def _starts(path):
    return [e for e in read_events(path) if e["event"] == "trial_start"]


def _run(tmp_path, name, budget="10ep", seed=0, **args):
    if name in RAY:
        args["num_cpus"] = 1  # one trial at a time
    spec = RunSpec("quadratic", name, seed=seed, budget=budget, out=tmp_path, method_args=args)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed", summary.get("error")
    return spec, summary


def _methods(names, slow):
    return [pytest.param(n, marks=[pytest.mark.slow] if slow else []) for n in names]


def _check_start(path, on):
    assert (_starts(path)[0]["config"] == DEFAULT) is on
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["method_settings"]["start_at_default"] is on
    assert meta["method_args"].get("start_at_default", True) is on


@pytest.mark.parametrize("name", ASK_TELL)
def test_first_trial_is_the_initial_configuration_unless_turned_off(tmp_path, name):
    _check_start(_run(tmp_path / "on", name)[0].path, True)
    _check_start(_run(tmp_path / "off", name, start_at_default=False)[0].path, False)


@pytest.fixture(scope="module")
def ray_runs(tmp_path_factory):
    """One run of each Ray Tune method at seed 0, two trials each (an embedded Ray with one CPU)."""
    out = tmp_path_factory.mktemp("ray")
    return {name: _run(out, name, budget="12ep")[0].path for name in RAY}


@pytest.mark.slow
@pytest.mark.parametrize("name", RAY)
def test_ray_methods_first_trial_is_the_initial_configuration_unless_turned_off(tmp_path, ray_runs, name):
    _check_start(ray_runs[name], True)
    _check_start(_run(tmp_path, name, budget="12ep", start_at_default=False)[0].path, False)


@pytest.mark.slow
def test_ray_methods_draw_their_own_configurations_and_train_with_common_seeds(ray_runs):
    second = {name: _starts(path)[1] for name, path in ray_runs.items()}
    assert len({json.dumps(s["config"], sort_keys=True) for s in second.values()}) == len(RAY)
    for path in ray_runs.values():  # the k-th trial Tune creates trains with trial_seed(seed, k)
        assert [s["seed"] for s in _starts(path)] == [trial_seed(0, k) for k in range(len(_starts(path)))]


def _proposals(name, n, **settings):
    opt = get_method(name)(SPACE, 5, 5, **settings)
    configs = []
    for trial_id in range(n):
        configs.append(opt.ask(trial_id))
        opt.tell(trial_id, configs[-1], Outcome(configs[-1]["dropout"] + configs[-1]["wd"], "completed", 5))
    return configs


@pytest.mark.parametrize("pair", [("tpe", "gp"), ("skopt-gp", "skopt-forest"), ("random", "tpe"), ("gp", "cmaes")])
def test_two_methods_at_one_seed_share_only_the_initial_configuration(pair):
    first, second = (_proposals(name, 4) for name in pair)
    assert first[0] == second[0] == SPACE.default()
    assert all(a != b for a, b in zip(first[1:], second[1:], strict=True))
    assert _proposals(pair[0], 4) == first  # the same method at the same seed repeats itself


def test_common_random_numbers_every_methods_kth_trial_trains_with_the_same_seed(tmp_path):
    seeds = {}
    for name in ("random", "tpe", "skopt-forest"):
        spec, _ = _run(tmp_path, name, budget="30ep", seed=3)
        seeds[name] = [(e["trial"], e["seed"]) for e in _starts(spec.path)]
    assert seeds["random"] == seeds["tpe"] == seeds["skopt-forest"] == [(k, trial_seed(3, k)) for k in range(3)]


def test_method_seed_is_the_same_in_every_process():
    """A stable hash of the name: Python's ``hash`` of a string changes with PYTHONHASHSEED, this must not."""
    code = "from hpobench_stn.seeds import method_seed; print(method_seed(7, 'tpe'), method_seed(7, 'gp', 3))"
    outputs = set()
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": salt}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.add(result.stdout.strip())
    assert outputs == {f"{method_seed(7, 'tpe')} {method_seed(7, 'gp', 3)}"}
    assert method_seed(7, "tpe") != method_seed(7, "gp") and method_seed(7, "tpe") != method_seed(8, "tpe")


@pytest.mark.parametrize("name", MODEL_BASED)
def test_summary_counts_the_trials_the_model_proposed(tmp_path, name):
    """Five 10-epoch trials: the initial configuration and two random ones start, the model proposes the rest."""
    start = {"n_initial_points": 2} if name.startswith("skopt") else {"n_startup_trials": 2}
    _, summary = _run(tmp_path / "a", name, budget="50ep", **start)
    assert summary["trials"] == 5 and summary["proposals"] == {"start": 3, "model": 2}
    _, summary = _run(tmp_path / "b", name, budget="20ep", **start)
    assert summary["proposals"] == {"start": 2, "model": 0}  # never left its random start
    _, summary = _run(tmp_path / "c", name, budget="50ep", start_at_default=False, **start)
    assert summary["proposals"] == {"start": 2, "model": 3}


def test_methods_without_a_model_record_no_proposals(tmp_path):
    for name in ("random", "grid", "fixed"):
        _, summary = _run(tmp_path, name)
        assert "proposals" not in summary


def test_persisted_study_is_started_once_and_resumed_runs_count_proposals_as_before(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = get_method("tpe")(SPACE, 3, 5, persist=True)
    first.open_study(url, "start-once")
    assert first.ask(0) == SPACE.default()
    first.tell(0, SPACE.default(), Outcome(0.3, "completed", 5))
    again = get_method("tpe")(SPACE, 3, 5, persist=True)
    again.open_study(url, "start-once")  # a resumed study: the initial configuration is not enqueued again
    study = optuna.load_study(study_name="start-once", storage=url)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]
    assert again.ask(0) == SPACE.default() and again.ask(1) != SPACE.default()
    assert again.origins == {0: "start", 1: "start"}

    args = {"persist": True, "n_startup_trials": 2}
    full = execute(RunSpec("quadratic", "tpe", seed=4, budget="50ep", out=tmp_path / "full", method_args=args), False)
    part = RunSpec("quadratic", "tpe", seed=4, budget="50ep", out=tmp_path / "part", method_args=args)
    execute(part, progress=False)
    lines = (part.path / "events.jsonl").read_text().splitlines()
    cut = [i for i, line in enumerate(lines) if json.loads(line)["event"] == "trial_start"][3] + 5
    (part.path / "events.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    for name in ("COMPLETE", "summary.json"):
        (part.path / name).unlink()
    resumed = execute(part, progress=False)
    assert resumed["proposals"] == full["proposals"] == {"start": 3, "model": 2}
    assert resumed["incumbent"]["config"] == full["incumbent"]["config"]

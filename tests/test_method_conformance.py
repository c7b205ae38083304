"""One conformance test run over every registered method, the self-driving ones (STN, Ray Tune, replay) included, as
Syne Tune runs one over every scheduler: settings round-trip and refuse bad values, a run never spends more than its
epoch budget, and the same seed gives the same run where the method is sequential."""

import dataclasses
import json
import re

import pytest

from hpobench_stn.errors import UserError
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.registry import get_method, method_names
from hpobench_stn.store import MEASURED_FIELDS, read_events

METHODS = method_names()
RAY_METHODS = {"asha", "hyperband", "pbt"}
BUDGET = 45.0  # compute-weighted epochs; the tiny quadratic trial is 10 epochs, so the budget cuts one (STN: ~12x)


def _marks(name):
    return [pytest.mark.slow] if name in RAY_METHODS else []


@pytest.fixture(scope="module")
def stn_source(tmp_path_factory):
    """A finished STN run whose schedule the replay method follows."""
    spec = RunSpec("quadratic", "stn", seed=0, budget="20ep", out=tmp_path_factory.mktemp("source"))
    execute(spec, progress=False)
    return str(spec.path)


def _method_args(name, stn_source):
    if name == "replay":
        return {"schedule": stn_source}
    if name in RAY_METHODS:
        return {"num_cpus": 1}  # one trial at a time: sequential, so reproducible
    return {}


def _without_timing(events):
    return [{k: v for k, v in e.items() if k not in MEASURED_FIELDS | {"seconds_without_report"}} for e in events]


def test_every_builtin_method_is_covered():
    builtins = {"grid", "random", "fixed", "replay", "stn", "delta-stn", "tpe", "gp", "cmaes", "skopt-gp"}
    assert builtins | {"skopt-forest"} | RAY_METHODS <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_settings_round_trip_and_refuse_bad_values(name):
    cls = get_method(name)
    defaults = cls.Settings()
    assert dataclasses.is_dataclass(defaults) and defaults.non_default() == {}
    assert cls.Settings.from_args(defaults.to_dict(), name) == defaults
    assert len(cls.Settings.describe()) == len(cls.Settings.names())
    for field in dataclasses.fields(defaults):
        wrong = [1.5] if field.type in ("str", "str | None") else ["not-a-value", [1]]
        for value in wrong:
            with pytest.raises(UserError, match=re.escape(f"setting {field.name}={value!r} is not allowed")):
                cls.Settings.from_args({field.name: value}, name)
    with pytest.raises(UserError, match="has no setting 'no_such_setting'"):
        cls.Settings.from_args({"no_such_setting": 1}, name)


def _run(name, out, stn_source):
    args = _method_args(name, stn_source)
    spec = RunSpec("quadratic", name, seed=1, budget=f"{BUDGET:g}ep", out=out, method_args=args)
    return spec, execute(spec, progress=False)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in METHODS])
def test_run_keeps_within_its_epoch_budget_and_repeats_itself(name, tmp_path, stn_source):
    spec, summary = _run(name, tmp_path / "a", stn_source)
    assert summary["status"] == "completed", summary.get("error")
    assert summary["incumbent"] is not None and summary["trials"] >= 1
    assert 0 < summary["epochs"] <= BUDGET + 1e-9
    events = read_events(spec.path)
    assert all(e["epochs"] <= BUDGET + 1e-9 for e in events)
    meta = json.loads((spec.path / "metadata.json").read_text())
    settings = get_method(name).Settings
    assert set(settings.names()) <= set(meta["method_settings"])
    assert settings.from_args(meta["method_args"], name) == settings.from_args(_method_args(name, stn_source), name)
    again, summary_again = _run(name, tmp_path / "b", stn_source)
    assert _without_timing(read_events(again.path)) == _without_timing(events)
    assert {k: v for k, v in summary_again.items() if k not in MEASURED_FIELDS} == {
        k: v for k, v in summary.items() if k not in MEASURED_FIELDS
    }

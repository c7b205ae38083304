"""Search space: transforms round-trip, grids and samples stay in bounds, bad configurations are refused."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpobench_stn.errors import ConfigError
from hpobench_stn.space import Float, Integer, Rate, SearchSpace


@st.composite
def hyperparameters(draw):
    kind = draw(st.sampled_from(["linear", "log", "rate", "int"]))
    if kind == "linear":
        low = draw(st.floats(-1e3, 1e3))
        high = low + draw(st.floats(1e-3, 1e3))
        return Float("x", low, high)
    if kind == "log":
        low = draw(st.floats(1e-6, 1e2))
        high = low * draw(st.floats(1.01, 1e4))
        return Float("x", low, high, log=True)
    if kind == "rate":
        low = draw(st.floats(0.0, 0.5))
        high = draw(st.floats(low + 0.01, 0.99))
        return Rate("x", low, high)
    low = draw(st.integers(-20, 20))
    return Integer("x", low, low + draw(st.integers(1, 30)))


@settings(max_examples=300, deadline=None)
@given(hyperparameters(), st.floats(0.0, 1.0))
def test_unit_round_trip(hp, unit):
    value = hp.from_unit(unit)
    assert hp.low <= value <= hp.high
    if hp.integer:
        assert hp.from_unit(hp.to_unit(value) + 1e-12) == value or hp.to_unit(value) >= 1.0
    else:
        assert hp.to_unit(value) == pytest.approx(unit, abs=1e-7)


@settings(max_examples=300, deadline=None)
@given(hyperparameters(), st.floats(-8.0, 8.0))
def test_unconstrained_round_trip(hp, u):
    value = hp.from_unconstrained(u)
    assert hp.low <= value <= hp.high
    assert hp.to_unconstrained(value) == pytest.approx(u, rel=1e-5, abs=1e-5)


@settings(max_examples=200, deadline=None)
@given(hyperparameters(), st.floats(0.001, 0.999))
def test_value_to_unconstrained_and_back(hp, unit):
    value = hp.from_unit(unit)
    back = hp.from_unconstrained(hp.to_unconstrained(value))
    assert back == pytest.approx(value, rel=1e-5, abs=2e-6 * (hp.high - hp.low))  # bounds are clamped 1e-6 inside


def test_unconstrained_is_logit_of_unit():
    hp = Rate("p", 0.0, 1.0)
    assert hp.to_unconstrained(0.5) == pytest.approx(0.0)
    assert hp.to_unconstrained(0.25) == pytest.approx(math.log(1 / 3))
    log_hp = Float("l2", 1e-3, 10.0, log=True)
    assert log_hp.to_unconstrained(0.1) == pytest.approx(0.0)  # geometric centre of [1e-3, 10]


def test_integer_is_floor_of_continuous_value():
    hp = Integer("holes", 0, 4)
    assert hp.cast(2.99) == 2 and hp.cast(4.7) == 4 and hp.cast(-0.5) == 0
    assert [hp.from_unit(u) for u in (0.0, 0.19, 0.21, 0.99, 1.0)] == [0, 0, 1, 4, 4]


def test_grid_and_samples_in_bounds():
    space = SearchSpace([Float("a", 1e-3, 10.0, log=True), Rate("p"), Integer("n", 0, 2)])
    grid = space.grid(4)
    assert len(grid) == 4 * 4 * 3
    assert {g["n"] for g in grid} == {0, 1, 2}
    assert min(g["a"] for g in grid) == 1e-3 and max(g["a"] for g in grid) == 10.0
    assert [g["a"] for g in grid[:: 4 * 3]][1] == pytest.approx(10 ** (-3 + 4 / 3))
    rng = np.random.default_rng(0)
    for _ in range(200):
        space.validate(space.sample(rng))


def test_sampling_is_uniform_on_log_scale():
    space = SearchSpace([Float("a", 1e-4, 1.0, log=True)])
    rng = np.random.default_rng(1)
    logs = np.log10([space.sample(rng)["a"] for _ in range(4000)])
    assert abs(np.mean(logs) + 2.0) < 0.05


def test_validate_errors_name_the_problem():
    space = SearchSpace([Float("lr", 0.0, 1.0), Integer("n", 0, 3)])
    with pytest.raises(ConfigError, match=r"'lr' = 2.0 is outside its bounds \[0.0, 1.0\]"):
        space.validate({"lr": 2.0, "n": 1})
    with pytest.raises(ConfigError, match=r"unknown hyperparameter.*'wd'.*valid names: lr, n"):
        space.validate({"lr": 0.5, "n": 1, "wd": 0.1})
    with pytest.raises(ConfigError, match="missing n"):
        space.validate({"lr": 0.5})
    with pytest.raises(ConfigError, match="integer"):
        space.validate({"lr": 0.5, "n": 1.5})
    assert space.validate({"lr": 0.5}, partial=True) == {"lr": 0.5, "n": 1}


def test_bad_definitions_are_refused():
    with pytest.raises(ValueError):
        Float("x", 1.0, 1.0)
    with pytest.raises(ValueError):
        Float("x", 0.0, 1.0, log=True)
    with pytest.raises(ValueError):
        Rate("p", 0.0, 1.5)
    with pytest.raises(ValueError):
        SearchSpace([Rate("p"), Rate("p")])

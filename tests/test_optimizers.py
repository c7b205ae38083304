"""One conformance test run over every registered ask/tell optimizer (as Syne Tune does for its schedulers)."""

import math

import pytest

from hpobench_stn.optimizer import Optimizer, Outcome, SearchExhausted
from hpobench_stn.registry import get_method, method_names
from hpobench_stn.space import Float, Integer, Rate, SearchSpace

SPACE = SearchSpace([Float("lr", 1e-4, 1.0, log=True), Float("wd", 0.0, 0.1), Rate("dropout"), Integer("holes", 0, 4)])

ASK_TELL = [name for name in method_names() if issubclass(get_method(name), Optimizer)]


def _objective(config):
    return (config["dropout"] - 0.3) ** 2 + 0.01 * config["holes"] + abs(config["wd"] - 0.05)


def _drive(name, seed, n=12):
    opt = get_method(name)(SPACE, seed, 5)
    proposals = []
    for trial_id in range(n):
        try:
            config = opt.ask(trial_id)
        except SearchExhausted:
            break
        proposals.append(config)
        SPACE.validate(config)  # inside the space, every name present, integers integral
        for epoch in range(1, 4):
            keep_going = opt.on_report(trial_id, epoch, _objective(config) + 1.0 / epoch)
            assert keep_going in (True, False)
            if not keep_going:
                break
        status = ["completed", "stopped", "diverged", "failed"][trial_id % 4]
        opt.tell(
            trial_id, config, Outcome(_objective(config) if status in ("completed", "stopped") else None, status, epoch)
        )
    return proposals


@pytest.mark.parametrize("name", ASK_TELL)
def test_conformance(name):
    first = _drive(name, seed=7)
    assert first, f"{name} proposed nothing"
    assert first == _drive(name, seed=7), f"{name} is not reproducible for a fixed seed"
    assert get_method(name).description and get_method(name).name == name


def test_every_builtin_is_covered():
    assert {"grid", "random", "fixed"} <= set(ASK_TELL)


def test_random_search_differs_across_seeds():
    assert _drive("random", 1) != _drive("random", 2)


def _grid_points(**settings):
    opt = get_method("grid")(SPACE, 0, 5, **settings)
    points = []
    with pytest.raises(SearchExhausted):
        for trial_id in range(1000):
            points.append(tuple(opt.ask(trial_id).values()))
    return points


def test_grid_visits_each_point_once():
    points = _grid_points(resolution=2, start_at_default=False)
    assert len(points) == len(set(points)) == 2 * 2 * 2 * 2
    # the initial configuration (off this grid) first, then the same grid in the same order
    assert _grid_points(resolution=2) == [tuple(SPACE.default().values()), *points]


def test_grid_skips_the_point_equal_to_the_initial_configuration():
    """At resolution 3 every initial value (the centre of its scale) is on the grid: that point is not trained twice."""
    grid = _grid_points(resolution=3, start_at_default=False)
    started = _grid_points(resolution=3)
    assert len(started) == len(grid) == 81 and started[0] == tuple(SPACE.default().values())
    twin = next(p for p in grid if all(math.isclose(a, b) for a, b in zip(p, started[0], strict=True)))
    assert started[1:] == [p for p in grid if p != twin]

"""Time to quality, average rank and normalised regret over the budget, on handmade runs with known answers."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.quality import parse_targets, summarize_ttq, targets, time_to_quality, units
from analysis.rank import average_rank, normalised_regret
from hpobench_stn.errors import UserError
from hpobench_stn.store import load_results
from tests.runfolders import write_run

ROOT = Path(__file__).resolve().parent.parent
GROUP = ("toy", "cpu", "10ep")


@pytest.fixture
def race(tmp_path):
    """Three methods, two seeds, a 10-epoch budget, a report every 2 epochs (4 s of wall-clock, 3 CPU-seconds)."""
    curves = {
        "stn": [[3.0, 1.0, 0.9, 0.9, 0.9], [3.0, 0.95, 0.9, 0.9, 0.9]],
        "random": [[3.0, 2.0, 1.0, 1.0, 1.0], [3.0, 2.0, 1.5, 1.2, 1.2]],
        "grid": [[2.5, 2.5, 2.0, 0.8, 0.8], [2.5, 2.5, 1.5, 1.0, 1.0]],
    }
    for method, per_seed in curves.items():
        for seed, values in enumerate(per_seed):
            reports = [(4.0 * i + 2, 2.0 * i + 2, v, 3.0 * i + 1.5) for i, v in enumerate(values)]
            write_run(tmp_path, method, seed, min(values), min(values), reports)
    return load_results([tmp_path])


def test_time_to_quality_in_every_unit_towards_the_best_black_box_mean(race):
    runs, events = race
    assert units(events) == ["t", "cpu_t", "epochs"]
    goal = targets(runs)
    # black-box final means: random (1.0 + 1.2) / 2 = 1.1, grid 0.9: grid is the best black-box method
    assert goal[GROUP].value == pytest.approx(0.9) and "grid" in goal[GROUP].source
    per_run = time_to_quality(runs, events, goal, "epochs").set_index(["method", "seed"])
    assert per_run.loc[("stn", 0), "fraction"] == pytest.approx(0.6)  # 0.9 at epoch 6 of the 10-epoch budget
    assert per_run.loc[("grid", 0), "fraction"] == pytest.approx(0.8)
    assert not per_run.loc[("random", 0), "reached"] and not per_run.loc[("grid", 1), "reached"]
    table = summarize_ttq(per_run.reset_index()).set_index("method")
    assert table.loc["stn", ["runs", "reached"]].tolist() == [2, 2] and table.loc["random", "reached"] == 0
    # the budget has no seconds: wall-clock and CPU time are fractions of the most any run spent (18 s, 13.5 s)
    wall = time_to_quality(runs, events, goal, "t").set_index(["method", "seed"])
    assert wall.loc[("stn", 0), "fraction"] == pytest.approx(10.0 / 18.0)
    cpu = time_to_quality(runs, events, goal, "cpu_t").set_index(["method", "seed"])
    assert cpu.loc[("stn", 1), "fraction"] == pytest.approx(7.5 / 13.5)


def test_a_target_can_be_set_per_group_and_a_cpu_clock_budget_is_cpu_seconds(tmp_path):
    for seed in range(2):
        write_run(
            tmp_path,
            "random",
            seed,
            1.0,
            1.0,
            [(10.0, 1, 2.0, 5.0), (30.0, 2, 1.0, 15.0)],
            budget="60s",
            meta_extra={"clock": "cpu"},
        )
    runs, events = load_results([tmp_path])
    goal = targets(runs, parse_targets(["toy/cpu=1.5"]))
    assert goal[("toy", "cpu", "60s")].value == 1.5 and goal[("toy", "cpu", "60s")].source == "set with --target"
    cpu = time_to_quality(runs, events, goal, "cpu_t")
    assert cpu["fraction"].tolist() == pytest.approx([0.25, 0.25])  # 15 CPU-seconds of the 60 s CPU budget
    wall = time_to_quality(runs, events, goal, "t")
    assert wall["fraction"].tolist() == pytest.approx([1.0, 1.0])  # wall-clock: of the most any run spent (30 s)
    assert targets(runs, parse_targets(["2.5"]))[("toy", "cpu", "60s")].value == 2.5
    with pytest.raises(UserError, match="not a number"):
        parse_targets(["toy=fast"])


def test_average_rank_over_the_budget(race):
    runs, events = race
    rank = average_rank(runs, events, "epochs", points=11).set_index(["method", "fraction"])
    # at 0.4 of the budget (epoch 4): seed 0: stn 1.0, random 2.0, grid 2.5; seed 1: stn 0.95, random 2.0, grid 2.5
    assert rank.loc[("stn", 0.4), "rank"] == 1.0 and rank.loc[("grid", 0.4), "rank"] == 3.0
    # at the end: seed 0: grid 0.8 < stn 0.9 < random 1.0; seed 1: stn 0.9 < grid 1.0 < random 1.2
    end = rank.xs(1.0, level="fraction")["rank"]
    assert end.to_dict() == {"grid": 1.5, "random": 3.0, "stn": 1.5}
    # before any report every method shares the same place
    assert set(rank.xs(0.0, level="fraction")["rank"]) == {2.0}
    # a method that has not reported yet is last, behind any value
    late = events[~((events["method"] == "stn") & (events["epochs"] == 2))]
    early = average_rank(runs, late, "epochs", points=11).set_index(["method", "fraction"])["rank"]
    assert early.xs(0.2, level="fraction").to_dict() == {"grid": 1.0, "random": 2.0, "stn": 3.0}


def test_normalised_regret_runs_from_the_worst_to_the_best_value_of_the_group(race):
    runs, events = race
    regret = normalised_regret(runs, events, "epochs", points=11).set_index(["method", "fraction"])
    # values span 0.8 (grid seed 0 at the end) to 3.0: grid ends at ((0.8 - 0.8) + (1.0 - 0.8)) / 2 / 2.2
    assert regret.loc[("grid", 1.0), "mean"] == pytest.approx(0.1 / 2.2)
    assert regret.loc[("stn", 0.2), "mean"] == pytest.approx(1.0)
    assert math.isnan(regret.loc[("stn", 0.1), "mean"])  # nothing reported before the first epoch-2 report
    assert np.nanmax(regret["mean"]) <= 1.0 and np.nanmin(regret["mean"]) >= 0.0


def test_plot_writes_rank_regret_and_time_to_quality_figures(tmp_path):
    for method, base in (("stn", 0.5), ("random", 1.0)):
        for seed in range(2):
            reports = [(1.0, 2, base + 1), (2.0, 4, base + 0.1 * seed)]
            write_run(tmp_path / "runs", method, seed, base, base, reports, summary_extra={"regret": base / 10})
    out = tmp_path / "figures"
    result = subprocess.run(
        [sys.executable, "-m", "hpobench_stn", "plot", "--runs", str(tmp_path / "runs"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    for stem in ("rank-toy-cpu-10ep-epochs", "rank-toy-cpu-10ep-t", "regret-toy-cpu-10ep-epochs", "ttq-toy-cpu-10ep"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names, stem
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    subprocess.run(
        [sys.executable, "-m", "hpobench_stn", "plot", "--runs", str(tmp_path / "runs"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
        check=True,
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # byte-identical when regenerated

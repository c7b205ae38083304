"""Statistics of the comparison tables: unpaired tests with Holm's correction, intervals, what can be detected with
few seeds, and failed or diverged seeds counted in their row."""

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis.aggregate import Metric, compare, summarize
from analysis.stats import holm, mann_whitney, smallest_p, t_interval
from analysis.tables import build, to_csv, to_markdown
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.store import load_events, load_runs
from tests.runfolders import write_run

VAL = Metric("val_loss", "val loss")
GROUP = ("toy", "cpu", "10ep")


def test_interval_holm_and_smallest_p_have_their_textbook_values():
    mean, half = t_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert mean == 3.5 and half == pytest.approx(2.5706 * np.std([1, 2, 3, 4, 5, 6], ddof=1) / math.sqrt(6), 1e-4)
    assert math.isnan(t_interval([2.0])[1])
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, math.nan])[1])
    assert smallest_p(3, 3) == pytest.approx(0.1) and smallest_p(5, 5) == pytest.approx(2 / 252)


def test_mann_whitney_is_exact_with_ties_and_matches_scipy_without():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=7), rng.normal(0.8, size=6)
    assert mann_whitney(a, b) == pytest.approx(scipy_stats.mannwhitneyu(a, b, method="exact").pvalue)
    # every value of one sample below the other, ties inside each: exactly the smallest p of 3 against 3 (the
    # normal approximation would say 0.072)
    assert mann_whitney([1.0, 1.0, 3.0], [4.0, 5.0, 5.0]) == pytest.approx(0.1)
    assert mann_whitney([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]) == 1.0


def _clear_winner(root, seeds):
    rng = np.random.default_rng(1)
    for method, centre in (("best", 1.0), ("b", 2.0), ("c", 2.1), ("d", 3.0)):
        for seed in range(seeds):
            v = float(centre + 0.05 * rng.standard_normal())
            write_run(root, method, seed, v, v + 0.1, [(1.0, 1, v + 1), (4.0, 4, v)])
    return load_runs([root])


def test_a_clearly_better_method_rejects_the_others_after_holm_with_ten_seeds(tmp_path):
    runs = _clear_winner(tmp_path, 10)
    marks = compare(runs, VAL)[GROUP]
    assert marks["best"].kind == "best"
    for other in ("b", "c", "d"):
        # every value above every value of the best: p = 2 / C(20, 10), three comparisons
        assert marks[other].kind == "worse"
        assert marks[other].p == pytest.approx(2 / math.comb(20, 10))
        assert marks[other].p_holm == pytest.approx(3 * 2 / math.comb(20, 10))
    md = to_markdown(runs)
    rows = {line.split("|")[4].strip(): line for line in md.splitlines() if line.startswith("| toy")}
    assert "**" in rows["best"] and all(" \\*" in rows[m] for m in ("b", "c", "d"))
    assert "toy/cpu/10ep: no difference can be detected" not in md and "Holm-corrected" in md


def test_with_three_seeds_the_table_says_no_difference_can_be_detected(tmp_path):
    runs = _clear_winner(tmp_path, 3)
    marks = compare(runs, VAL)[GROUP]
    assert {marks[m].kind for m in ("b", "c", "d")} == {"nd"}  # p ≥ 0.1 for any outcome of 3 against 3
    md = to_markdown(runs)
    rows = [line for line in md.splitlines() if line.startswith("| toy")]
    assert not any(" \\*" in row for row in rows) and all(" ?" in row for row in rows if "**" not in row)
    note = next(line for line in md.splitlines() if line.startswith("toy/cpu/10ep: no difference can be detected"))
    assert "3 seeds" in note and "0.3" in note  # Holm's first step: 3 comparisons x 0.1


def test_a_diverged_seed_and_a_failed_seed_are_counted_in_their_rows(tmp_path):
    for seed, v in enumerate([1.0, 1.4, 1.1]):
        write_run(tmp_path, "a", seed, v, v, [(1.0, 1, v + 1), (2.0, 2, v)])
        write_run(tmp_path, "b", seed, v + 1, v + 1, [(1.0, 1, v + 1)])
    # every trial of seed 3 diverged: its reports carry no finite loss, its summary no incumbent
    write_run(tmp_path, "a", 3, None, None, [(1.0, 1, math.inf), (2.0, 2, math.nan)])
    # b's seed 3 crashed: a failed run has a summary but no completion marker
    write_run(tmp_path, "b", 3, None, None, [], status="failed")
    runs = load_runs([tmp_path])
    assert len(runs) == 8 and set(runs["status"]) == {"completed", "failed"}
    summary = summarize(runs).set_index("method")
    assert summary.loc["a", ["runs", "n", "failed", "no_incumbent"]].tolist() == [4, 3, 0, 1]
    assert summary.loc["b", ["runs", "n", "failed", "no_incumbent"]].tolist() == [4, 3, 1, 0]
    assert summary.loc["a", "val_loss.mean"] == pytest.approx(3.5 / 3)  # over the seeds with a metric
    md = to_markdown(runs, load_events([tmp_path]))
    rows = {line.split("|")[4].strip(): line for line in md.splitlines() if line.startswith("| toy")}
    assert rows["a"].startswith("| toy | cpu | 10ep | a | 3 | 0 | 1 |")
    assert rows["b"].startswith("| toy | cpu | 10ep | b | 3 | 1 | 0 |")
    # time to quality towards a's mean (1.167): seeds 0 and 2 reach it at epoch 2 of 10, the diverged seed never;
    # the failed seed is not among the runs that tried
    assert "0.2 ± 0 (2/4)" in rows["a"] and "not reached (0/3)" in rows["b"]
    csv = pd.read_csv(io.StringIO(to_csv(runs, load_events([tmp_path]))))
    assert csv.set_index("method").loc["a", "ttq.epochs.runs"] == 4
    assert csv.set_index("method").loc["b", "ttq.epochs.runs"] == 3


def test_real_runs_that_diverged_or_failed_are_counted(tmp_path, test_registry, monkeypatch):
    # the initial configuration (penalty_0 = 1) diverges on the faulty task: `fixed` trains only it
    execute(RunSpec("faulty-quadratic", "fixed", budget="2ep", out=tmp_path), progress=False)
    monkeypatch.setenv("HPOBENCH_TEST_FLAKY", "1")
    execute(RunSpec("faulty-quadratic", "flaky-random", budget="2ep", out=tmp_path), progress=False)
    summary = summarize(load_runs([tmp_path])).set_index("method")
    assert summary.loc["fixed", ["runs", "n", "failed", "no_incumbent"]].tolist() == [1, 0, 0, 1]
    assert summary.loc["flaky-random", ["runs", "n", "failed", "no_incumbent"]].tolist() == [1, 0, 1, 0]
    result = build(load_runs([tmp_path]))
    assert list(result.summary["method"]) == ["fixed", "flaky-random"]

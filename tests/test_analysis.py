"""Analysis: aggregation, curve resampling and significance marking on handmade runs with known answers."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import Metric, compare, summarize
from analysis.curves import anytime, resample, schedules
from analysis.tables import paper_table, to_csv, to_latex, to_markdown
from hpobench_stn.store import load_events, load_runs
from tests.runfolders import write_run

ROOT = Path(__file__).resolve().parent.parent


_write_run = write_run


@pytest.fixture
def handmade(tmp_path):
    vals = {"a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "b": [2.0, 3.0, 4.0, 5.0, 6.0, 7.5]}
    for method, values in vals.items():
        for seed, v in enumerate(values):
            _write_run(
                tmp_path,
                method,
                seed,
                v,
                v + 0.5,
                [(1.0, 1, v + 2), (3.0, 2, v + 1), (5.0, 3, v)],
                hparams=(lambda e: {"dropout": 0.1 * e}) if method == "a" else None,
            )
    return tmp_path


def test_aggregation_gives_known_means_and_standard_errors(handmade):
    summary = summarize(load_runs([handmade])).set_index("method")
    assert summary.loc["a", "val_loss.mean"] == pytest.approx(3.5)
    assert summary.loc["a", "val_loss.se"] == pytest.approx(np.std([1, 2, 3, 4, 5, 6], ddof=1) / math.sqrt(6))
    assert summary.loc["b", "test_loss.mean"] == pytest.approx(np.mean([2, 3, 4, 5, 6, 7.5]) + 0.5)
    assert summary.loc["a", "n"] == 6 and summary.loc["a", "seconds.mean"] == pytest.approx(35.0)
    # 95% Student-t half-width: t(0.975, 5) = 2.5706
    assert summary.loc["a", "val_loss.ci"] == pytest.approx(2.5706 * summary.loc["a", "val_loss.se"], rel=1e-4)
    assert summary.loc["a", "failed"] == 0 and summary.loc["a", "no_incumbent"] == 0


def test_significance_marking_on_a_constructed_case(handmade):
    marks = compare(load_runs([handmade]), Metric("val_loss", "val loss"))[("toy", "cpu", "10ep")]
    # a = 1..6 and b = 2..7.5 overlap: two-sided Mann-Whitney p = 420/924 (exact, ties included), no significant
    # difference, though one comparison of 6 against 6 seeds could reach p = 2/924
    assert marks["a"].kind == "best" and marks["b"].kind == "ns" and marks["b"].p == pytest.approx(420 / 924)
    runs = load_runs([handmade])
    runs = runs[runs["seed"] < 3]  # three seeds: the smallest attainable p is 0.1, so no difference is detectable
    marks = compare(runs, Metric("val_loss", "val loss"))[("toy", "cpu", "10ep")]
    assert marks["b"].kind == "nd"


def test_tables_mark_best_and_render_every_format(handmade):
    runs = load_runs([handmade])
    md = to_markdown(runs)
    # mean ± half-width of the 95% Student-t interval; seeds completed, failed, without incumbent
    assert "| toy | cpu | 10ep | a | 6 | 0 | 0 | **3.5 ± 2** | **4 ± 2** |" in md
    assert "| toy | cpu | 10ep | b | 6 | 0 | 0 | 4.583 ± 2.1 | 5.083 ± 2.1 |" in md
    assert "two-sided Mann-Whitney U" in md and "Wilcoxon" not in md and "†" not in md
    assert r"\textbf{3.5 $\pm$ 2}" in to_latex(runs)
    csv = pd.read_csv(__import__("io").StringIO(to_csv(runs)))
    assert list(csv["val_loss.mark"].fillna("")) == ["best", "ns"]
    assert csv.loc[1, "val_loss.p_holm"] == pytest.approx(420 / 924)
    assert "| a | 3.5 | 4 |" in paper_table(runs)


def test_rows_that_never_left_the_random_start_are_marked(handmade):
    """A sampler whose model proposed no trial in every run is marked †, in some runs †k/n; runs without the count
    (old runs, methods without a model) are not marked and add no columns."""
    for seed in range(3):
        for method, model in (("tpe", 0), ("gp", 2 if seed else 0), ("cmaes", 4)):
            proposals = {"start": 3, "model": model}
            _write_run(handmade, method, seed, 2.0, 2.5, [(1.0, 1, 2.0)], summary_extra={"proposals": proposals})
    md = to_markdown(load_runs([handmade]))
    assert "| toy | cpu | 10ep | tpe † | 3 |" in md and "| toy | cpu | 10ep | gp †1/3 | 3 |" in md
    assert "| toy | cpu | 10ep | cmaes | 3 |" in md and "| toy | cpu | 10ep | a | 6 |" in md
    assert md.count("†: random start only") == 1
    assert r"tpe$^{\dagger}$ &" in to_latex(load_runs([handmade]))
    csv = pd.read_csv(__import__("io").StringIO(to_csv(load_runs([handmade])))).set_index("method")
    assert csv.loc["tpe", "start_only"] == 3 and csv.loc["gp", "start_only"] == 1 and csv.loc["a", "start_only"] == 0
    assert csv.loc["cmaes", "proposals.runs"] == 3 and csv.loc["a", "proposals.runs"] == 0


def test_tables_of_runs_without_proposal_counts_have_no_start_columns(handmade):
    assert "start_only" not in to_csv(load_runs([handmade])) and "random start only" not in to_markdown(
        load_runs([handmade])
    )


def test_resampling_never_shows_a_value_before_it_was_observed():
    grid = np.array([0.0, 0.5, 1.0, 1.5, 3.0, 10.0])
    out = resample(np.array([1.0, 3.0]), np.array([5.0, 4.0]), grid)
    assert np.isnan(out[:2]).all()
    assert out[2:].tolist() == [5.0, 5.0, 4.0, 4.0]


def test_anytime_curve_is_the_running_best_and_waits_for_every_seed(handmade):
    curve = anytime(load_events([handmade]), x="t", points=11)
    a = curve[curve["method"] == "a"].set_index("t")
    # every seed reports first at t=1 (a's seeds share report times), so nothing before t=1
    assert a.loc[a.index < 1.0, "mean"].isna().all()
    assert a["mean"].dropna().is_monotonic_decreasing
    assert a["mean"].iloc[-1] == pytest.approx(3.5)


def test_runs_at_different_budgets_are_never_pooled(handmade):
    for seed in range(2):
        _write_run(handmade, "a", seed, 0.5, 0.6, [(2.0, 1, 0.5)], budget="20ep")
    curve = anytime(load_events([handmade]), x="t", points=11)
    assert set(curve.groupby(["budget", "method"]).groups) == {("10ep", "a"), ("10ep", "b"), ("20ep", "a")}
    assert curve[curve["budget"] == "10ep"].set_index("method").loc["a", "mean"].iloc[-1] == pytest.approx(3.5)
    table = paper_table(load_runs([handmade]))
    assert "toy (cpu, 10ep) val loss" in table and "toy (cpu, 20ep) test loss" in table
    row_b = next(line for line in table.splitlines() if line.startswith("| b |"))
    assert row_b.split("|")[-3:-1] == [" – ", " – "]  # b was not run at 20ep


def test_settings_are_never_pooled_and_replays_stay_out_of_comparisons(handmade):
    for seed in range(2):
        _write_run(handmade, "a", seed, 9.0, 9.5, [(1.0, 1, 9.0)], args={"num_cpus": 1})
        _write_run(handmade, "replay", seed, 0.1, 0.1, [(1.0, 1, 0.1)], args={"schedule": "/x/toy/cpu/a/10ep/seed-0"})
    runs = load_runs([handmade])
    summary = summarize(runs)
    rows = summary.set_index("method")
    assert rows.loc["a", "val_loss.mean"] == pytest.approx(3.5) and rows.loc["a [num_cpus=1]", "n"] == 2
    table = to_markdown(runs)
    assert "| a [num_cpus=1] | 2 | 0 | 0 |" in table and "replay" not in table
    assert "replay" not in set(anytime(load_events([handmade]))["method"])


def test_schedules_are_read_from_reports(handmade):
    long = schedules(load_events([handmade]))
    assert set(long["method"]) == {"a"} and set(long["hyperparameter"]) == {"dropout"}
    assert sorted(long[long["seed"] == 0]["value"]) == pytest.approx([0.1, 0.2, 0.3])


def test_table_and_plot_commands_regenerate_files(handmade, tmp_path):
    out = tmp_path / "out"
    for args in (
        ["table", "--runs", str(handmade), "--format", "all", "--out", str(out)],
        ["plot", "--runs", str(handmade), "--out", str(out)],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "hpobench_stn", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    assert {
        "table.md",
        "table.tex",
        "table.csv",
        "paper-table.md",
        "anytime-toy-cpu-10ep-t.png",
        "anytime-toy-cpu-10ep-epochs.pdf",
        "schedules-toy-cpu-10ep.png",
    } <= names
    first = (out / "table.md").read_text()
    subprocess.run(
        [sys.executable, "-m", "hpobench_stn", "table", "--runs", str(handmade), "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (out / "table.md").read_text() == first


def test_analysis_never_imports_torch(handmade, tmp_path):
    code = (
        "import sys; from hpobench_stn.cli import main; "
        f"main(['table', '--runs', {str(handmade)!r}]); "
        f"main(['report', '--runs', {str(handmade)!r}, '--out', {str(tmp_path)!r}]); "
        "import analysis.curves, analysis.browser; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

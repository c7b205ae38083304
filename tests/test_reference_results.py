"""The committed reference results (results/reference) regenerate exactly from the committed run folders."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference"
TASKS = sorted(p.name for p in (REFERENCE / "runs").iterdir() if p.is_dir()) if (REFERENCE / "runs").is_dir() else []
FIX = "regenerate them with results/reference/regenerate.sh and commit the result"


def _cli(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hpobench_stn", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr


def test_reference_results_are_committed():
    assert {"quadratic", "ptb", "cifar"} <= set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_rank_and_time_to_quality_figures_are_committed(task):
    names = {p.name for p in (REFERENCE / task).iterdir()}
    for kind in ("rank", "ttq", "anytime"):
        assert any(n.startswith(f"{kind}-{task}-") and n.endswith(".png") for n in names), f"{kind}: {FIX}"
    if task == "quadratic":  # the task with a known optimum
        assert any(n.startswith("regret-quadratic-") for n in names), FIX
    assert (REFERENCE / "report.html").exists() and (REFERENCE / "report-first-screen.png").exists(), FIX
    assert (REFERENCE / "report-first-screen.png").stat().st_size < 300_000


@pytest.mark.parametrize("task", TASKS)
def test_committed_tables_regenerate_exactly(task, tmp_path):
    _cli("table", "--runs", f"results/reference/runs/{task}", "--format", "all", "--out", str(tmp_path))
    for table in sorted(tmp_path.iterdir()):
        committed = REFERENCE / task / table.name
        assert committed.exists(), f"{committed} is missing: {FIX}"
        assert table.read_text() == committed.read_text(), f"{committed} is stale: {FIX}"


def test_committed_paper_table_regenerates_exactly(tmp_path):
    _cli("table", "--runs", "results/reference/runs", "--format", "paper", "--out", str(tmp_path))
    assert (tmp_path / "paper-table.md").read_text() == (REFERENCE / "paper-table.md").read_text(), FIX


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_committed_figures_regenerate_exactly(task, tmp_path):
    _cli("plot", "--runs", f"results/reference/runs/{task}", "--out", str(tmp_path))
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made, "no figures"
    for name in made:
        committed = REFERENCE / task / name
        assert committed.exists(), f"{committed} is missing: {FIX}"
        assert (tmp_path / name).read_bytes() == committed.read_bytes(), f"{committed} differs: {FIX}"


@pytest.mark.slow
def test_committed_report_regenerates_exactly(tmp_path):
    _cli("report", "--runs", "results/reference/runs", "--out", str(tmp_path))
    assert (tmp_path / "report.html").read_bytes() == (REFERENCE / "report.html").read_bytes(), FIX

"""Schedule replay: fixed-configuration training that follows, or freezes, a stored STN schedule."""

import os
import shutil
from pathlib import Path

import pytest

from analysis.tables import replay_table
from hpobench_stn.errors import UserError
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.store import load_runs, read_events


@pytest.fixture(scope="module")
def stn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    spec = RunSpec("quadratic", "stn", seed=0, budget="1000ep", out=out, method_args={"epochs": 20})
    execute(spec, progress=False)
    return out, spec.path


def _configs(path):
    return [ev["config"] for ev in read_events(path) if ev["event"] == "report"]


def test_replay_follows_the_schedule(stn_run):
    out, source = stn_run
    reports = [ev for ev in read_events(source) if ev["event"] == "report"]
    start = next(ev for ev in read_events(source) if ev["event"] == "trial_start")
    names = list(start["config"])
    spec = RunSpec(
        "quadratic", "replay", seed=0, budget="200ep", out=out, method_args={"schedule": str(source), "epochs": 10}
    )
    summary = execute(spec, progress=False)
    configs = _configs(spec.path)
    assert len(configs) == 10 and summary["stop_reason"] == "finished"
    # 20 source epochs onto 10 replay epochs: replay epoch e uses the values in force during source epoch 2e
    assert configs[0] == start["config"]
    for e in range(1, 10):
        expected = {k: reports[2 * e - 1]["hparams"][k] for k in names}
        assert configs[e] == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["final", "best"])
def test_replay_holds_final_or_best_values(stn_run, mode):
    out, source = stn_run
    spec = RunSpec(
        "quadratic", "replay", seed=0, budget="200ep", out=out, method_args={"schedule": str(source), "mode": mode}
    )
    execute(spec, progress=False)
    configs = _configs(spec.path)
    stn_summary = execute(RunSpec("quadratic", "stn", seed=0, budget="200ep", out=out, method_args={"epochs": 20}))
    reports = [ev for ev in read_events(source) if ev["event"] == "report"]
    target = stn_summary["incumbent"]["hparams"] if mode == "best" else reports[-1]["hparams"]
    assert all(c == pytest.approx({k: target[k] for k in c}) for c in configs)
    assert len(configs) == 10  # the task's trial length


def test_replay_table_compares_the_three(stn_run):
    out, source = stn_run
    for mode in ("schedule", "final"):
        execute(
            RunSpec(
                "quadratic",
                "replay",
                seed=1,
                budget="200ep",
                out=out,
                method_args={"schedule": str(source), "mode": mode},
            ),
            progress=False,
        )
    table = replay_table(load_runs([out]))
    assert "quadratic/tiny/stn" in table and table.count("\n") == 3
    source_cell = table.splitlines()[2].split("|")[2]
    assert "/" in source_cell and "–" not in source_cell  # the STN run's own val / test losses
    longer = RunSpec(
        "quadratic", "replay", seed=1, budget="200ep", out=out, method_args={"schedule": str(source), "epochs": 20}
    )
    execute(longer, progress=False)
    elsewhere = RunSpec(  # the same source named by a relative path: still the same row
        "quadratic",
        "replay",
        seed=2,
        budget="200ep",
        out=out,
        method_args={"schedule": os.path.relpath(source), "epochs": 20},
    )
    execute(elsewhere, progress=False)
    rows = replay_table(load_runs([out])).splitlines()[2:]
    assert [row.split("|")[3].strip() for row in rows] == ["10", "20"]  # replay lengths are rows, never pooled
    assert rows[0] == table.splitlines()[2] and rows[1].split("|")[5].strip() == "–"  # only "schedule" at 20
    table = replay_table(load_runs([out]))
    moved = Path(out).parent / "moved-elsewhere"
    shutil.copytree(out, moved)  # run folders copied to another machine or folder: still matched
    assert replay_table(load_runs([moved])) == table


def test_replay_refuses_another_task_or_preset(stn_run, tmp_path):
    _, source = stn_run
    with pytest.raises(UserError, match="replay it on that task and preset"):
        execute(
            RunSpec(
                "quadratic", "replay", preset="cpu", budget="50ep", out=tmp_path, method_args={"schedule": str(source)}
            ),
            progress=False,
        )
    with pytest.raises(UserError, match="no run folder"):
        execute(
            RunSpec(
                "quadratic", "replay", budget="50ep", out=tmp_path, method_args={"schedule": str(tmp_path / "nowhere")}
            ),
            progress=False,
        )

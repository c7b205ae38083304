"""The harness: budget enforcement, reproducibility, robustness to failing trials and optimizers, resume."""

import json

import pytest

from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.store import MEASURED_FIELDS, load_events, load_runs, read_events

TIMING_FIELDS = MEASURED_FIELDS


def _events_without_timing(path):
    return [{k: v for k, v in ev.items() if k not in TIMING_FIELDS} for ev in read_events(path)]


@pytest.mark.parametrize("method", ["random", "grid"])
@pytest.mark.parametrize("budget", ["7ep", "23.5ep", "41ep"])
def test_epoch_budget_is_respected(tmp_path, method, budget):
    spec = RunSpec("quadratic", method, seed=3, budget=budget, out=tmp_path)
    summary = execute(spec, progress=False)
    limit = float(budget.removesuffix("ep"))
    assert summary["epochs"] <= limit
    events = read_events(spec.path)
    reports = [ev for ev in events if ev["event"] == "report"]
    assert all(ev["epochs"] <= limit for ev in events)
    # no more than one report's worth (one epoch) of budget is left unused, and no report beyond the budget
    assert limit - summary["epochs"] < 1.0 + 1e-9
    assert len(reports) == int(limit)
    assert summary["trials"] == -(-int(limit) // 10) or summary["trials"] == int(limit) // 10 + 1


def test_same_seed_same_log_different_seed_different_log(tmp_path):
    logs = []
    for seed, out in [(1, "a"), (1, "b"), (2, "c")]:
        spec = RunSpec("quadratic", "random", seed=seed, budget="35ep", out=tmp_path / out)
        execute(spec, progress=False)
        logs.append(_events_without_timing(spec.path))
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]
    assert [e["config"] for e in logs[0] if e["event"] == "trial_start"] != [
        e["config"] for e in logs[2] if e["event"] == "trial_start"
    ]


def test_run_folder_is_complete(tmp_path):
    spec = RunSpec("quadratic", "random", seed=0, budget="25ep", out=tmp_path)
    summary = execute(spec, progress=False)
    names = {p.name for p in spec.path.iterdir()}
    assert {"metadata.json", "events.jsonl", "summary.json", "COMPLETE"} <= names
    meta = json.loads((spec.path / "metadata.json").read_text())
    for key in ("task", "preset", "method", "method_settings", "seed", "budget", "versions", "git", "device"):
        assert key in meta
    assert meta["versions"]["torch"] and meta["seed"] == 0
    inc = summary["incumbent"]
    assert inc["val_loss"] == min(e["val_loss"] for e in read_events(spec.path) if e["event"] == "report")
    assert set(inc["test_metrics"]) == {"loss"} and summary["regret"] >= -1e-9
    runs = load_runs([tmp_path])
    assert len(runs) == 1 and runs.loc[0, "val_loss"] == inc["val_loss"]
    events = load_events([tmp_path])
    assert (events["event"] == "report").sum() == 25


def test_failures_divergence_and_optimizer_crashes_do_not_stop_the_study(tmp_path, test_registry):
    spec = RunSpec("faulty-quadratic", "crashy-random", seed=0, budget="200ep", out=tmp_path)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed"
    statuses = summary["trials_by_status"]
    assert statuses.get("failed", 0) > 0 and statuses.get("diverged", 0) > 0 and statuses.get("completed", 0) > 0
    events = read_events(spec.path)
    errors = [e for e in events if e["event"] == "optimizer_error"]
    assert {e["where"] for e in errors} == {"ask", "tell"}
    failed = [e for e in events if e["event"] == "trial_end" and e["status"] == "failed"]
    assert all("simulated crash inside a trial" in e["error"] for e in failed)
    assert summary["incumbent"]["config"]["penalty_0"] < 1.0


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    full = RunSpec("quadratic", "random", seed=5, budget="60ep", out=tmp_path / "full")
    expected = execute(full, progress=False)
    part = RunSpec("quadratic", "random", seed=5, budget="60ep", out=tmp_path / "part")
    execute(part, progress=False)
    # simulate a kill after trial 2 was half done: cut the log there and drop the completion marker
    lines = (part.path / "events.jsonl").read_text().splitlines()
    cut = [i for i, line in enumerate(lines) if json.loads(line)["event"] == "trial_start"][3] + 5
    (part.path / "events.jsonl").write_text("\n".join(lines[:cut]) + '\n{"event": "repo')
    for name in ("COMPLETE", "summary.json"):
        (part.path / name).unlink()
    resumed = execute(part, progress=False)
    assert resumed["incumbent"]["config"] == expected["incumbent"]["config"]
    assert resumed["val_loss"] == expected["val_loss"] and resumed["epochs"] == expected["epochs"]
    ends = [e["trial"] for e in read_events(part.path) if e["event"] == "trial_end"]
    assert ends == sorted(set(ends))


def test_complete_run_is_not_run_again(tmp_path):
    spec = RunSpec("quadratic", "random", seed=0, budget="15ep", out=tmp_path)
    first = execute(spec, progress=False)
    before = (spec.path / "events.jsonl").read_text()
    assert execute(spec, progress=False) == json.loads(json.dumps(first))
    assert (spec.path / "events.jsonl").read_text() == before


def test_grid_run_ends_when_the_grid_is_done(tmp_path):
    spec = RunSpec("quadratic", "grid", seed=0, budget="1000ep", out=tmp_path, method_args={"resolution": 1})
    summary = execute(spec, progress=False)
    assert summary["trials"] == 1 and summary["stop_reason"] == "exhausted"


@pytest.mark.slow
def test_random_search_regret_falls_with_budget(tmp_path):
    mean_regret = {}
    for budget in ("20ep", "800ep"):
        regrets = [
            execute(RunSpec("quadratic", "random", seed=s, budget=budget, out=tmp_path), progress=False)["regret"]
            for s in range(4)
        ]
        mean_regret[budget] = sum(regrets) / len(regrets)
    assert mean_regret["800ep"] < 0.5 * mean_regret["20ep"]


def test_runs_record_the_revision_the_process_started_with(tmp_path, monkeypatch):
    from hpobench_stn import metadata

    metadata.source_revision.cache_clear()
    monkeypatch.setattr(metadata, "git_revision", lambda: {"commit": "aaaa", "dirty": False})
    metadata.source_revision()  # what the command line does at start-up
    monkeypatch.setattr(metadata, "git_revision", lambda: {"commit": "bbbb", "dirty": True})  # checkout moved on
    try:
        execute(RunSpec("quadratic", "random", budget="2ep", out=tmp_path), progress=False)
        recorded = json.loads(next(tmp_path.rglob("metadata.json")).read_text())["git"]
    finally:
        metadata.source_revision.cache_clear()
    assert recorded == {"commit": "aaaa", "dirty": False}


def test_a_failed_run_is_not_complete_and_running_it_again_retries_it(tmp_path, test_registry, monkeypatch):
    spec = RunSpec("quadratic", "flaky-random", budget="4ep", out=tmp_path)
    monkeypatch.setenv("HPOBENCH_TEST_FLAKY", "1")
    first = execute(spec, progress=False)
    assert first["status"] == "failed" and "simulated start-up failure" in first["error"]
    assert (spec.path / "summary.json").exists() and not (spec.path / "COMPLETE").exists()
    runs = load_runs([tmp_path])  # tables count it as a failed seed (it is not complete: re-running retries it)
    assert len(runs) == 1 and runs["status"].iloc[0] == "failed" and not runs["complete"].iloc[0]
    monkeypatch.delenv("HPOBENCH_TEST_FLAKY")
    second = execute(spec, progress=False)
    assert second["status"] == "completed" and second["epochs"] == 4
    assert (spec.path / "COMPLETE").exists()
    assert any(e["event"] == "method_error" for e in read_events(spec.path))  # the failed attempt is kept


def test_archived_event_logs_read_the_same(tmp_path):
    from hpobench_stn.errors import UserError
    from hpobench_stn.store import archive_events

    spec = RunSpec("quadratic", "random", budget="4ep", out=tmp_path)
    execute(spec, progress=False)
    before = read_events(spec.path)
    archived = archive_events(spec.path)
    assert archived.name == "events.jsonl.gz" and not (spec.path / "events.jsonl").exists()
    assert read_events(spec.path) == before and len(load_events([tmp_path])) == len(before)
    (spec.path / "COMPLETE").unlink()
    with pytest.raises(UserError, match="not complete"):
        archive_events(spec.path)

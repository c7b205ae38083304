"""table / plot / report over damaged run folders: each damaged file is named on one warning line (with its line
for an event log), its run is left out, the rest is used; exit 2 with one error line when nothing usable remains;
never a traceback."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpobench_stn.store import RunStore, read_events
from tests.runfolders import write_run

ROOT = Path(__file__).resolve().parent.parent
REPORTS = [(1.0, 1, 3.0), (2.0, 2, 2.0), (3.0, 3, 1.0)]


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "hpobench_stn", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def _good(root):
    for method in ("a", "b"):
        for seed in range(2):
            write_run(root, method, seed, 1.0 + seed, 1.5, REPORTS)


def _damage(root, kind):
    """Add one run of method ``victim`` with one kind of damage; return the damaged file and what the warning must
    say about it."""
    run = write_run(root, "victim", 0, 0.1, 0.1, REPORTS)
    if kind == "summary":
        (run / "summary.json").write_text('{"status": "completed", "val_lo')
        return run / "summary.json", "not valid JSON"
    if kind == "metadata":
        (run / "metadata.json").write_text("\x00\x01 not json")
        return run / "metadata.json", "not valid JSON"
    if kind == "metadata-keys":
        (run / "metadata.json").write_text(json.dumps({"method": "victim"}))
        return run / "metadata.json", "lacks task, preset, seed, budget_text"
    log = run / "events.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:15] + "\n"  # torn in the middle: a later line follows it
    log.write_text("".join(lines))
    if kind == "events":
        return log, "line 2: not a JSON event"
    with open(run / "events.jsonl.gz", "wb") as fh:
        fh.write(gzip.compress(log.read_bytes()))
    log.unlink()
    return run / "events.jsonl.gz", "line 2: not a JSON event"


@pytest.mark.parametrize("kind", ["summary", "metadata", "metadata-keys", "events", "archived-events"])
def test_table_warns_about_each_damaged_file_and_leaves_its_run_out(tmp_path, kind):
    _good(tmp_path)
    damaged, reason = _damage(tmp_path, kind)
    result = _cli("table", "--runs", tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(damaged) in warnings[0] and reason in warnings[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "| a |" in result.stdout and "| b |" in result.stdout and "victim" not in result.stdout


def test_a_torn_last_line_is_a_normal_kill_and_dropped_silently(tmp_path):
    _good(tmp_path)
    run = write_run(tmp_path, "c", 0, 1.0, 1.5, REPORTS)
    with open(run / "events.jsonl", "a") as fh:
        fh.write('{"event": "report", "t": 4.0, "ep')
    assert len(read_events(run, strict=True)) == 3
    result = _cli("table", "--runs", tmp_path)
    assert result.returncode == 0 and result.stderr == "" and "| c |" in result.stdout


def test_plot_and_report_warn_and_go_on_with_the_rest(tmp_path):
    _good(tmp_path / "runs")
    damaged = [_damage(tmp_path / "runs" / kind, kind)[0] for kind in ("summary", "metadata", "events")]
    for command in ("plot", "report"):
        result = _cli(command, "--runs", tmp_path / "runs", "--out", tmp_path / command)
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 3 and "Traceback" not in result.stderr
        for path in damaged:
            assert sum(str(path) in line for line in warnings) == 1, (path, warnings)
    assert (tmp_path / "plot" / "anytime-toy-cpu-10ep-t.png").exists()
    page = (tmp_path / "report" / "report.html").read_text()
    assert "victim" not in page.split("Left out:")[1].split("</ul>")[1] and str(damaged[0]) in page


@pytest.mark.parametrize("command", ["table", "plot", "report"])
def test_nothing_usable_is_an_error(tmp_path, command):
    for kind in ("summary", "events"):
        _damage(tmp_path / kind, kind)
    result = _cli(command, "--runs", tmp_path, "--out", tmp_path / "out")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no usable runs" in errors[0] and "2 damaged" in errors[0]
    assert result.stderr.count("warning:") == 2 and "Traceback" not in result.stderr


def test_a_resumed_run_does_not_glue_its_first_event_to_a_torn_line(tmp_path):
    store = RunStore(tmp_path)
    store.event(event="run_start", t=0.0)
    store.close()
    with open(tmp_path / "events.jsonl", "a") as fh:
        fh.write('{"event": "rep')  # killed mid-write
    store = RunStore(tmp_path)
    store.event(event="run_start", t=1.0)
    store.close()
    assert [e["t"] for e in read_events(tmp_path, strict=True)] == [0.0, 1.0]

"""The command line: a run shows progress and leaves a run folder; bad input gives one line and exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpobench_stn.registry import method_names, task_names

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "hpobench_stn", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_run_shows_progress_and_stores_results(tmp_path):
    result = cli("run", "--task", "quadratic", "--method", "random", "--budget", "3s", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "% of budget" in result.stderr and "best" in result.stderr
    assert "quadratic/random seed 0: completed" in result.stdout
    run = tmp_path / "quadratic" / "tiny" / "random" / "3s" / "seed-0"
    assert {p.name for p in run.iterdir()} >= {"metadata.json", "events.jsonl", "summary.json", "COMPLETE"}


def test_threads_option_is_applied_and_recorded(tmp_path):
    result = cli(
        "run", "--task", "quadratic", "--method", "random", "--budget", "2ep", "--threads", "1", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    metadata = json.loads((tmp_path / "quadratic" / "tiny" / "random" / "2ep" / "seed-0" / "metadata.json").read_text())
    assert metadata["device"]["torch_threads"] == 1


def test_list_names_tasks_methods_presets():
    result = cli("list")
    assert result.returncode == 0
    for word in ("quadratic", "random", "grid", "--preset tiny", "--preset cpu", "--preset paper"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--task", "nope", "--method", "random"],
            "unknown task 'nope'; valid tasks: " + ", ".join(task_names()),
        ),
        (
            ["run", "--task", "quadratic", "--method", "nope"],
            "unknown method 'nope'; valid methods: " + ", ".join(method_names()),
        ),
        (["run", "--task", "quadratic", "--method", "random", "--budget", "ten"], "malformed budget 'ten'"),
        (["run", "--task", "quadratic", "--method", "random", "--preset", "huge"], "unknown preset 'huge'"),
        (
            ["run", "--task", "quadratic", "--method", "fixed", "--method-arg", "config={'penalty_0': 99.0}"],
            "'penalty_0' = 99.0 is outside its bounds [0.001, 10.0]",
        ),
        (
            ["run", "--task", "quadratic", "--method", "fixed", "--method-arg", "config={'penalty_x': 1}"],
            "unknown hyperparameter(s) 'penalty_x'",
        ),
        (
            ["run", "--task", "quadratic", "--method", "grid", "--method-arg", "colour=3"],
            "method 'grid' has no setting 'colour'; valid settings: start_at_default (bool); resolution (int >= 1); "
            "order",
        ),
        (["sweep", "--tasks", "quadratic", "--methods", "random", "--seeds", "a,b"], "malformed --seeds"),
        (["sweep", "--tasks", "quadratic", "--methods", "", "--seeds", "0"], "--methods is empty"),
        (["sweep", "--tasks", "quadratic", "--methods", "random", "--seeds", ""], "--seeds is empty"),
        (["sweep", "--tasks", " , ", "--methods", "random"], "--tasks is empty"),
        (["sweep", "--tasks", "quadratic", "--methods", "random", "--seeds", "0,-2"], "--seeds -2 is out of range"),
        (["run", "--task", "quadratic", "--method", "random", "--seed", "-1"], "--seed -1 is out of range"),
        (
            ["run", "--task", "quadratic", "--method", "fixed", "--method-arg", "config={'penalty_0': 0.1"],
            "malformed --method-arg \"config={'penalty_0': 0.1\": \"{'penalty_0': 0.1\" is not a Python literal",
        ),
        (
            ["run", "--task", "quadratic", "--method", "grid", "--method-arg", "resolution=abc"],
            "setting resolution='abc' is not allowed; resolution takes int >= 1",
        ),
        (
            ["run", "--task", "quadratic", "--method", "fixed", "--method-arg", "config=penalty_0"],
            "setting config='penalty_0' is not allowed; config takes dict, or None",
        ),
        (["run", "--task", "quadratic", "--method", "random", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "--task", "quadratic", "--method", "random", "--threads", "0"], "--threads must be at least 1"),
        (
            ["run", "--task", "quadratic", "--method", "random", "--data-dir", "/no/such/folder"],
            "data folder /no/such/folder does not exist",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    result = cli(*args, "--out", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("run", "--task", "quadratic", "--method", "random", "--out", str(blocker / "runs"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: cannot write to output folder")
    assert len(result.stderr.strip().splitlines()) == 1


def test_output_check_is_safe_for_runs_started_side_by_side(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from hpobench_stn.cli import _check_out

    with ThreadPoolExecutor(8) as pool:  # two sweeps started at once once deleted each other's probe file
        folders = list(pool.map(lambda _: _check_out(str(tmp_path / "runs")), range(400)))
    assert folders == [tmp_path / "runs"] * 400
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("lr=fast", "setting lr='fast' is not allowed; lr takes float > 0, or None"),
        ("hyper_lr=-1", "setting hyper_lr=-1.0 is out of range; hyper_lr takes float > 0, or None"),
        ("t_train=0", "t_train takes int >= 1"),
        ("tune_sigma=maybe", "tune_sigma takes bool, or None"),
    ],
)
def test_stn_settings_are_checked_before_any_run_folder_exists(tmp_path, setting, message):
    args = ["run", "--task", "quadratic", "--method", "stn", "--method-arg", setting, "--out", str(tmp_path / "out")]
    result = cli(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: method 'stn': ")
    assert message in lines[0], lines[0]
    assert not any((tmp_path / "out").rglob("metadata.json"))


@pytest.mark.slow
def test_demo_runs_stn_against_the_baselines_and_prints_the_table(tmp_path):
    result = cli("demo", "--budget", "3ep", "--seeds", "0", "--out", str(tmp_path), "--quiet", timeout=600)
    assert result.returncode == 0, result.stderr
    for method in ("stn", "random", "tpe", "asha [num_cpus=1]", "fixed"):
        assert f"| ptb | tiny | 3ep | {method}" in result.stdout
    assert "Mann-Whitney" in result.stdout and f"report --runs {tmp_path}" in result.stdout
    assert len(list(tmp_path.rglob("COMPLETE"))) == 5

"""The worked example task ``digits`` (examples/digits.py): both doors through the harness, its signature."""

import json
from pathlib import Path

import pytest

from examples.digits import DigitsTask
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.store import read_events

pytestmark = pytest.mark.usefixtures("one_thread")

SIGNATURES = json.loads((Path(__file__).parent / "signatures" / "digits.json").read_text())
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("preset", sorted(SIGNATURES))
def test_signature_has_not_drifted(preset):
    assert DigitsTask(preset).signature() == pytest.approx(SIGNATURES[preset], rel=1e-5)


def test_the_example_is_short_enough_to_show_whole():
    assert len((ROOT / "examples" / "digits.py").read_text().splitlines()) <= 80


def test_random_search_trains_the_plain_network(tmp_path):
    summary = execute(RunSpec("digits", "random", seed=0, budget="12ep", out=tmp_path), progress=False)
    assert summary["status"] == "completed" and summary["trials"] == 4
    assert summary["epochs"] == pytest.approx(12.0)
    assert summary["incumbent"]["test_metrics"].keys() == {"loss", "accuracy"}


@pytest.mark.parametrize(
    ("method", "args"),
    [("stn", {}), ("delta-stn", {}), ("delta-stn", {"linearize": True})],
)
def test_stn_methods_train_the_twin_and_store_a_schedule(tmp_path, method, args):
    spec = RunSpec("digits", method, seed=0, budget="100ep", out=tmp_path, method_args=args)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed" and summary["trials"] == 1
    test = summary["incumbent"]["test_metrics"]
    assert test.keys() == {"loss", "accuracy"} and test["accuracy"] > 0.5
    reports = [e for e in read_events(spec.path) if e["event"] == "report"]
    assert len(reports) == DigitsTask("tiny").stn_defaults()["epochs"]
    assert all({"dropout", "weight_decay", "sigma.dropout"} <= set(r["hparams"]) for r in reports)
    assert reports[0]["hparams"] != reports[-1]["hparams"]  # the schedule moved


def test_the_readme_shows_the_example_whole():
    source = (ROOT / "examples" / "digits.py").read_text()
    assert f"```python\n{source}```" in (ROOT / "README.md").read_text()

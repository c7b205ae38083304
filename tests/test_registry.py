"""The registry: lazy built-ins, and outside packages adding an optimizer through the entry-point group."""

import sys

import pytest

from hpobench_stn import registry
from hpobench_stn.errors import UserError
from hpobench_stn.harness import RunSpec, execute


@pytest.fixture
def outside_package(tmp_path, monkeypatch):
    """An installed-looking distribution that registers examples/local_search.py as 'local-search'."""
    dist = tmp_path / "my_optimizers-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-optimizers\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{registry.METHOD_GROUP}]\nlocal-search = examples.local_search:LocalSearch\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return dist


def test_entry_point_adds_a_method(outside_package, tmp_path):
    assert "local-search" in registry.method_names()
    cls = registry.get_method("local-search")
    assert cls.__name__ == "LocalSearch"
    summary = execute(RunSpec("quadratic", "local-search", seed=0, budget="100ep", out=tmp_path), progress=False)
    assert summary["trials"] == 10 and summary["regret"] >= 0


def test_builtins_are_imported_lazily():
    for module in ("baselines.grid", "tasks.quadratic.task"):
        sys.modules.pop(module, None)
    names = registry.method_names() + registry.task_names()
    assert "grid" in names and "quadratic" in names
    assert "baselines.grid" not in sys.modules and "tasks.quadratic.task" not in sys.modules


def test_unknown_names_list_valid_ones():
    with pytest.raises(UserError, match=r"unknown task 'ptb-xl'; valid tasks: .*quadratic"):
        registry.get_task("ptb-xl")
    with pytest.raises(UserError, match=r"unknown method 'bohb'; valid methods: .*random"):
        registry.get_method("bohb")

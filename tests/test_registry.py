"""The registry: lazy built-ins, and outside packages adding an optimizer through the entry-point group; a plugin
that fails to import or takes a built-in's name is reported, never a traceback."""

import sys
import textwrap

import pytest

from baselines.random_search import RandomSearch
from hpobench_stn import registry
from hpobench_stn.cli import main
from hpobench_stn.errors import UserError
from hpobench_stn.harness import RunSpec, execute

PLUGIN_MODULES = ("myplugin_methods", "myplugin_broken_task")
RUN = ["run", "--task", "quadratic", "--method", "random"]


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


@pytest.fixture
def myplugin(tmp_path, monkeypatch):
    """A real installed-looking distribution, ``myplugin 0.1``: one method that loads, one whose module is missing,
    a task whose module fails on import, and a method named like the built-in ``random``."""
    site = tmp_path / "site"
    dist = site / "myplugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""
            [{registry.METHOD_GROUP}]
            good-search = myplugin_methods:GoodSearch
            broken-search = myplugin_missing:Nope
            random = myplugin_methods:GoodSearch
            [{registry.TASK_GROUP}]
            broken-task = myplugin_broken_task:Task
            """
        )
    )
    (site / "myplugin_methods.py").write_text(
        "from examples.local_search import LocalSearch\n\n"
        "class GoodSearch(LocalSearch):\n    description = 'a plugin that loads'\n"
    )
    (site / "myplugin_broken_task.py").write_text("raise RuntimeError('this task needs a GPU driver')\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in PLUGIN_MODULES:
        sys.modules.pop(name, None)


def test_list_shows_what_loads_and_one_line_per_plugin_that_fails(myplugin, tmp_path, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.split()[:1] == ["good-search"] and "a plugin that loads" in line for line in out)
    for name in registry.BUILTIN_METHODS:
        assert any(line.split()[:1] == [name] and "FAILED" not in line for line in out), name
    (broken,) = [line for line in out if line.split()[:1] == ["broken-search"]]
    assert "FAILED" in broken and "package myplugin" in broken
    assert "ModuleNotFoundError: No module named 'myplugin_missing'" in broken
    (task,) = [line for line in out if line.split()[:1] == ["broken-task"]]
    assert "package myplugin" in task and "RuntimeError: this task needs a GPU driver" in task
    assert "--preset tiny" in "\n".join(out)  # the built-in tasks are still listed with their presets


def test_a_plugin_named_like_a_built_in_is_refused_and_says_so(myplugin, tmp_path, capsys):
    assert registry.get_method("random") is RandomSearch
    (line,) = registry.refused_plugins()
    assert line.startswith("method 'random' of package myplugin is refused: it shadows the built-in method")
    assert main(["list"]) == 0
    assert line in capsys.readouterr().out
    rc = main([*RUN, "--budget", "2ep", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 0 and f"warning: {line}; the built-in runs" in err


def test_running_a_broken_plugin_gives_one_error_line_with_its_import_error(myplugin, tmp_path, capsys):
    rc = main(["run", "--task", "quadratic", "--method", "broken-search", "--out", str(tmp_path / "runs")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and line.startswith("error: method 'broken-search' of package myplugin")
    assert "ModuleNotFoundError: No module named 'myplugin_missing'" in line and "fix or uninstall" in line
    rc = main(["run", "--task", "broken-task", "--method", "random", "--out", str(tmp_path / "runs")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "task 'broken-task' of package myplugin" in line and "RuntimeError" in line
    assert list((tmp_path / "runs").iterdir()) == []

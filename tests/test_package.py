"""The installed package: its public API and version, what it installs, and the README's worked example."""

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import hpobench_stn

ROOT = Path(__file__).resolve().parent.parent


def test_public_api_and_version():
    assert hpobench_stn.__version__ == importlib.metadata.version("hpobench-stn")
    for name in hpobench_stn.__all__:
        assert getattr(hpobench_stn, name) is not None, name
    assert hpobench_stn.RunSpec.__module__ == "hpobench_stn.harness"


def test_importing_the_package_loads_no_torch():
    code = "import sys, hpobench_stn, hpobench_stn.store; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_examples_are_not_installed_as_a_top_level_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pattern.startswith("examples") for pattern in included)
    assert {"hpobench_stn*", "baselines*", "tasks*", "analysis*"} <= set(included)


def test_the_readme_shows_the_optimizer_example_whole():
    assert (ROOT / "examples" / "local_search.py").read_text() in (ROOT / "README.md").read_text()

"""Shared fixtures: test-only tasks and methods registered for the duration of a test."""

import pytest

from hpobench_stn import registry


@pytest.fixture
def test_registry(monkeypatch):
    """Registers the faulty task and optimizer of ``faulty.py`` beside the built-ins."""
    monkeypatch.setitem(registry.BUILTIN_TASKS, "faulty-quadratic", "faulty:FaultyQuadratic")
    monkeypatch.setitem(registry.BUILTIN_TASKS, "doorless-quadratic", "faulty:DoorlessQuadratic")
    monkeypatch.setitem(registry.BUILTIN_METHODS, "crashy-random", "faulty:CrashyRandom")
    monkeypatch.setitem(registry.BUILTIN_METHODS, "flaky-random", "faulty:FlakyRandom")
    return registry


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module's small networks (on a shared CPU, spinning OpenMP threads made such
    tests several times slower); restored afterwards. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Delta-STN's linearised variant on the neural-network tasks: it runs, and its elementary loss is the plain loss at
the centre (gates and regularisers at λ)."""

import pytest
import torch

from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.registry import build_task
from hpobench_stn.stn.settings import DeltaStnSettings
from hpobench_stn.stn.trainer import StnTrainer
from hpobench_stn.store import read_events

TASKS = ["ptb", "cifar"]


# slow on PTB: its STN LSTM runs the recurrence as an autograd loop under torch.func.jvp
@pytest.mark.parametrize("task", [pytest.param("ptb", marks=pytest.mark.slow), "cifar"])
def test_linearised_delta_stn_completes_on_the_tiny_preset(task, tmp_path):
    args = {"linearize": True, "epochs": 2}
    spec = RunSpec(task, "delta-stn", seed=0, budget="20ep", out=tmp_path, method_args=args, threads=1)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed", summary.get("error")
    assert summary["stop_reason"] == "finished" and summary["epochs"] <= 20
    reports = [e for e in read_events(spec.path) if e["event"] == "report"]
    assert [r["epoch"] for r in reports] == [1, 2] and summary["incumbent"]["test_metrics"]
    assert all(r["hparams"] != reports[0]["hparams"] for r in reports[1:])  # λ moved after the warm-up epoch


def _generators(problem):
    return [g for g in (getattr(problem, "noise", None), getattr(problem, "mask_generator", None)) if g is not None]


@pytest.mark.parametrize("task", TASKS)
def test_linearised_elementary_loss_is_the_plain_loss_at_the_centre(task):
    task = build_task(task, "tiny")
    problem = task.stn_problem(0)
    settings = DeltaStnSettings(linearize=True).resolved(problem, task.max_epochs, delta=True)
    trainer = StnTrainer(problem, settings, 0)
    batch = next(iter(problem.train_batches(torch.Generator().manual_seed(0))))
    states = [g.get_state() for g in _generators(problem)]
    problem.model.train()
    gates, values = trainer.centre_gates(problem.batch_size(batch))
    expected = problem.loss(batch, gates, values, train=True).detach()  # dropout and augmentation at λ itself
    for generator, state in zip(_generators(problem), states, strict=True):
        generator.set_state(state)  # the same masks and augmentations again
    assert torch.equal(trainer.train_step(batch, BudgetMeter(Budget(epochs=1e6), task.train_size)), expected)

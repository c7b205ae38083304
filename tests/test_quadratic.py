"""The quadratic task: closed form, exact optimum, SGD trials, checkpoint/restore, signature."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hpobench_stn.budget import Budget, BudgetMeter
from tasks.quadratic.task import QuadraticTask

SIGNATURES = {"quadratic": json.loads((Path(__file__).parent / "signatures" / "quadratic.json").read_text())}


@pytest.mark.parametrize("preset", sorted(SIGNATURES["quadratic"]))
def test_signature_has_not_drifted(preset):
    assert QuadraticTask(preset).signature() == pytest.approx(SIGNATURES["quadratic"][preset], rel=1e-6)


def test_best_penalties_differ_per_feature_and_optimum_is_optimal():
    task = QuadraticTask("tiny")
    penalties, value = task.optimum()
    assert max(penalties) / min(penalties) > 100  # the best penalty differs per feature
    cf = task.closed_form
    rng = np.random.default_rng(0)
    for _ in range(300):
        assert cf.val_loss(task.penalties(task.space.sample(rng))) >= value - 1e-9
    grad = cf.hypergradient_log(torch.tensor(np.log(penalties)))
    interior = (np.array(penalties) > 1.01e-3) & (np.array(penalties) < 9.9)
    assert torch.all(grad[torch.from_numpy(interior)].abs() < 1e-4)


def test_sgd_training_approaches_the_closed_form():
    task = QuadraticTask("tiny")
    penalties, _ = task.optimum()
    config = dict(zip(task.space.names, penalties, strict=True))
    result = task.train(config, epochs=60, seed=0)
    assert result.status == "completed" and result.epochs_trained == 60
    assert result.best_val_loss == pytest.approx(task.closed_form.val_loss(penalties), rel=0.02)


def test_checkpoint_restore_continues_exactly():
    task = QuadraticTask("tiny")
    config = task.space.default()
    meter = BudgetMeter(Budget(epochs=100), task.train_size)
    straight = task.make_trial(config, seed=4)
    for _ in range(6):
        straight.train_epoch(meter)
    first = task.make_trial(config, seed=4)
    for _ in range(3):
        first.train_epoch(meter)
    state = first.state_dict()
    second = task.make_trial(config, seed=99)
    second.load_state_dict(state)
    reports = [second.train_epoch(meter).val_loss for _ in range(3)]
    assert second.epoch == 6
    assert torch.equal(second.w, straight.w) and reports[-1] == straight._evaluate("val")["loss"]


def test_train_callback_can_stop_and_reports_cost():
    task = QuadraticTask("tiny")
    seen = []
    result = task.train(task.space.default(), seed=1, callback=lambda r: seen.append(r.epoch) or r.epoch < 4)
    assert result.status == "stopped" and seen == [1, 2, 3, 4] and result.epochs_trained == 4
    assert result.cost_epochs == pytest.approx(4.0) and set(result.test_metrics) == {"loss"}


def test_divergence_is_reported():
    task = QuadraticTask("tiny")
    trial = task.make_trial(task.space.default(), seed=0)
    trial.w.fill_(float("nan"))
    report = trial.train_epoch(BudgetMeter(Budget(epochs=5), task.train_size))
    assert report.diverged

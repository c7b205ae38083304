"""Budget parsing and the meter's enforcement."""

import pytest

from hpobench_stn.budget import Budget, BudgetExhausted, BudgetMeter
from hpobench_stn.clock import ManualClock
from hpobench_stn.errors import UserError


@pytest.mark.parametrize(
    ("text", "seconds", "epochs"),
    [
        ("90s", 90, None),
        ("15m", 900, None),
        ("2h", 7200, None),
        ("20ep", None, 20),
        ("1.5m,3ep", 90, 3),
        ("0.5ep", None, 0.5),
    ],
)
def test_parse(text, seconds, epochs):
    budget = Budget.parse(text)
    assert budget.seconds == seconds and budget.epochs == epochs
    assert Budget.parse(str(budget)) == budget


@pytest.mark.parametrize("text", ["", "90", "ten minutes", "5x", "-3s", "0s", "3s,4s", "ep", "1m,2ep,3h"])
def test_malformed(text):
    with pytest.raises(UserError, match="budget"):
        Budget.parse(text)


def test_epoch_budget_is_never_exceeded():
    meter = BudgetMeter(Budget(epochs=2.5), train_size=100)
    charged = 0
    with pytest.raises(BudgetExhausted):
        while True:
            meter.charge(32)
            charged += 32
    assert charged <= 250 and charged > 250 - 32
    assert (meter.examples == charged and meter.exhausted is False) or meter.epochs <= 2.5


def test_paused_time_is_not_charged():
    clock = ManualClock()
    meter = BudgetMeter(Budget(seconds=100), train_size=1, clock=clock)
    clock.advance(3)
    with meter.paused():
        clock.advance(50)
        with meter.paused():  # nested pauses count once
            clock.advance(10)
    assert meter.elapsed == 3


def test_the_seconds_budget_ends_by_the_injected_clock():
    clock = ManualClock()
    meter = BudgetMeter(Budget(seconds=10), train_size=1, clock=clock)
    meter.charge(1)
    clock.advance(9.5)
    meter.charge(1)  # still within the budget
    assert not meter.exhausted and meter.fraction() == pytest.approx(0.95)
    clock.advance(0.5)
    assert meter.exhausted
    with pytest.raises(BudgetExhausted):
        meter.charge(1)
    assert meter.examples == 2


def test_costed_examples_spend_the_epoch_budget_faster():
    meter = BudgetMeter(Budget(epochs=1), train_size=100)
    meter.charge(40, cost=2.0)  # 40 examples of a network twice as costly as the fixed one
    assert meter.epochs == 0.8 and meter.examples == 40 and meter.raw_epochs == 0.4
    with pytest.raises(BudgetExhausted):
        meter.charge(20, cost=2.0)
    meter.charge(20)
    assert meter.epochs == 1.0 and meter.exhausted


def test_resumed_meter_starts_from_what_was_spent():
    meter = BudgetMeter(Budget(epochs=3), train_size=10, spent_examples=25, spent_seconds=7.0, clock=ManualClock())
    assert meter.epochs == 2.5 and meter.elapsed == 7.0
    meter.charge(5)
    with pytest.raises(BudgetExhausted):
        meter.charge(1)


def test_costed_charges_and_a_refused_charge_exhausts_the_meter():
    meter = BudgetMeter(Budget(epochs=1), train_size=100)
    meter.charge(30, cost=2.5)
    assert meter.examples == 30 and meter.raw_epochs == 0.3 and meter.epochs == 0.75
    assert not meter.exhausted
    with pytest.raises(BudgetExhausted):
        meter.charge(20, cost=2.5)  # 50 units do not fit in the 25 left
    assert meter.exhausted and meter.epochs == 0.75  # what is left is less than a minibatch: the run is over

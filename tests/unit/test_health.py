"""Health machines: the transition table, thresholds, and replay."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.health import LEGAL_MOVES, Health, HealthMachine, IllegalTransition, Step, replay


def feed(machine: HealthMachine, outcomes: str, start: float = 0.0) -> list[Health]:
    """Feed 'o' (ok) / 'x' (fail) characters one second apart; return the state after each."""
    states = []
    for i, ch in enumerate(outcomes):
        machine.observe(ch == "o", start + i, "ok" if ch == "o" else "boom")
        states.append(machine.state)
    return states


@pytest.mark.parametrize(
    ("outcomes", "final"),
    [
        ("", Health.UNKNOWN),
        ("o", Health.UNKNOWN),
        ("oo", Health.UP),
        ("xx", Health.UNKNOWN),
        ("xxx", Health.DOWN),
        ("ooxxx", Health.DOWN),
        ("ooxxo", Health.UP),
        ("ooxxxo", Health.DOWN),
        ("ooxxxoo", Health.UP),
        ("ooxoxoxxo", Health.UP),
        ("xxxoxo", Health.DOWN),
    ],
)
def test_table(outcomes: str, final: Health) -> None:
    """With thresholds 3/2 each sequence ends in the expected state."""
    machine = HealthMachine(3, 2)
    feed(machine, outcomes)
    assert machine.state is final


def test_change_reports_previous_and_reason() -> None:
    """The observation that completes a threshold returns the change with its reason."""
    machine = HealthMachine(2, 1)
    assert machine.observe(True, 1.0, "200") is not None
    assert machine.observe(False, 2.0, "connect refused") is None
    change = machine.observe(False, 3.0, "connect refused")
    assert change is not None
    assert (change.previous, change.current, change.at, change.reason) == (
        Health.UP, Health.DOWN, 3.0, "connect refused")
    assert machine.since == 3.0
    assert machine.describe() == "2/2 failures: connect refused"


def test_illegal_transition_raises() -> None:
    """A move the table lacks (DOWN -> UNKNOWN, UP -> UP) raises instead of passing silently."""
    machine = HealthMachine()
    feed(machine, "xxx")
    with pytest.raises(IllegalTransition):
        machine.force(Health.UNKNOWN, 9.0, "restore")
    feed(machine, "oo", 10)
    with pytest.raises(IllegalTransition):
        machine.force(Health.UP, 20.0, "again")
    assert (Health.UP, Health.UNKNOWN) not in LEGAL_MOVES


def test_thresholds_must_be_positive() -> None:
    """A zero threshold is refused at construction."""
    with pytest.raises(ValueError, match="thresholds"):
        HealthMachine(0, 2)


outcome_lists = st.lists(st.booleans(), max_size=200)
thresholds = st.integers(min_value=1, max_value=6)


@settings(max_examples=300, deadline=None)
@given(outcome_lists, thresholds, thresholds)
def test_never_down_without_threshold_consecutive_failures(
        outcomes: list[bool], failure_threshold: int, success_threshold: int) -> None:
    """Every move to DOWN is preceded by exactly failure_threshold (or more) failures in a row."""
    machine = HealthMachine(failure_threshold, success_threshold)
    run = 0
    for i, ok in enumerate(outcomes):
        run = 0 if ok else run + 1
        change = machine.observe(ok, float(i))
        if change is not None and change.current is Health.DOWN:
            assert run >= failure_threshold
        if machine.state is Health.DOWN and change is not None:
            assert not ok


@settings(max_examples=300, deadline=None)
@given(outcome_lists, thresholds, thresholds)
def test_single_success_resets_failure_count(
        outcomes: list[bool], failure_threshold: int, success_threshold: int) -> None:
    """After any success the failure count is zero; after any failure the success count is zero."""
    machine = HealthMachine(failure_threshold, success_threshold)
    for i, ok in enumerate(outcomes):
        machine.observe(ok, float(i))
        if ok:
            assert machine.consecutive_failures == 0
        else:
            assert machine.consecutive_successes == 0


@settings(max_examples=200, deadline=None)
@given(outcome_lists, thresholds, thresholds)
def test_history_replays_to_the_same_state(
        outcomes: list[bool], failure_threshold: int, success_threshold: int) -> None:
    """Replaying the recorded steps rebuilds the same state and counters."""
    machine = HealthMachine(failure_threshold, success_threshold, history=len(outcomes) + 1)
    for i, ok in enumerate(outcomes):
        machine.observe(ok, float(i), "r")
    again = replay(tuple(machine.history), failure_threshold, success_threshold)
    assert (again.state, again.consecutive_failures, again.consecutive_successes, again.since) == (
        machine.state, machine.consecutive_failures, machine.consecutive_successes, machine.since)


def test_replay_of_explicit_steps() -> None:
    """A hand-written history replays to DOWN at the third failure's time."""
    steps = [Step(1, True, "a"), Step(2, True, "a"), Step(3, False, "b"), Step(4, False, "b"),
             Step(5, False, "b")]
    machine = replay(steps)
    assert machine.state is Health.DOWN
    assert machine.since == 5

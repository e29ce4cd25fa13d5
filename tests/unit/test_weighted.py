"""The weighted-move planner: steps, holds, health, roll back; pure, on an injected time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.weighted import Decision, Phase, ShiftState, WeightedPlan, decide

PLAN = WeightedPlan("azure", "gcp", (10, 50, 100), hold_s=60.0, checks_needed=2)


def run(plan: WeightedPlan, checks: list[bool | None], every: float = 20.0) -> list[Decision]:
    """Drive ``decide`` with one health result per ``every`` seconds until the plan finishes."""
    now, state, seen = 0.0, ShiftState(), []
    decision = decide(plan, state, now, None)
    seen.append(decision)
    for healthy in checks:
        if decision.finished:
            break
        now += every
        decision = decide(plan, decision.state, now, healthy)
        seen.append(decision)
    return seen


def test_a_healthy_failback_walks_every_step_then_is_done() -> None:
    """10 -> 50 -> 100 %, each held 60 s with two healthy checks, then done at 100 % to the target."""
    seen = run(PLAN, [True] * 20)
    written = [d.weights for d in seen if d.weights]
    assert written == [{"gcp": 10, "azure": 90}, {"gcp": 50, "azure": 50}, {"gcp": 100, "azure": 0}]
    assert seen[-1].state.phase is Phase.DONE and seen[-1].message == "failback done: 100 % to gcp after 3 step(s)"


def test_an_unhealthy_check_rolls_back_at_once() -> None:
    """The first failed check, at any step, writes 100 % to the source and stops."""
    seen = run(PLAN, [True, True, True, False, True])
    assert seen[-1].weights == {"gcp": 0, "azure": 100} and seen[-1].state.phase is Phase.ROLLED_BACK
    assert seen[-1].message == "gcp unhealthy at 50 %: rolled back, 100 % to azure"


def test_no_health_report_is_no_progress() -> None:
    """Time alone does not move a step: without healthy checks the hold goes on."""
    seen = run(PLAN, [None] * 10)
    assert [d.weights for d in seen if d.weights] == [{"gcp": 10, "azure": 90}]
    assert seen[-1].state.phase is Phase.HOLD and "2 healthy check(s) to go" in seen[-1].message


def test_a_canary_ends_back_at_the_source() -> None:
    """A 1 % canary held and healthy ends with 100 % back to the source, FINISHED."""
    canary = WeightedPlan("gcp", "azure", (1,), hold_s=30.0, checks_needed=1, kind="canary")
    seen = run(canary, [True] * 5)
    assert [d.weights for d in seen if d.weights] == [{"azure": 1, "gcp": 99}, {"azure": 0, "gcp": 100}]
    assert seen[-1].state.phase is Phase.FINISHED


@pytest.mark.parametrize(("plan", "problem"), [
    (WeightedPlan("a", "a"), "same site"),
    (WeightedPlan("a", "b", (50, 10, 100)), "grow strictly"),
    (WeightedPlan("a", "b", (10, 50)), "ends at 100"),
    (WeightedPlan("a", "b", (0, 100)), "1..100"),
])
def test_unusable_plans_are_refused_with_the_reason(plan: WeightedPlan, problem: str) -> None:
    """A plan with a wrong step list is refused by decide, naming the problem."""
    with pytest.raises(ValueError, match=problem):
        decide(plan, ShiftState(), 0.0, None)


@given(st.lists(st.sampled_from([True, False, None]), max_size=60))
def test_weights_always_sum_to_100_and_only_grow_until_a_rollback(checks: list[bool | None]) -> None:
    """Whatever the health sequence: weights sum to 100, the target's share never shrinks except to 0 on a
    rollback, and a terminal state is never left."""
    seen = run(PLAN, checks)
    shares = [d.weights["gcp"] for d in seen if d.weights]
    assert all(sum(d.weights.values()) == 100 for d in seen if d.weights)
    growing = shares[:-1] if seen[-1].state.phase is Phase.ROLLED_BACK else shares
    assert growing == sorted(growing)
    if seen[-1].state.phase is Phase.ROLLED_BACK:
        assert shares[-1] == 0
    assert decide(PLAN, seen[-1].state, 1e9, True).weights is None or not seen[-1].finished

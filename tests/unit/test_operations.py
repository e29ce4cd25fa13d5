"""The operation lifecycle is a table (engine.core.operations): every pair of state and event is either
a listed transition or an IllegalTransition, never a silent no-op."""

from __future__ import annotations

import itertools

import pytest

from engine.core.operations import (
    FINAL,
    OPEN,
    TRANSITIONS,
    IllegalTransition,
    Operation,
    OpEvent,
    OpState,
    next_state,
)

EXPECTED = {
    (OpState.REQUESTED, OpEvent.CLAIM): OpState.RUNNING,
    (OpState.RUNNING, OpEvent.FINISH): OpState.DONE,
    (OpState.RUNNING, OpEvent.STAND_DOWN): OpState.STOOD_DOWN,
    (OpState.RUNNING, OpEvent.HALT): OpState.HALTED,
    (OpState.RUNNING, OpEvent.RESUME): OpState.RUNNING,
    (OpState.HALTED, OpEvent.RESTORE): OpState.HALTED,
    (OpState.HALTED, OpEvent.RETRY): OpState.RUNNING,
    (OpState.HALTED, OpEvent.ABORT): OpState.ABORTED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(OpState, OpEvent)))
def test_every_pair_of_the_whole_table(state: OpState, event: OpEvent) -> None:
    """Each (state, event) either moves as the lifecycle says or raises IllegalTransition naming what is allowed."""
    if (state, event) in EXPECTED:
        assert next_state(state, event) is EXPECTED[(state, event)]
    else:
        with pytest.raises(IllegalTransition) as caught:
            next_state(state, event)
        assert str(state) in str(caught.value) and str(event) in str(caught.value)


def test_the_table_is_exactly_the_lifecycle() -> None:
    """No transition beyond the documented ones."""
    assert dict(TRANSITIONS) == EXPECTED


def test_final_states_have_no_way_out_and_open_ones_block() -> None:
    """done, stood_down and aborted are final; running and halted are the open states that block a new move."""
    assert all(s not in {k[0] for k in TRANSITIONS} for s in FINAL)
    assert {OpState.RUNNING, OpState.HALTED} == OPEN
    assert OPEN.isdisjoint(FINAL)


def test_an_operation_advances_and_reports_the_step_under_way() -> None:
    """advance() applies the table to the operation; current_step names the step journaled started."""
    op = Operation("api-e2-1", "api", "failover", "gcp", "azure", 1, 2, "auto")
    assert op.is_open
    op.steps = {"precheck": {"state": "done"}, "fence": {"state": "started"}}
    assert op.current_step() == "fence"
    assert op.advance(OpEvent.HALT) is OpState.HALTED
    with pytest.raises(IllegalTransition):
        op.advance(OpEvent.FINISH)
    assert op.advance(OpEvent.ABORT) is OpState.ABORTED and not op.is_open

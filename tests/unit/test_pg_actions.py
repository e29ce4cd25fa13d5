"""Pure parts of the database actions: sequence targets and step summaries that never hide a partial result."""

from __future__ import annotations

import pytest

from actions.database.results import Step, summarize
from actions.database.sequences import target_value


@pytest.mark.parametrize(("max_value", "last", "called", "margin", "expected"), [
    (50, 1, False, 100, 150),       # fresh sequence on a promoted standby
    (50, 150, True, 100, None),     # already moved: a second run changes nothing
    (50, 400, True, 100, None),     # ahead already: never moved back
    (None, 1, False, 100, None),    # empty table: nothing to do
    (50, 1, False, 0, 50),          # no margin: next value is max + 1
    (50, 50, False, 0, 50),         # not yet called: nextval would return 50, a duplicate
    (50, 51, False, 0, None),       # nextval returns 51: fine
])
def test_sequence_target(max_value: int | None, last: int, called: bool, margin: int, expected: int | None) -> None:
    """The sequence moves to max + margin only when it is behind, and never backwards."""
    assert target_value(max_value, last, called, margin, 2**63 - 1) == expected


def test_sequence_target_is_capped_by_the_sequence_maximum() -> None:
    """A margin past the sequence's maximum stops at the maximum (but never below max(column))."""
    assert target_value(100, 1, False, 1000, 500) == 500
    assert target_value(600, 1, False, 1000, 500) == 600


def test_partial_outcome_names_what_failed_and_what_was_done() -> None:
    """A failed step makes the result not ok and the sentence lists failures first, then what was done."""
    steps = [Step("subscription", "ok", "disabled"), Step("sequences", "failed", "statement timeout")]
    result = summarize("promotion", "azure", steps, required=("subscription", "sequences", "writes"))
    assert not result.ok
    assert result.sentence == "promotion of azure incomplete: sequences failed (statement timeout); done: subscription"


def test_missing_required_step_is_reported() -> None:
    """A required step that never ran makes the result incomplete even without a failure."""
    result = summarize("promotion", "azure", [Step("subscription", "ok", "disabled")],
                       required=("subscription", "writes"))
    assert not result.ok and result.sentence == "promotion of azure incomplete: not done: writes; done: subscription"


def test_complete_outcome_lists_every_step() -> None:
    """All steps ok (or skipped) give an ok result whose sentence says what each did."""
    steps = [Step("subscription", "skipped", "not found"), Step("writes", "ok", "new sessions may write")]
    result = summarize("promotion", "azure", steps, required=("subscription", "writes"))
    assert result.ok and result.sentence == ("promotion of azure done: subscription: not found; "
                                             "writes: new sessions may write")
    assert result.to_dict()["steps"][1] == {"name": "writes", "status": "ok", "detail": "new sessions may write",
                                            "seconds": 0.0}


def test_a_subscription_points_at_the_old_primary_by_either_address() -> None:
    """Host and port as configured, or the replication address, in single- or multi-host strings."""
    from actions.database.promote import points_at
    from engine.config.database import PgConnection

    gcp = PgConnection(host="10.0.0.5", port=5432, dbname="app", user="u", replication_host="gcp.internal",
                       replication_port=6432)
    assert points_at("host=10.0.0.5 port=5432 dbname=app", gcp)
    assert points_at("host=gcp.internal port=6432 dbname=other user=r password=x", gcp)
    assert points_at("host=elsewhere,gcp.internal port=5432,6432", gcp)
    assert not points_at("host=10.0.0.5 port=5433 dbname=app", gcp)
    assert not points_at("host=azure.example port=5432", gcp)
    assert points_at("this is = not a conninfo '", gcp)  # unreadable: assume the worst

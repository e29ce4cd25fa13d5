"""The cause of each difference after a failover: lost, written after promotion, or diverged."""

from __future__ import annotations

import pytest

from actions.reconcile.causes import PromotionPoint, cause, count_causes
from actions.reconcile.plan import RowDiff

ONLY_NEW, ONLY_OLD, CHANGED = "missing_on_standby", "missing_on_primary", "changed"


@pytest.mark.parametrize(("kind", "new_after", "old_after", "expected"), [
    (CHANGED, True, False, "after_promotion"),
    (CHANGED, False, False, "diverged"),
    (CHANGED, None, None, "diverged"),
    (CHANGED, True, True, "diverged"),
    (ONLY_NEW, True, None, "after_promotion"),
    (ONLY_NEW, False, None, "lost"),
    (ONLY_NEW, None, None, "lost"),
    (ONLY_OLD, None, False, "lost"),
    (ONLY_OLD, None, None, "lost"),
    (ONLY_OLD, True, None, "after_promotion"),
    (ONLY_OLD, None, True, "diverged"),
])
def test_cause_table(kind: str, new_after: bool | None, old_after: bool | None, expected: str) -> None:
    """Only proof of a write after promotion makes a difference expected; unknown never hides a loss."""
    assert cause(kind, new_after, old_after) == expected  # type: ignore[arg-type]


def test_counts_have_every_cause() -> None:
    """Counting gives every cause, zero included, and ignores rows without one."""
    diffs = [RowDiff((1,), "changed", cause="lost"), RowDiff((2,), "changed", cause="lost"), RowDiff((3,), "changed")]
    assert count_causes(diffs) == {"lost": 2, "after_promotion": 0, "diverged": 0}


def test_promotion_point_round_trips_through_the_journal() -> None:
    """The point the runbook journals comes back the same; an empty one is unknown."""
    point = PromotionPoint(at=1700000000.5, xid=123456789012, lsn="0/3000A28")
    assert PromotionPoint.from_dict(point.to_dict()) == point and point.known
    assert not PromotionPoint().known

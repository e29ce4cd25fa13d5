"""Pure: why a row differs after a failover — lost, written after promotion, or diverged.

After a failover the reconciliation runs with the *new* primary as its primary and the old one as
its standby; replication has stopped, so nothing is in flight. Each difference gets a cause from
two facts about the row, both relative to the **promotion point** (:class:`PromotionPoint`, given
by the runbook):

- ``new_after``: the new primary's version of the row was written after promotion (its ``xmin``
  is at or past the promotion's next transaction id; or its ``updated_at``/commit timestamp is
  later than the promotion time). None when unknown.
- ``old_after``: the old primary's version was written after promotion (a write the fence did not
  stop; from ``updated_at`` or the commit timestamp). None when unknown.

| difference                         | old_after | new_after | cause            |
|------------------------------------|-----------|-----------|------------------|
| any                                | True      | any       | diverged         |
| changed (on both, different)       | -         | True      | after_promotion  |
| changed                            | -         | not True  | diverged         |
| only on the new primary            | -         | True      | after_promotion  |
| only on the new primary            | -         | not True  | lost (a delete on the old primary that never arrived) |
| only on the old primary            | -         | True      | after_promotion (deleted on the new primary) |
| only on the old primary            | -         | not True  | lost (committed before promotion, never arrived) |

Unknown counts as not proven: a row is called ``after_promotion`` only with proof, so a possible
loss is never hidden (a delete on the new primary after promotion leaves no row to date: without
the reverse slot's keys it is reported as lost, and kept in the quarantine at failback).
``lost`` and ``diverged`` rows are what the data-loss verdict counts and failback quarantines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from actions.reconcile.plan import Kind, RowDiff

Cause = Literal["lost", "after_promotion", "diverged"]
CAUSES: tuple[Cause, ...] = ("lost", "after_promotion", "diverged")


@dataclass(frozen=True, slots=True)
class PromotionPoint:
    """When the new primary was promoted, before its first write (any field may be unknown).

    ``at``: epoch seconds on the new primary's clock; ``xid``: its next transaction id (xid8, from
    ``pg_snapshot_xmax(pg_current_snapshot())``); ``lsn``: its WAL position then.
    """

    at: float | None = None
    xid: int | None = None
    lsn: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "xid": self.xid, "lsn": self.lsn}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromotionPoint:
        at, xid, lsn = data.get("at"), data.get("xid"), data.get("lsn")
        return cls(None if at is None else float(at), None if xid is None else int(xid),
                   None if lsn is None else str(lsn))

    @property
    def known(self) -> bool:
        return self.at is not None or self.xid is not None


def cause(kind: Kind, new_after: bool | None, old_after: bool | None) -> Cause:
    """The table of the module docstring. ``kind`` is from the new primary's point of view
    (``missing_on_standby``: only on the new primary; ``missing_on_primary``: only on the old)."""
    if old_after:
        return "diverged"
    if new_after:
        return "after_promotion"
    return "diverged" if kind == "changed" else "lost"


def count_causes(diffs: Iterable[RowDiff]) -> dict[str, int]:
    """How many differences of each cause (every cause present, zero included)."""
    out: dict[str, int] = dict.fromkeys(CAUSES, 0)
    for d in diffs:
        if d.cause in out:
            out[d.cause] += 1
    return out

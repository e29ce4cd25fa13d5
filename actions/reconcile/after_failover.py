"""Reading, for differing rows, whether each side's version was written after the promotion point.

The rule that turns these facts into a cause is pure (:mod:`actions.reconcile.causes`). Evidence,
best first, per side:

- new primary: ``age(xmin) <= age(<promotion xid>)``, i.e. the row version's transaction started at
  or after the promotion (the logical apply worker's writes before promotion have older xids;
  frozen versions count as older). Needs ``PromotionPoint.xid``; versions frozen by an aggressive
  vacuum (``vacuum_freeze_min_age`` transactions later, 50 M by default) look older: a stated limit.
- either side, with ``PromotionPoint.at``: the table's ``updated_at`` column later than it, else
  the commit timestamp of ``xmin`` when ``track_commit_timestamp`` is on. The old primary's clock
  is compared with the new primary's time of promotion: clock skew between them blurs rows
  written within that skew of the promotion.
- otherwise unknown (None).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from actions.reconcile.causes import PromotionPoint, cause
from actions.reconcile.pg_side import PgSide
from actions.reconcile.plan import Key, RowDiff
from probes.postgres_conn import fetch


async def _commit_ts_on(conn: psycopg.AsyncConnection[Any], deadline: float) -> bool:
    rows = await fetch(conn, "SELECT current_setting('track_commit_timestamp') = 'on'", deadline=deadline)
    return bool(rows and rows[0][0])


async def written_after(side: PgSide, keys: list[Key], point: PromotionPoint, updated_at: str | None, *,
                        use_xid: bool) -> dict[Key, bool | None]:
    """Per key present on ``side``: written after the promotion point (True/False), or None when unknown."""
    expression: sql.Composable | None = None
    params: list[Any] = []
    if use_xid and point.xid is not None:
        expression = sql.SQL("age(xmin) <= age(%s::text::xid)")
        params = [str(point.xid % (1 << 32))]
    elif point.at is not None and updated_at:
        expression = sql.SQL("{} > to_timestamp(%s::float8)").format(sql.Identifier(updated_at))
        params = [point.at]
    elif point.at is not None and await _commit_ts_on(side.conn, side.deadline):
        expression = sql.SQL("pg_xact_commit_timestamp(xmin) > to_timestamp(%s::float8)")
        params = [point.at]
    if expression is None:
        return dict.fromkeys(keys, None)
    flags = await side.flags(keys, expression, params)
    return {k: None if v is None else bool(v) for k, v in flags.items()}


async def classify_causes(new: PgSide, old: PgSide, diffs: list[RowDiff], point: PromotionPoint,
                          updated_at: str | None) -> list[RowDiff]:
    """``diffs`` (the new primary as primary) with their cause set."""
    keys = [d.key for d in diffs]
    if not keys:
        return []
    new_flags = await written_after(new, keys, point, updated_at, use_xid=True)
    old_flags = await written_after(old, keys, point, updated_at, use_xid=False)
    return [RowDiff(d.key, d.kind, d.in_flight, cause(d.kind, new_flags.get(d.key), old_flags.get(d.key)))
            for d in diffs]


POINT = ("SELECT extract(epoch FROM clock_timestamp())::float8, pg_snapshot_xmax(pg_current_snapshot())::text, "
         "pg_current_wal_lsn()::text")


async def read_promotion_point(conn: psycopg.AsyncConnection[Any], deadline: float = 10.0) -> PromotionPoint:
    """The promotion point of the server behind ``conn``: call it after replication into it stopped and
    before it takes its first write (the promotion does, between those two)."""
    ((at, xid, lsn),) = await fetch(conn, POINT, deadline=deadline)
    return PromotionPoint(float(at), int(xid), str(lsn))

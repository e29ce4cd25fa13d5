"""Sequences after a logical-replication promotion: bring each to at least ``max(column) + margin``.

Logical replication copies rows, not sequence state, so on the promoted standby every ``serial``,
``identity`` or ``DEFAULT nextval(...)`` sequence is still at its initial value and the first insert
without an explicit id would hit a duplicate key. A sequence is only ever moved forward, so running
this twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# (sequence, table, column) for sequences owned by a column (serial 'a', identity 'i') and for
# sequences used by a column default (nextval), restricted to the given tables.
SEQUENCES = """
SELECT seq.oid, seq.oid::regclass::text, tbl.oid::regclass::text, att.attname
FROM pg_depend d
JOIN pg_class seq ON seq.oid = d.objid AND seq.relkind = 'S'
JOIN pg_class tbl ON tbl.oid = d.refobjid
JOIN pg_attribute att ON att.attrelid = tbl.oid AND att.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype IN ('a', 'i') AND tbl.oid = ANY(%(tables)s)
UNION
SELECT seq.oid, seq.oid::regclass::text, tbl.oid::regclass::text, att.attname
FROM pg_attrdef ad
JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                AND d.refclassid = 'pg_class'::regclass
JOIN pg_class seq ON seq.oid = d.refobjid AND seq.relkind = 'S'
JOIN pg_class tbl ON tbl.oid = ad.adrelid
JOIN pg_attribute att ON att.attrelid = tbl.oid AND att.attnum = ad.adnum
WHERE tbl.oid = ANY(%(tables)s)
ORDER BY 2
"""

SUBSCRIBED_TABLES = """
SELECT r.srrelid FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
WHERE s.subname = %s
"""

USER_TABLES = """
SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%'
"""


@dataclass(frozen=True, slots=True)
class SequenceMove:
    """One sequence and what happened to it."""

    sequence: str
    table: str
    column: str
    before: int | None
    after: int | None

    @property
    def moved(self) -> bool:
        return self.after is not None and self.after != self.before

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "table": self.table, "column": self.column,
                "before": self.before, "after": self.after}


def target_value(max_value: int | None, last_value: int, is_called: bool, margin: int, seq_max: int,
                 ) -> int | None:
    """Pure: the value to ``setval`` to, or None to leave the sequence alone.

    The next ``nextval`` must return more than ``max_value + margin - 1``; a sequence already past
    that is never moved back.
    """
    if max_value is None:
        return None
    target = min(max_value + margin, seq_max) if margin else max_value
    target = max(target, max_value)
    current = last_value if is_called else last_value - 1
    if current >= target:
        return None
    return target


async def sync_sequences(conn: psycopg.AsyncConnection[Any], *, subscription: str, margin: int,
                         ) -> list[SequenceMove]:
    """Move every sequence of the subscribed tables (all user tables if the subscription is gone)."""
    cur = await conn.execute(SUBSCRIBED_TABLES, (subscription,))
    tables = [row[0] for row in await cur.fetchall()]
    if not tables:
        cur = await conn.execute(USER_TABLES)
        tables = [row[0] for row in await cur.fetchall()]
    cur = await conn.execute(SEQUENCES, {"tables": tables})
    moves: list[SequenceMove] = []
    for seq_oid, seq_name, table, column in await cur.fetchall():
        target, last_value, is_called = await planned_value(conn, seq_oid, seq_name, table, column, margin)
        if target is not None:
            await conn.execute("SELECT setval(%s::regclass, %s, true)", (seq_name, target))
        moves.append(SequenceMove(seq_name, table, str(column), last_value if is_called else None, target))
    return moves


async def planned_value(conn: psycopg.AsyncConnection[Any], seq_oid: int, seq_name: str, table: str, column: str,
                        margin: int) -> tuple[int | None, int, bool]:
    """(the value a promotion sets, or None when the sequence is far enough; last_value; is_called)."""
    cur = await conn.execute(sql.SQL("SELECT max({})::bigint FROM {}").format(
        sql.Identifier(column), sql.SQL(table)))  # table is a regclass text: already quoted
    row = await cur.fetchone()
    max_value = None if row is None or row[0] is None else int(row[0])
    cur = await conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(seq_name)))
    state = await cur.fetchone()
    cur = await conn.execute("SELECT seqmax FROM pg_sequence WHERE seqrelid = %s", (seq_oid,))
    bound = await cur.fetchone()
    assert state is not None and bound is not None
    return target_value(max_value, int(state[0]), bool(state[1]), margin, int(bound[0])), int(state[0]), bool(state[1])

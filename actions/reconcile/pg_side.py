"""A :class:`~actions.reconcile.bisect.Side` backed by PostgreSQL: digests computed in the database.

Row hash, chosen per run by :func:`hash_mode`:

- ``native`` (both servers share a major version >= 14):
  ``hashint8extended(hash_record_extended(ROW(cols), 0), 0)``, a 64-bit hash over PostgreSQL's own
  per-type hash functions; stable between servers of the same major version, not promised across
  versions. Columns whose type has no hash function are hashed through their text form.
  The outer ``hashint8extended`` is essential: ``hash_record_extended`` combines its column hashes
  *linearly* (``h = 31 * h + column_hash``), so a plain sum over rows cannot see two rows that
  swapped a column's values (measured: equal sums); re-hashing the record hash makes it non-linear.
- ``portable`` (different majors, or forced): the low 60 bits of ``md5`` of the row's canonical text
  form. Canonical = the same session settings on both sides (UTC, ISO dates, all float digits, hex
  bytea) and the columns in one agreed order.

The two modes do not agree on every value, so a run uses one mode for both sides, and results of
the two modes must not be compared with each other. The known case is ``numeric`` scale:
``hash_numeric`` hashes *values* (``1.0`` and ``1.00`` are equal, as ``=`` says), while the text form
keeps the scale, so in ``portable`` mode a row holding ``1.0`` on one side and ``1.00`` on the other
is reported as changed (a ``numeric(p,s)`` column always has one scale, so this needs an unconstrained
``numeric``). Likewise ``-0.0`` and ``0.0`` in ``float8``, and equal ``jsonb`` or ``timestamptz``
values, hash alike natively; portable mode canonicalises what the session settings can.

Only tables with a single-column integer primary key are supported; a table without a primary key
(or with another key) is refused with a reason rather than compared wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from actions.reconcile.plan import Digest, KeyRange, RowState
from probes.postgres_conn import Refused, fetch

HashMode = Literal["native", "portable"]
INTEGER_TYPES = {"smallint", "integer", "bigint"}
CANONICAL_SETTINGS = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'",
                      "SET extra_float_digits = 3", "SET bytea_output = 'hex'")

COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod),
       EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
               WHERE am.amname = 'hash' AND oc.opcdefault AND oc.opcintype =
                     (SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
                      FROM pg_type t WHERE t.oid = a.atttypid))
FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attname
"""
PRIMARY_KEY = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = %s::regclass AND i.indisprimary
"""


async def server_major(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT current_setting('server_version_num')::int / 10000")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def hash_mode(major_a: int, major_b: int, forced: str = "auto") -> HashMode:
    """Pure: native hashes only between equal majors that have ``hash_record_extended`` (>= 14)."""
    if forced in ("native", "portable"):
        return forced  # type: ignore[return-value]
    return "native" if major_a == major_b and major_a >= 14 else "portable"


@dataclass(frozen=True, slots=True)
class TableShape:
    """What reconciliation needs to know about a table on one server."""

    name: str
    key: str
    columns: tuple[tuple[str, str, bool], ...]   # (name, type, hashable)


async def inspect_table(conn: psycopg.AsyncConnection[Any], table: str, key: str | None, where: str,
                        ) -> TableShape:
    """Columns and integer primary key of ``table``; raises :class:`Refused` with the reason."""
    try:
        cur = await conn.execute("SELECT to_regclass(%s)", (table,))
        row = await cur.fetchone()
    except psycopg.Error as exc:
        raise Refused(f"table {table}: {exc}") from None
    if row is None or row[0] is None:
        raise Refused(f"table {table} not found on {where}")
    cur = await conn.execute(PRIMARY_KEY, (table,))
    pk = await cur.fetchall()
    if not pk:
        raise Refused(f"table {table} on {where} has no primary key: rows cannot be matched")
    if len(pk) > 1:
        raise Refused(f"table {table} has a composite primary key: only a single integer key is supported")
    pk_name, pk_type = str(pk[0][0]), str(pk[0][1])
    if key is not None and key != pk_name:
        raise Refused(f"table {table}: configured key {key} is not the primary key ({pk_name})")
    if pk_type not in INTEGER_TYPES:
        raise Refused(f"table {table}: primary key {pk_name} is {pk_type}: only integer keys are supported")
    cur = await conn.execute(COLUMNS, (table,))
    columns = tuple((str(n), str(t), bool(h)) for n, t, h in await cur.fetchall())
    return TableShape(table, pk_name, columns)


def agree(primary: TableShape, standby: TableShape, primary_site: str, standby_site: str) -> None:
    """Refuse when the two sides do not have the same columns and key."""
    if primary.key != standby.key:
        raise Refused(f"table {primary.name}: primary key {primary.key} on {primary_site} "
                      f"but {standby.key} on {standby_site}")
    left = {(n, t) for n, t, _ in primary.columns}
    right = {(n, t) for n, t, _ in standby.columns}
    if left != right:
        only_left = ", ".join(f"{n} {t}" for n, t in sorted(left - right)) or "-"
        only_right = ", ".join(f"{n} {t}" for n, t in sorted(right - left)) or "-"
        raise Refused(f"table {primary.name}: columns differ (only on {primary_site}: {only_left}; "
                      f"only on {standby_site}: {only_right})")


def row_hash(shape: TableShape, mode: HashMode) -> sql.Composable:
    """The per-row hash expression (a bigint)."""
    if mode == "native":
        parts = [sql.Identifier(n) if hashable else sql.SQL("{}::text").format(sql.Identifier(n))
                 for n, _, hashable in shape.columns]
        return sql.SQL("hashint8extended(hash_record_extended(ROW({}), 0), 0)").format(sql.SQL(", ").join(parts))
    parts = [sql.Identifier(n) for n, _, _ in shape.columns]
    return sql.SQL("('x' || left(md5(ROW({})::text), 15))::bit(60)::bigint").format(sql.SQL(", ").join(parts))


class PgSide:
    """One table on one server, over one open connection (canonical settings applied by :meth:`prepare`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], shape: TableShape, mode: HashMode,
                 updated_at: str | None, *, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.shape = shape
        t = sql.Identifier(*shape.name.split("."))
        k = sql.Identifier(shape.key)
        h = row_hash(shape, mode)
        ts = (sql.SQL("extract(epoch FROM {})::float8").format(sql.Identifier(updated_at)) if updated_at
              else sql.SQL("NULL::float8"))
        self._bounds = sql.SQL("SELECT min({k}), max({k}) FROM {t}").format(k=k, t=t)
        self._next = sql.SQL("SELECT min({k}) FROM {t} WHERE {k} >= %s").format(k=k, t=t)
        self._digest = sql.SQL("SELECT count(*), coalesce(sum({h}), 0) FROM {t} WHERE {k} >= %s AND {k} < %s"
                               ).format(h=h, t=t, k=k)
        self._buckets = sql.SQL("SELECT ({k} - %s) / %s AS b, count(*), sum({h}) FROM {t} "
                                "WHERE {k} >= %s AND {k} < %s GROUP BY 1").format(h=h, t=t, k=k)
        self._rows_sql = sql.SQL("SELECT {k}, {h}, {ts} FROM {t} WHERE {k} >= %s AND {k} < %s").format(
            h=h, t=t, k=k, ts=ts)
        self._rows_by_key = sql.SQL("SELECT {k}, {h}, {ts} FROM {t} WHERE {k} = ANY(%s)").format(
            h=h, t=t, k=k, ts=ts)
        self._text = sql.SQL("SELECT {k}, ROW({cols})::text FROM {t} WHERE {k} = ANY(%s)").format(
            k=k, t=t, cols=sql.SQL(", ").join(sql.Identifier(n) for n, _, _ in shape.columns))

    @staticmethod
    async def prepare(conn: psycopg.AsyncConnection[Any]) -> None:
        for statement in CANONICAL_SETTINGS:
            await conn.execute(statement)

    async def _rows(self, statement: sql.Composable, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await fetch(self.conn, statement, params, deadline=self.deadline)

    async def bounds(self) -> tuple[int, int] | None:
        rows = await self._rows(self._bounds)
        return None if not rows or rows[0][0] is None else (int(rows[0][0]), int(rows[0][1]))

    async def next_key(self, after: int) -> int | None:
        rows = await self._rows(self._next, (after,))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def digest(self, key_range: KeyRange) -> Digest:
        ((count, total),) = await self._rows(self._digest, (key_range.lo, key_range.hi))
        return Digest(int(count), int(total))

    async def buckets(self, key_range: KeyRange, width: int) -> dict[int, Digest]:
        rows = await self._rows(self._buckets, (key_range.lo, width, key_range.lo, key_range.hi))
        return {int(b): Digest(int(c), int(s)) for b, c, s in rows}

    async def rows(self, key_range: KeyRange) -> dict[int, RowState]:
        rows = await self._rows(self._rows_sql, (key_range.lo, key_range.hi))
        return {int(k): RowState(int(h), None if ts is None else float(ts)) for k, h, ts in rows}

    async def rows_for(self, keys: list[int]) -> dict[int, RowState]:
        """The rows (hash and update time) of exactly these keys (for the in-flight recheck)."""
        if not keys:
            return {}
        rows = await self._rows(self._rows_by_key, (keys,))
        return {int(k): RowState(int(h), None if ts is None else float(ts)) for k, h, ts in rows}

    async def texts(self, keys: list[int]) -> dict[int, str]:
        """The rows' text forms, for showing differences to a human."""
        if not keys:
            return {}
        return {int(k): str(v) for k, v in await self._rows(self._text, (keys,))}

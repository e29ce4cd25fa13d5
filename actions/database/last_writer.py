"""``conflict: last_writer_wins`` carried out at failback preparation (the rule: :mod:`engine.core.last_writer`).

When. After the quarantine kept the old primary's differing rows and before the old primary
subscribes to the new one (:mod:`actions.database.failback`): the old versions are still where the
quarantine copied them, and nothing flows to the old primary yet. :func:`check` runs earlier,
before anything is changed: on both sides the table's key and its declared column (``updated_at``)
must exist, the column must be a ``timestamp``, ``timestamptz`` or ``date`` of the same type on
both sides, the key and the columns must be the same, and on the new primary the replica identity
must cover the key (else an update that changes the key names only the new one in the slot, and
the old key would look "not written since promotion" and be inserted back); otherwise the
preparation is refused with the reason and nothing is touched.

What, per table. The candidates are the rows of the table's quarantine table under this failover's
tag: the old primary's versions as first kept (stable across re-runs, unlike a listing made before a
crash). Per table, in ONE transaction on the new primary: ``LOCK TABLE ... IN SHARE ROW EXCLUSIVE
MODE`` (the application's writes to that table wait, its reads go on), then the reverse slot is
decoded again (every write committed before the lock is in it: the peek reads up to the WAL flush
position, and the step waits for the flush), the current rows are read, each quarantined row is
judged against the new primary's *current* row and the slot's keys (written there after
promotion), and the winners are written, then commit. So nothing the application writes or deletes
between the gate's look and this write can be overwritten or brought back. The writes:

- ``update`` (the old version is later by the column): ``UPDATE ... FROM jsonb_populate_recordset
  ... WHERE target.<column> < old.<column>``: a version that became newer meanwhile (or a row deleted
  meanwhile) is never overwritten;
- ``insert`` (a write lost at failover): ``INSERT ... ON CONFLICT (<key>) DO UPDATE ... WHERE
  target.<column> < EXCLUDED.<column>``. The reverse stream will carry this INSERT to the old
  primary, which still holds the row: the apply would fail on the duplicate key and stop the
  subscription. So the old primary's copy is deleted first (its content is in the quarantine), in
  its own transaction with ``session_replication_role = replica`` (no trigger, no cascade fires on
  the old primary, as for the subscription's own apply); the stream then brings it back;
- ``copy_new`` (the new version stays, but the new primary did not write it since promotion, so
  the stream would never carry it): the new version is written onto the old primary, in that same
  transaction. ``keep_new`` rows are left to the stream, ``present`` rows need nothing.

Values travel as ``to_jsonb`` text of the quarantined row and are rebuilt by
``jsonb_populate_recordset`` with the table's own row type (exact for every type whose text form is,
numeric scale and timestamps to the microsecond included). Generated columns are not written;
``GENERATED ALWAYS`` identity columns are written with ``OVERRIDING SYSTEM VALUE`` on insert and
kept on update. The new primary's triggers and foreign keys apply to these writes as to any other
(a write they refuse fails the step, before the old primary is resynchronised).

Idempotent: a re-run judges again from the current state. A row written by an earlier run is
``present`` (the new primary holds exactly the old version); an insert whose old copy was already
deleted is inserted (the quarantine still holds it); the compare-and-set never writes over a newer
version, and the table lock (taken before the slot is decoded again) covers deletes, which carry no
version to compare: a row deleted on the new primary at any time before the write is seen as
written since promotion and stays deleted. Needs to run as a role that may set
``session_replication_role`` on the old primary (a superuser, which ``CREATE SUBSCRIPTION`` needs on
PostgreSQL 15 anyway).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from actions.database.quarantine import RELATION, key_arrays, key_columns, key_select, quarantine_table_name
from actions.database.results import Step
from actions.database.reverse import Rel, Touched, key_form, peek_touched
from actions.reconcile.plan import Key, key_json, key_text, sort_keys
from actions.reconcile.shape import CANONICAL_SETTINGS, TableShape, inspect_table
from engine.config.database import DatabaseConfig, ReconcileTable
from engine.core.last_writer import Judged, Verdict, Versions, column_problem, describe, identity_problem, settle
from probes.postgres_conn import Refused, describe_pg_error

STEP = "last writer wins"
FLUSH_WAIT = 5.0    # seconds: the WAL writer flushes an asynchronous commit within 3 x wal_writer_delay
FLUSH_POLL = 0.02
EXTRA = ("quarantined_at", "quarantine_tag", "quarantine_reason")
IDENTITY = """
SELECT c.relreplident::text, coalesce((SELECT array_agg(a.attname::text) FROM pg_index i
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1])
  WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident
                                                   ELSE false END), '{}')
FROM pg_class c WHERE c.oid = %s::regclass
"""
ATTRIBUTES = """
SELECT a.attname, a.attgenerated <> '', a.attidentity = 'a' FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""


@dataclass(frozen=True, slots=True)
class LwwTable:
    """One ``last_writer_wins`` table as the new primary describes it."""

    name: str
    rel: Rel
    column: str
    shape: TableShape              # the new primary's: key and every column
    insertable: tuple[str, ...]    # not generated
    settable: tuple[str, ...]      # insertable, not a key column, not an identity ALWAYS column
    overriding: bool               # an identity ALWAYS column is written on insert

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(*self.rel)


def policy_tables(config: DatabaseConfig) -> list[ReconcileTable]:
    return [t for t in config.reconcile.tables if t.conflict == "last_writer_wins"]


async def canonical(conn: psycopg.AsyncConnection[Any]) -> None:
    """Text forms as the reconciliation reads them (keys and row versions are compared as text)."""
    for statement in CANONICAL_SETTINGS:
        await conn.execute(statement)


async def compare_sides(conns: tuple[psycopg.AsyncConnection[Any], psycopg.AsyncConnection[Any]],
                        sites: tuple[str, str], t: ReconcileTable, *, identity_on: tuple[int, ...] = (0,),
                        ) -> tuple[tuple[TableShape, ...], list[str]]:
    """Both sides' shapes of one ``last_writer_wins`` table, or the problems that refuse it (module
    docstring): key and column on both sides, same key, same columns, same column type, and on the
    sides ``identity_on`` (the one whose reverse slot is decoded) a replica identity covering the key.
    Shared with ``reconcile --check`` (:mod:`actions.reconcile.preflight`), so both say the same."""
    column = str(t.updated_at)
    shapes: list[TableShape] = []
    problems: list[str] = []
    for conn, site in zip(conns, sites, strict=True):
        try:
            shape = await inspect_table(conn, t.name, t.key_columns, site)
        except Refused as exc:
            problems.append(str(exc))
            continue
        found = next((c for c in shape.columns if c.name == column), None)
        problem = column_problem(t.name, site, column, None if found is None else found.base)
        if problem:
            problems.append(problem)
        else:
            shapes.append(shape)
    if problems:
        return (), problems
    new, back = shapes
    if new.key_names != back.key_names:
        return (), [f"table {t.name}: key ({', '.join(new.key_names)}) on {sites[0]} but "
                    f"({', '.join(back.key_names)}) on {sites[1]}"]
    if set(new.all_columns) != set(back.all_columns):  # a version is copied whole, both ways
        only_new = ", ".join(sorted(set(new.all_columns) - set(back.all_columns))) or "-"
        only_old = ", ".join(sorted(set(back.all_columns) - set(new.all_columns))) or "-"
        return (), [f"table {t.name}: columns differ (only on {sites[0]}: {only_new}; only on {sites[1]}: "
                    f"{only_old}): a whole version cannot be carried across"]
    types = [next(c.type for c in s.columns if c.name == column) for s in shapes]
    if types[0] != types[1]:
        return (), [f"table {t.name}: last_writer_wins column {column} is {types[0]} on {sites[0]} but "
                    f"{types[1]} on {sites[1]}: the versions cannot be ordered"]
    for i in identity_on:
        row = await (await conns[i].execute(IDENTITY, (t.name,))).fetchone()
        assert row is not None  # inspect_table found the table
        problem = identity_problem(t.name, sites[i], new.key_names, str(row[0]), [str(c) for c in row[1]])
        if problem:
            problems.append(problem)
    return ((), problems) if problems else (tuple(shapes), [])


async def check(new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any], config: DatabaseConfig,
                new_primary: str, old: str) -> tuple[list[LwwTable], list[str]]:
    """Every ``last_writer_wins`` table on both sides (:func:`compare_sides`); the tables and the problems."""
    tables: list[LwwTable] = []
    problems: list[str] = []
    for t in policy_tables(config):
        shapes, found = await compare_sides((new, back), (new_primary, old), t)
        problems.extend(found)
        if not shapes:
            continue
        rel = await (await new.execute(RELATION, (t.name,))).fetchone()
        attributes = await (await new.execute(ATTRIBUTES, (t.name,))).fetchall()
        assert rel is not None
        insertable = tuple(sorted(str(n) for n, generated, _ in attributes if not generated))
        always = {str(n) for n, _, identity in attributes if identity}
        settable = tuple(n for n in insertable if n not in shapes[0].key_names and n not in always)
        tables.append(LwwTable(t.name, (str(rel[0]), str(rel[1])), str(t.updated_at), shapes[0], insertable,
                               settable, bool(always & set(insertable))))
    return tables, problems


async def _quarantined(back: psycopg.AsyncConnection[Any], table: LwwTable, q_table: tuple[str, str], tag: str,
                       ) -> dict[Key, tuple[Any, str, str]]:
    """The old versions the quarantine holds for ``tag``: key -> (column value, row text, jsonb text)."""
    exists = await (await back.execute("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                                       q_table)).fetchone()
    if exists is None:
        return {}
    cols = sql.SQL(", ").join(sql.Identifier("q", c) for c in table.shape.all_columns)
    strip = sql.SQL(" - ").join([sql.SQL("to_jsonb(q)"), *(sql.Literal(e) for e in EXTRA)])
    rows = await (await back.execute(sql.SQL(
        "SELECT {sel}, q.{ts}, ROW({cols})::text, ({strip})::text FROM {q} q WHERE q.quarantine_tag = %s").format(
        sel=key_select(table.shape, "q"), ts=sql.Identifier(table.column), cols=cols, strip=strip,
        q=sql.Identifier(*q_table)), (tag,))).fetchall()
    width = len(table.shape.key)
    return {tuple(r[:width]): (r[width], str(r[width + 1]), str(r[width + 2])) for r in rows}


async def _current(new: psycopg.AsyncConnection[Any], table: LwwTable, keys: list[Key],
                   ) -> dict[Key, tuple[Any, str, str]]:
    """The new primary's current versions of ``keys``: key -> (column value, row text, jsonb text)."""
    arrays, params = key_arrays(table.shape, keys)
    cols = sql.SQL(", ").join(sql.Identifier("t", c) for c in table.shape.all_columns)
    rows = await (await new.execute(sql.SQL(
        "SELECT {sel}, t.{ts}, ROW({cols})::text, to_jsonb(t)::text FROM {t} t "
        "WHERE {k} IN (SELECT * FROM unnest({arrays}))").format(
        sel=key_select(table.shape, "t"), ts=sql.Identifier(table.column), cols=cols, t=table.ident,
        k=key_columns(table.shape, "t"), arrays=arrays), params)).fetchall()
    width = len(table.shape.key)
    return {tuple(r[:width]): (r[width], str(r[width + 1]), str(r[width + 2])) for r in rows}


def judge(table: LwwTable, old_rows: dict[Key, tuple[Any, str, str]], new_rows: dict[Key, tuple[Any, str, str]],
          touched: Touched, *, old: str, new_primary: str) -> list[tuple[Key, Verdict]]:
    """Pure: the verdict of every quarantined row, in key order."""
    out = []
    for key in sort_keys(old_rows):
        old_at, old_text, _ = old_rows[key]
        current = new_rows.get(key)
        versions = Versions(old_at, current is not None, None if current is None else current[0],
                            touched.has(table.rel, key_form(list(key))),
                            current is not None and current[1] == old_text)
        out.append((key, settle(versions, column=table.column, old=old, new=new_primary)))
    return out


def _set_from(table: LwwTable, source: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{c} = {s}.{c}").format(c=sql.Identifier(c), s=sql.Identifier(source))
                              for c in table.settable)


async def _on_old(back: psycopg.AsyncConnection[Any], table: LwwTable, inserts: list[Key], copies: list[str]) -> None:
    """On the (fenced) old primary, as the subscription's apply would (no trigger, no cascade): the copies
    of rows about to be inserted on the new primary are removed (the stream's INSERT must find no row),
    and the new versions the stream will not carry are written (``copies``: ``to_jsonb`` texts)."""
    if not (inserts or copies):
        return
    async with back.transaction():
        await back.execute("SET transaction_read_only = off")
        await back.execute("SET LOCAL session_replication_role = replica")
        if inserts:
            arrays, params = key_arrays(table.shape, inserts)
            await back.execute(sql.SQL("DELETE FROM {t} WHERE {k} IN (SELECT * FROM unnest({arrays}))").format(
                t=table.ident, k=key_columns(table.shape), arrays=arrays), params)
        if copies and table.settable:
            await back.execute(sql.SQL(
                "UPDATE {t} AS t SET {sets} FROM jsonb_populate_recordset(NULL::{t}, %s::jsonb) AS r "
                "WHERE {tk} = {rk}").format(t=table.ident, sets=_set_from(table, "r"),
                                            tk=key_columns(table.shape, "t"), rk=key_columns(table.shape, "r")),
                ("[" + ", ".join(copies) + "]",))


async def _apply(new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any], table: LwwTable,
                 verdicts: list[tuple[Key, Verdict]], old_rows: dict[Key, tuple[Any, str, str]],
                 new_rows: dict[Key, tuple[Any, str, str]]) -> set[Key]:
    """Write the winning old versions onto the new primary (module docstring); the keys written."""
    inserts = [k for k, v in verdicts if v.action == "insert"]
    updates = [k for k, v in verdicts if v.action == "update"]
    await _on_old(back, table, inserts, [new_rows[k][2] for k, v in verdicts if v.action == "copy_new"])
    written: set[Key] = set()
    if not (inserts or updates):
        return written
    ts = sql.Identifier(table.column)
    insertable = sql.SQL(", ").join(sql.Identifier(c) for c in table.insertable)
    from_r = sql.SQL(", ").join(sql.Identifier("r", c) for c in table.insertable)
    keys = sql.SQL(", ").join(sql.Identifier(n) for n in table.shape.key_names)
    if not table.settable:  # nothing but the key and generated columns: an existing row is never changed
        updates = []
    if inserts:
        payload = "[" + ", ".join(old_rows[k][2] for k in inserts) + "]"
        cur = await new.execute(sql.SQL(
            "INSERT INTO {t} AS t ({cols}) {overriding} SELECT {from_r} FROM jsonb_populate_recordset(NULL::{t}, "
            "%s::jsonb) AS r ON CONFLICT ({keys}) {action} RETURNING {sel}").format(
            t=table.ident, cols=insertable, from_r=from_r, keys=keys, ts=ts, sel=key_select(table.shape, "t"),
            overriding=sql.SQL("OVERRIDING SYSTEM VALUE" if table.overriding else ""),
            action=sql.SQL("DO UPDATE SET {sets} WHERE t.{ts} < EXCLUDED.{ts}").format(
                sets=_set_from(table, "excluded"), ts=ts) if table.settable
            else sql.SQL("DO NOTHING")), (payload,))
        written |= {tuple(r) for r in await cur.fetchall()}
    if updates:
        payload = "[" + ", ".join(old_rows[k][2] for k in updates) + "]"
        cur = await new.execute(sql.SQL(
            "UPDATE {t} AS t SET {sets} FROM jsonb_populate_recordset(NULL::{t}, %s::jsonb) AS r "
            "WHERE {tk} = {rk} AND t.{ts} < r.{ts} RETURNING {sel}").format(
            t=table.ident, ts=ts, tk=key_columns(table.shape, "t"), rk=key_columns(table.shape, "r"),
            sel=key_select(table.shape, "t"), sets=_set_from(table, "r")), (payload,))
        written |= {tuple(r) for r in await cur.fetchall()}
    return written


class _Unknown(Exception):
    """The slot could not be fully decoded and a quarantined row is absent: deleted since, or lost?"""


async def _flushed(new: psycopg.AsyncConnection[Any], wait: float) -> bool:
    """Every commit made so far is flushed to WAL, so a peek decodes it (a peek reads up to the flush
    position; a ``synchronous_commit = off`` commit is flushed by the WAL writer a moment later)."""
    row = await (await new.execute("SELECT pg_current_wal_insert_lsn()::text")).fetchone()
    assert row is not None
    deadline = time.monotonic() + wait
    while True:
        done = await (await new.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (row[0],))).fetchone()
        if done is not None and done[0]:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(FLUSH_POLL)


async def _settle(new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any], table: LwwTable,
                  config: DatabaseConfig, old_rows: dict[Key, tuple[Any, str, str]], *, new_primary: str,
                  old: str) -> tuple[list[tuple[Key, Verdict]], set[Key]]:
    """One table, in one transaction on the new primary: lock the table against writes (reads go on),
    decode the slot again (every write committed before the lock is in it), read the current rows,
    judge, write, commit. So a row deleted (or written) on the new primary after the gate looked is
    seen as written since promotion, never inserted back. Raises :class:`_Unknown` or ``psycopg.Error``."""
    async with new.transaction():
        await new.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table.ident))
        if await _flushed(new, FLUSH_WAIT):
            touched = await peek_touched(new, config.slot_name, config.publication, {table.rel: table.shape})
        else:
            touched = Touched(complete=False, note=f"the WAL of {new_primary} was not flushed within {FLUSH_WAIT}s")
        new_rows = await _current(new, table, list(old_rows))
        if not touched.complete and any(k not in new_rows for k in old_rows):
            raise _Unknown(touched.note)
        verdicts = judge(table, old_rows, new_rows, touched, old=old, new_primary=new_primary)
        return verdicts, await _apply(new, back, table, verdicts, old_rows, new_rows)


async def resolve(new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any], tables: list[LwwTable],
                  *, config: DatabaseConfig, schema: str, tag: str, quarantined: dict[str, str],
                  new_primary: str, old: str, data: dict[str, Any]) -> Step:
    """Judge and apply every ``last_writer_wins`` table (module docstring); fills ``data["last_writer_wins"]``.

    ``quarantined``: the quarantine table of each source (``schema.table`` -> ``schema.name``) as the
    quarantine step listed it (a name not listed is derived from the tag). The slot is decoded
    again per table under the table's lock (:func:`_settle`), never taken from an earlier peek.
    """
    t0 = time.perf_counter()
    await canonical(new)
    await canonical(back)
    judged: list[Judged] = []
    for table in tables:
        listed = quarantined.get(f"{table.rel[0]}.{table.rel[1]}")
        q_table = ((listed.split(".", 1)[0], listed.split(".", 1)[1]) if listed else
                   (schema, quarantine_table_name(table.rel[0], table.rel[1], tag)))
        old_rows = await _quarantined(back, table, q_table, tag)
        try:
            verdicts, written = (await _settle(new, back, table, config, old_rows, new_primary=new_primary, old=old)
                                 if old_rows else ([], set()))
        except _Unknown as exc:
            data["last_writer_wins"] = {"tag": tag, "tables": [j.to_dict(key_json) for j in judged],
                                        "error": str(exc)}
            return Step(STEP, "failed", f"table {table.name}: the reverse slot could not be fully decoded "
                        f"({exc}): whether {new_primary} deleted a row since promotion is unknown; "
                        f"nothing more was applied and {old} was not resynchronised", time.perf_counter() - t0)
        except psycopg.Error as exc:  # e.g. a trigger or foreign key of the new primary refused a row
            done = [j.to_dict(key_json) for j in judged]
            data["last_writer_wins"] = {"tag": tag, "tables": done, "error": f"{table.name}: {describe_pg_error(exc)}"}
            return Step(STEP, "failed", f"table {table.name}: the old versions could not be written onto "
                        f"{new_primary} ({describe_pg_error(exc)}); {old} was not resynchronised (its rows are in "
                        "the quarantine; prepare again once fixed)", time.perf_counter() - t0)
        judged.append(Judged(table.name, table.column, tuple(verdicts), frozenset(written)))
    data["last_writer_wins"] = {"tag": tag, "tables": [j.to_dict(key_json) for j in judged]}
    return Step(STEP, "ok", describe(judged, key_text, new_primary), time.perf_counter() - t0)

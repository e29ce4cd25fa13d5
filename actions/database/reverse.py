"""The reverse direction, prepared at promotion: publication and logical slot on the new primary.

Why at promotion: failback needs the old primary to receive *every* write made on the new primary
after it was promoted, without re-copying the tables (a full copy of a production database is hours
and would overwrite what only the old primary holds). A logical replication slot created on the new
primary *before it accepts writes* retains exactly that stream; the reverse subscription created
later by :func:`actions.database.failback.prepare_failback` uses it (``create_slot = false,
copy_data = false``). The publication must exist before the slot is created and before the writes:
``pgoutput`` reads publications through the historic catalog snapshot of each change, so changes
made before a publication existed are not published (and an unknown publication is an error).

:func:`ensure_reverse_slot` (the promotion's ``reverse slot`` step) is idempotent: an existing
publication gets the missing tables, an existing slot is kept. It never blocks writes: when the slot
cannot be created (``max_replication_slots`` exhausted, no privilege) the step is ``skipped`` with
the reason, the promotion goes on (availability first), and failback then needs a full re-copy.

**Disk usage.** The slot retains WAL on the new primary until the reverse subscription consumes
it. If failback is never prepared the WAL grows without bound: watch the replication signal's slot
lag (it reads this slot: same name as the forward one), set ``max_slot_wal_keep_size`` on the new
primary to cap it (the slot is then invalidated, ``wal_status = lost``, and prepare-failback refuses
with "full re-copy needed"), or give up on failback with :func:`drop_reverse_slot` (the
``abandon failback`` clean-up). Aborting a halted promotion does not need it: the promotion, retried,
keeps the slot it made.

:func:`touched_keys` decodes the ``pgoutput`` messages of a slot (peeked, not consumed) into the
keys written after promotion, table by table, so prepare-failback can tell which differences the
slot will carry to the old primary and which it will not (see :mod:`actions.database.failback`).
Any key the reconciliation accepts works (:mod:`actions.reconcile.shape`: the primary key or a
declared unique key, any types, composite): the decoded text values are normalised in the database
to the form the reconciliation reports keys in, so the two match (:func:`normalise`).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from actions.database.results import ActionResult, Step, summarize
from actions.reconcile.shape import TableShape, key_expr
from engine.config.database import DatabaseConfig
from probes.postgres_conn import PgError, connect, describe_pg_error

PUBLISHED = "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2"
SUBSCRIBED = """
SELECT n.nspname, c.relname FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
JOIN pg_class c ON c.oid = r.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE s.subname = %s ORDER BY 1, 2
"""
SLOT = ("SELECT plugin, active, wal_status, database = current_database() FROM pg_replication_slots "
        "WHERE slot_name = %s")


def _listed(tables: list[tuple[str, str]]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables)


async def ensure_publication(conn: psycopg.AsyncConnection[Any], pub: str, tables: list[tuple[str, str]],
                             ) -> tuple[str, list[tuple[str, str]]]:
    """Create ``pub`` with ``tables`` or add the missing ones; returns (what was done, tables added)."""
    exists = await (await conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (pub,))).fetchone()
    if exists is None:
        await conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(pub), _listed(tables)))
        return f"created {pub} ({len(tables)} tables)", []
    have = {(str(s), str(t)) for s, t in await (await conn.execute(PUBLISHED, (pub,))).fetchall()}
    missing = [t for t in tables if t not in have]
    if missing:
        await conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(pub), _listed(missing)))
        return f"added {', '.join(f'{s}.{t}' for s, t in missing)} to {pub}", missing
    return f"{pub} has all {len(tables)} tables", []


async def ensure_reverse_slot(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig, site: str) -> Step:
    """On the promoted ``site`` (before writes): publication of the replicated tables, then the slot."""
    t0 = time.perf_counter()
    pub, slot = config.publication, config.slot_name
    try:
        tables = [(str(s), str(t)) for s, t in await (await conn.execute(SUBSCRIBED, (config.subscription,)))
                  .fetchall()]
        if not tables:
            tables = [(str(s), str(t)) for s, t in await (await conn.execute(PUBLISHED, (pub,))).fetchall()]
        if not tables:
            return Step("reverse slot", "skipped",
                        f"no replicated tables known (subscription {config.subscription} lists none): "
                        "failback will need a full re-copy", time.perf_counter() - t0)
        done, _ = await ensure_publication(conn, pub, tables)
        row = await (await conn.execute(SLOT, (slot,))).fetchone()
        if row is None:
            await conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
            made = f"slot {slot} created (retains WAL until failback is prepared)"
        elif row[0] != "pgoutput" or not row[3]:
            return Step("reverse slot", "skipped", f"{done}; a slot {slot} of another kind or database exists: "
                        "failback will need a full re-copy", time.perf_counter() - t0)
        else:
            made = f"slot {slot} kept" + (f" (wal_status {row[2]})" if row[2] not in (None, "reserved") else "")
    except psycopg.Error as exc:
        return Step("reverse slot", "skipped", f"{describe_pg_error(exc)}: failback will need a full re-copy",
                    time.perf_counter() - t0)
    return Step("reverse slot", "ok", f"{done}, {made}", time.perf_counter() - t0)


async def drop_reverse_slot(config: DatabaseConfig, site: str) -> ActionResult:
    """Give up on failback: drop the reverse slot on ``site`` so it stops retaining WAL (idempotent)."""
    t0 = time.perf_counter()
    slot = config.slot_name
    try:
        async with await connect(config.sites[site], statement_timeout=config.promotion.statement_timeout,
                                 writable=True, application_name="failover-engine failback") as conn:
            row = await (await conn.execute(SLOT, (slot,))).fetchone()
            if row is None:
                step = Step("reverse slot", "ok", f"no slot {slot} on {site}", time.perf_counter() - t0)
            elif row[1]:
                step = Step("reverse slot", "failed", f"slot {slot} is in use (a reverse subscription reads it)",
                            time.perf_counter() - t0)
            else:
                await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                step = Step("reverse slot", "ok", f"dropped slot {slot} on {site}", time.perf_counter() - t0)
    except (PgError, psycopg.Error) as exc:
        step = Step("reverse slot", "failed", str(exc) if isinstance(exc, PgError) else describe_pg_error(exc))
    return summarize("reverse slot drop", site, [step])


# -- pgoutput decoding ---------------------------------------------------------------------------
Rel = tuple[str, str]


@dataclass
class Touched:
    """Keys written after promotion, per ``(schema, table)``; ``complete`` False when not all was decoded.

    ``raw``: each change's key as decoded (one text value per key column); ``keys``: the same keys
    normalised as the reconciliation reports them (:func:`key_form`): an int for an integer column,
    the canonical text form otherwise, a tuple for a composite key.
    """

    keys: dict[Rel, set[Any]] = field(default_factory=dict)
    truncated: set[Rel] = field(default_factory=set)
    changes: int = 0
    complete: bool = True
    note: str = ""
    raw: dict[Rel, set[tuple[str, ...]]] = field(default_factory=dict)
    decoded: set[Rel] = field(default_factory=set)  # the tables whose keys were looked for

    def has(self, table: Rel, key: Any) -> bool:
        return key in self.keys.get(table, ())

    def incomplete(self, note: str) -> None:
        self.complete = False
        self.note = f"{self.note}; {note}" if self.note else note


def key_form(values: list[Any] | tuple[Any, ...]) -> Any:
    """Pure: a key as the reconciliation's JSON gives it to failback: one column as its value, a
    composite key as a tuple (see :func:`actions.database.quarantine.row_key`)."""
    return values[0] if len(values) == 1 else tuple(values)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated message")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> str:
        return self.take(1).decode("latin-1")

    def int16(self) -> int:
        return int(struct.unpack("!h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack("!i", self.take(4))[0])

    def cstring(self) -> str:
        end = self.data.index(b"\0", self.pos)
        out = self.data[self.pos:end].decode()
        self.pos = end + 1
        return out

    def tuple(self) -> list[str | None]:
        values: list[str | None] = []
        for _ in range(self.int16()):
            kind = self.byte()
            if kind in ("t", "b"):
                values.append(self.take(self.int32()).decode(errors="replace") if kind == "t" else None)
            else:  # 'n' null, 'u' unchanged TOAST value
                values.append(None)
        return values


def uncovered_note(table: Rel) -> str:
    """Pure: why the changes of ``table`` cannot be decoded into keys (its key is not its replica identity)."""
    return (f"table {table[0]}.{table[1]}: an update or delete on it names only its replica identity, which does "
            "not cover the declared key (a changed or deleted key would go unseen): make the key the replica "
            "identity (ALTER TABLE ... REPLICA IDENTITY USING INDEX <the key's unique index>, or FULL)")


def _relation(r: _Reader, key_columns: dict[Rel, tuple[str, ...]]) -> tuple[Rel, list[int] | None, bool]:
    """A relation message (after its id): the table, the positions of its key columns (None: not a
    table looked for, or the key is not among its columns) and whether its replica identity covers the key."""
    name = (r.cstring(), r.cstring())
    identity_kind = r.byte()  # replica identity: d(efault), n(othing), f(ull), i(ndex)
    columns, identity = [], set()
    for _ in range(r.int16()):
        flags = r.take(1)[0]
        columns.append(r.cstring())
        if flags & 1:  # part of the replica identity (every column under FULL)
            identity.add(columns[-1])
        r.take(8)  # type oid, typmod
    wanted = key_columns.get(name)
    indexes = [columns.index(c) for c in wanted] if wanted and all(c in columns for c in wanted) else None
    return name, indexes, identity_kind == "f" or (wanted is not None and set(wanted) <= identity)


def touched_keys(messages: list[bytes], key_columns: dict[Rel, tuple[str, ...]]) -> Touched:
    """Pure: decode ``pgoutput`` (protocol 1) messages into the keys (``raw``, as text) of
    ``key_columns``' tables. A change whose key is not all there (an unchanged TOAST value) makes
    the decoding incomplete: never guessed. So does any update or delete of a table whose key is
    not covered by its replica identity (the relation message flags the identity's columns): an
    update that changes such a key sends only the new key, and the old one would silently look
    "not written since promotion"."""
    out = Touched(decoded=set(key_columns))
    relations: dict[int, tuple[Rel, list[int] | None, bool]] = {}
    for message in messages:
        r = _Reader(message)
        try:
            kind = r.byte()
            if kind == "R":
                relid = r.int32()
                relations[relid] = _relation(r, key_columns)
            elif kind in ("I", "U", "D"):
                relid = r.int32()
                tuples = []
                while r.pos < len(r.data):
                    if r.byte() not in ("K", "O", "N"):
                        raise ValueError("unexpected tuple tag")
                    tuples.append(r.tuple())
                known = relations.get(relid)
                out.changes += 1
                if known is None:
                    continue
                name, indexes, covered = known
                if indexes is None:
                    continue
                if kind != "I" and not covered:  # the old key is sent only when it is (part of) the identity
                    out.incomplete(uncovered_note(name))
                    return out
                found = False
                for values in tuples:
                    key = [values[i] if i < len(values) else None for i in indexes]
                    if all(v is not None for v in key):
                        out.raw.setdefault(name, set()).add(tuple(str(v) for v in key))
                        found = True
                if not found:
                    out.incomplete(f"a change of {name[0]}.{name[1]} without its key values (a key that is "
                                   "not the replica identity, or an unchanged TOAST value)")
                    return out
            elif kind == "T":
                count = r.int32()
                r.byte()
                for _ in range(count):
                    relid = r.int32()
                    if relid in relations:
                        out.truncated.add(relations[relid][0])
            elif kind not in ("B", "C", "O", "Y", "M"):
                out.incomplete(f"unknown pgoutput message {kind!r}")
                return out
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            out.incomplete(f"undecodable pgoutput message: {exc}")
            return out
    return out


def normalised_ints(raw: set[tuple[str, ...]]) -> set[Any]:
    """Pure: keys of integer columns only, as ints (what the reconciliation reports for them)."""
    return {key_form([int(v) for v in key]) for key in raw}


async def normalise(conn: psycopg.AsyncConnection[Any], touched: Touched, shapes: dict[Rel, TableShape]) -> None:
    """Fill ``touched.keys`` from ``touched.raw``: every value cast to its column's type and back to the
    reconciliation's form (:func:`~actions.reconcile.shape.key_expr`: ints for integer columns,
    ``trim_scale`` for numeric ones, the canonical text form otherwise), in the
    database, so any type's text (a padded ``char(n)``, a timestamp) reads as the reconciliation reads it.
    ``conn`` must run under :data:`~actions.reconcile.shape.CANONICAL_SETTINGS`."""
    for rel, raw in touched.raw.items():
        shape = shapes.get(rel)
        if shape is None or not raw:
            continue
        if all(c.is_int for c in shape.key):
            touched.keys[rel] = normalised_ints(raw)
            continue
        width = len(shape.key)
        arrays = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in range(width))
        names = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(width))
        exprs = sql.SQL(", ").join(key_expr(c, sql.SQL("{}::{}").format(sql.Identifier("d", f"k{i}"), sql.SQL(c.type)))
                                   for i, c in enumerate(shape.key))
        rows = list(raw)
        cur = await conn.execute(sql.SQL("SELECT {} FROM unnest({}) AS d({})").format(exprs, arrays, names),
                                 [[r[i] for r in rows] for i in range(width)])
        touched.keys[rel] = {key_form(list(r)) for r in await cur.fetchall()}


PEEK_LIMIT = 200_000


async def peek_touched(conn: psycopg.AsyncConnection[Any], slot: str, pub: str, shapes: dict[Rel, TableShape], *,
                       limit: int = PEEK_LIMIT) -> Touched:
    """Peek (not consume) the inactive slot ``slot`` and decode the keys it carries, normalised.
    ``conn`` must run under :data:`~actions.reconcile.shape.CANONICAL_SETTINGS` (the decoded text
    forms are the session's)."""
    try:
        async with conn.transaction():  # a savepoint inside the caller's transaction: a timeout does not abort it
            cur = await conn.execute("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, "
                                     "'proto_version', '1', 'publication_names', %s)", (slot, limit, pub))
            rows = await cur.fetchall()
    except psycopg.errors.QueryCanceled:
        return Touched(complete=False, note="the slot could not be decoded within the statement timeout")
    touched = touched_keys([bytes(row[0]) for row in rows], {rel: s.key_names for rel, s in shapes.items()})
    if len(rows) >= limit and touched.complete:
        touched.incomplete(f"more than {limit} changes: only the first ones were read")
    await normalise(conn, touched, shapes)
    return touched

"""Preparing failback: replicate the other way, from the new primary back to the returned old one.

Design. The promotion created, before the new primary took any write, the publication and a
logical slot on it (:mod:`actions.database.reverse`): the slot holds *exactly* the writes made since
promotion. The old primary subscribes to that slot with ``create_slot = false, copy_data = false``,
so nothing is re-copied and nothing written after promotion is missed. What the reverse stream
cannot fix is a difference that already existed *at promotion*: writes the old primary committed
that never reached the standby (lost at failover), or its deletes that never arrived.

Reconciliation runs now, not at promotion, so it also sees the post-promotion writes. Rather than
guess from timestamps, the slot is **peeked** (decoded, not consumed) and every differing row is
classified: a key the new primary wrote after promotion is *explained* (the stream brings the old
primary to the new primary's version); any other difference is *unexplained*: a row only the old
primary holds (a write lost at failover), a row it changed, or one it deleted. Unexplained rows
are never overwritten silently: they are listed in the result (``data["differences"]["unexplained"]``)
and the preparation is **refused** unless the caller passes ``acknowledge=True`` (the operator
accepts to keep them on the old primary as they are). Without row details in the given
reconciliation (a summary only) the comparison is run here, without a watermark (the old primary
receives nothing, so nothing is in flight); a reconciliation that counted more differing rows than
it listed is run again here with up to :data:`LIST_LIMIT` rows listed per table, so the rows can be
kept. Limits, stated: a row the old primary changed (lost) *and* the new primary changed again
after promotion is indistinguishable from an ordinary post-promotion update, and the stream
overwrites it; its old version is kept in the quarantine (below), and the consistency check's
data-loss window bounds how many such writes there can be. A difference in a business metric is
reported, not gated (post-promotion writes move metrics).

**Quarantine.** Before anything can overwrite the old primary, every differing row it holds (only
there, or different there; explained or not) is copied into a quarantine schema on the old primary
(:mod:`actions.database.quarantine`: one table per source table, ``<table>__<tag>``, never
published). The tag is the new primary's site and the reverse slot's start LSN: stable until the
reverse subscription consumes the slot, so a preparation that failed later and is run again finds
the same tables and duplicates nothing. The listing is the result's ``data["quarantine"]`` (and the
step's sentence), so the operator's journal record and API answer name every kept table and key.
If the rows cannot be kept, the preparation fails before the old subscription is touched.

**Keys.** Rows are matched by the key the reconciliation compared on (the configured ``key`` or
the primary key; any types, composite keys too): the slot's decoded keys are normalised to the
reconciliation's form (:func:`actions.database.reverse.normalise`) and the quarantine casts keys
to each column's type. A table whose key cannot be matched is named with the reason: its rows
are unexplained (the gate) or the quarantine refuses (nothing is resynchronised).

**Conflict policy** per table (``reconcile.tables[].conflict``): ``keep_new`` (default: a row the
new primary wrote after promotion is overwritten on the old one by the stream; only rows lost at
failover are quarantined), ``keep_both`` (the overwritten old versions are quarantined too) or
``last_writer_wins`` (quarantined too; then the old version is written onto the new primary when
it is later by the declared ``updated_at``, or when it is a write lost at failover that the new
primary did not delete since: :mod:`actions.database.last_writer`). The rows of such a table that
the old primary holds (alone or changed) and the slot does not explain need no acknowledgement: the
policy settles each of them (listed in ``data["differences"]["last_writer_wins"]``, then in
``data["last_writer_wins"]``); a row only on the new primary that it did not write since promotion
(the old primary's delete, lost) still does.

Steps (each checks before it acts, so running it again is harmless; once the reverse
subscription exists a re-run only checks and waits, the gate is not repeated):

1. ``reverse slot``: the slot made at promotion exists on the new primary, is ``pgoutput``, not
   invalidated (``wal_status = lost``: a full re-copy is needed) and not read by someone else;
2. ``publication``: on the new primary, with every table the old primary published (tables added
   only now were not published between promotion and now: said in the step; the quarantine
   schema's tables are never among them);
   (``last writer wins``, only when it fails: a ``last_writer_wins`` table whose key or column
   cannot order writes on either side; nothing is changed);
3. ``reconciliation``: the gate above;
4. ``quarantine``: the old primary's differing rows copied into the quarantine schema (above);
   skipped when nothing differs, or when the reverse subscription already exists;
   then ``last writer wins`` (only with such tables): the later old versions written onto the new
   primary with a compare-and-set; ``data["last_writer_wins"]`` lists per table what was applied,
   what was kept new, and why;
5. ``old subscription``: on the new primary, the disabled subscription from before the failover is
   detached and dropped; its slot on the old primary is dropped (it would hold WAL forever);
6. ``reverse subscription``: on the old primary, ``CREATE SUBSCRIPTION ... WITH (create_slot =
   false, slot_name = <slot>, copy_data = false)`` pointing at the new primary (re-enabled if it
   exists);
7. ``catch-up``: wait, bounded, until the slot has confirmed the new primary's current LSN;
8. ``heartbeat``: heartbeat rows of the new primary (``primary_site = new``) that the old primary
   still lacks are copied once, after catch-up. A row inserted before the slot existed would
   otherwise never appear on the old primary (its later upserts replicate as UPDATEs of a missing
   row, which logical replication skips) and the reverse lag probe would read "no heartbeat row"
   forever. Copying only *after* catch-up and only *missing or older* rows cannot collide with an
   INSERT still in the stream.

The old primary stays fenced (logical apply workers write even into a
``default_transaction_read_only`` database). When the reverse subscription cannot be created,
catch-up is not waited for (it cannot happen).

Secrets: the reverse subscription's connection string names the new primary. When the new
primary's site config has ``replication_passfile`` (a libpq password file *on the old primary's
host*), the string carries ``passfile=...`` and no password. Otherwise the password is embedded,
and then it is stored in ``pg_subscription.subconninfo`` on the old primary (readable by
superusers only; ``pg_dump`` of subscriptions includes it): prefer a passfile, or a certificate /
``trust`` for the replication user. Either way, the session that runs ``CREATE SUBSCRIPTION``
first sets ``log_statement = none``, ``log_min_duration_statement = -1`` and
``log_min_error_statement = panic`` (when the role may; they are superuser settings), so neither a
failed nor a slow statement copies the string into the old primary's server log. Error reasons
returned to the caller are masked (:func:`~probes.postgres_conn.describe_pg_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any

import psycopg
from psycopg import sql

from actions.database.failback_gate import before_resync
from actions.database.failback_plan import Reconciled
from actions.database.last_writer import STEP as LWW_STEP
from actions.database.last_writer import policy_tables
from actions.database.quarantine import DEFAULT_SCHEMA
from actions.database.results import ActionResult, Step, summarize
from actions.database.reverse import PUBLISHED, SLOT, SUBSCRIBED, ensure_publication
from actions.database.synchronous import reprotect_step
from engine.config.database import DatabaseConfig
from probes.postgres import format_bytes, table_ident
from probes.postgres_conn import PgError, connect, conninfo, describe_pg_error

REQUIRED = ("reverse slot", "publication", "reconciliation", "quarantine", "old subscription",
            "reverse subscription", "catch-up", "heartbeat")
# a failed or slow CREATE SUBSCRIPTION must not copy its connection string into the server log
QUIET = ("SET log_statement = 'none'", "SET log_min_duration_statement = -1",
         "SET log_min_error_statement = panic")


async def slot_lag_bytes(conn: psycopg.AsyncConnection[Any], slot: str) -> int | None:
    """Bytes of WAL the slot has not confirmed; None when the slot does not exist."""
    cur = await conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                             "FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def prepare_failback(config: DatabaseConfig, new_primary: str, reconciliation: Reconciled | None, *,
                           acknowledge: bool = False, catch_up_timeout: float = 30.0,
                           quarantine_schema: str = DEFAULT_SCHEMA, quarantine_tag: str | None = None,
                           ) -> ActionResult:
    """Set up replication ``new_primary`` → old primary (module docstring); never raises for server errors.

    ``acknowledge``: go on although some differences are not explained by writes made after
    promotion (they are reported and kept on the old primary as they are, and quarantined).
    ``quarantine_schema`` / ``quarantine_tag``: where the old primary's differing rows are kept; the
    tag defaults to the new primary's site and the reverse slot's start LSN (module docstring).
    """
    old = config.other_site(new_primary)
    steps: list[Step] = []
    data: dict[str, Any] = {}
    if reconciliation is None:
        steps.append(Step("reconciliation", "failed", "the databases must be reconciled first "
                          "(no reconciliation result)"))
        return summarize("failback preparation", old, steps)
    timeout = config.promotion.statement_timeout
    pub, sub, slot = config.publication, config.subscription, config.slot_name
    try:
        async with asyncio.timeout(config.promotion.timeout + catch_up_timeout):
            async with await connect(config.sites[new_primary], statement_timeout=timeout, writable=True,
                                     application_name="failover-engine failback") as new, \
                    await connect(config.sites[old], statement_timeout=timeout, writable=True,
                                  application_name="failover-engine failback") as back:
                existing = await (await back.execute(
                    "SELECT subenabled FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                    "AND d.datname = current_database() WHERE subname = %s", (sub,))).fetchone()
                slot_step = await _check_slot(new, slot, set_up=existing is not None)
                steps.append(slot_step)
                if slot_step.status == "failed":
                    return _result(old, steps, data)
                publication = await _publication(new, back, config, new_primary, old, fresh=existing is None,
                                                 skip_schema=quarantine_schema)
                steps.append(publication)
                if publication.status == "failed":
                    return _result(old, steps, data)
                if existing is None:
                    kept = await before_resync(config, new, back, new_primary, old, reconciliation,
                                               acknowledge=acknowledge, schema=quarantine_schema,
                                               tag=quarantine_tag, data=data)
                    steps.extend(kept)
                    if any(step.status == "failed" for step in kept):
                        return _result(old, steps, data)
                else:
                    steps.append(Step("reconciliation", "skipped", f"{sub} already set up on {old}"))
                    steps.append(Step("quarantine", "skipped", f"not repeated: {sub} already set up on {old}"))
                    if policy_tables(config):
                        steps.append(Step(LWW_STEP, "skipped", f"not repeated: {sub} already set up on {old}"))
                steps.append(await _drop_old_subscription(new, back, sub, slot))
                reverse = await _reverse_subscription(back, config, new_primary, sub, pub)
                steps.append(reverse)
                if reverse.status == "failed":
                    steps.append(Step("catch-up", "failed", "not attempted: no reverse subscription"))
                    return _result(old, steps, data)
                t0 = time.perf_counter()
                lag = await _wait_caught_up(new, back, sub, slot, catch_up_timeout)
                if lag == 0:
                    steps.append(Step("catch-up", "ok", f"{old} has applied everything from {new_primary}",
                                      time.perf_counter() - t0))
                    steps.append(await _copy_heartbeats(new, back, config, new_primary))
                    if config.synchronous != "off":
                        steps.append(await reprotect_step(config, new_primary))
                else:
                    behind = "no slot yet" if lag is None else f"{format_bytes(lag)} behind"
                    steps.append(Step("catch-up", "failed", f"{behind} after {catch_up_timeout:g}s",
                                      time.perf_counter() - t0))
                    steps.append(Step("heartbeat", "skipped", "not before catch-up (prepare again)"))
    except TimeoutError:
        steps.append(Step("timeout", "failed", "failback preparation timed out"))
    except (PgError, psycopg.Error) as exc:
        steps.append(Step("failback", "failed", str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)))
    return _result(old, steps, data)


def _result(old: str, steps: list[Step], data: dict[str, Any]) -> ActionResult:
    """The preparation's result; an incomplete one still says which rows were quarantined (its
    sentence otherwise names only the failed steps, and the kept rows matter to whoever reads it)."""
    result = summarize("failback preparation", old, steps, data=data, required=REQUIRED)
    kept = next((s for s in steps if s.name == "quarantine" and s.status == "ok"), None)
    if result.ok or kept is None:
        return result
    return dataclasses.replace(result, sentence=f"{result.sentence}; quarantine: {kept.detail}")


async def _publication(new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any],
                       config: DatabaseConfig, new_primary: str, old: str, *, fresh: bool,
                       skip_schema: str = DEFAULT_SCHEMA) -> Step:
    """The publication on the new primary with every table the old primary published.

    Tables of ``skip_schema`` (the quarantine: it exists on the old primary only) are never added.
    """
    t0 = time.perf_counter()
    pub, sub = config.publication, config.subscription
    tables: list[tuple[str, str]] = []
    for conn, query, name in ((back, PUBLISHED, pub), (new, SUBSCRIBED, sub), (new, PUBLISHED, pub)):
        tables = [(str(s), str(t)) for s, t in await (await conn.execute(query, (name,))).fetchall()
                  if str(s) != skip_schema]
        if tables:
            break
    if not tables:
        return Step("publication", "failed", f"no tables known: publication {pub} on {old} and subscription "
                    f"{sub} on {new_primary} are both missing or empty", time.perf_counter() - t0)
    done, added = await ensure_publication(new, pub, tables)
    if added and fresh:
        done += " (writes to them before now were not published: reconcile them)"
    return Step("publication", "ok", f"{done} on {new_primary}", time.perf_counter() - t0)


async def _check_slot(new: psycopg.AsyncConnection[Any], slot: str, *, set_up: bool) -> Step:
    t0 = time.perf_counter()
    row = await (await new.execute(SLOT, (slot,))).fetchone()
    if row is None:
        return Step("reverse slot", "failed", f"no slot {slot} on the new primary (the promotion makes it before "
                    "any write): writes since promotion cannot be replayed, a full re-copy is needed",
                    time.perf_counter() - t0)
    plugin, active, wal_status, here = row
    if plugin != "pgoutput" or not here:
        return Step("reverse slot", "failed", f"slot {slot} is not a pgoutput slot of this database",
                    time.perf_counter() - t0)
    if wal_status == "lost":
        return Step("reverse slot", "failed", f"slot {slot} was invalidated (WAL removed, max_slot_wal_keep_size): "
                    "a full re-copy is needed", time.perf_counter() - t0)
    if active and not set_up:
        return Step("reverse slot", "failed", f"slot {slot} is read by another consumer", time.perf_counter() - t0)
    return Step("reverse slot", "ok", f"{slot} ({'in use' if active else 'waiting'}, wal_status {wal_status})",
                time.perf_counter() - t0)


async def _copy_heartbeats(new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any],
                           config: DatabaseConfig, new_primary: str) -> Step:
    """After catch-up: the new primary's heartbeat rows the old primary lacks (or has older), copied once."""
    t0 = time.perf_counter()
    table = table_ident(config.heartbeat.table)
    try:
        cur = await new.execute(sql.SQL("SELECT site, primary_site, beat_at, lsn::text, written_at FROM {} "
                                        "WHERE primary_site = %s").format(table), (new_primary,))
        rows = await cur.fetchall()
        copied = 0
        for row in rows:
            cur = await back.execute(sql.SQL(
                "INSERT INTO {} AS h (site, primary_site, beat_at, lsn, written_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (site, primary_site) DO UPDATE SET beat_at = excluded.beat_at, lsn = excluded.lsn, "
                "written_at = excluded.written_at WHERE h.beat_at < excluded.beat_at").format(table), row)
            copied += cur.rowcount or 0
    except psycopg.errors.UndefinedTable:
        return Step("heartbeat", "skipped", f"no table {config.heartbeat.table} (run `db init`)",
                    time.perf_counter() - t0)
    if not rows:
        return Step("heartbeat", "ok", f"no heartbeat on {new_primary} yet", time.perf_counter() - t0)
    return Step("heartbeat", "ok", f"{copied} of {len(rows)} heartbeat row{'s' * (len(rows) != 1)} copied "
                f"(the others arrived through the slot)", time.perf_counter() - t0)


async def _drop_old_subscription(new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any],
                                 sub: str, slot: str) -> Step:
    t0 = time.perf_counter()
    notes = []
    row = await (await new.execute("SELECT subenabled, subslotname FROM pg_subscription s JOIN pg_database d "
                                   "ON d.oid = s.subdbid AND d.datname = current_database() WHERE subname = %s",
                                   (sub,))).fetchone()
    if row is not None:
        ident = sql.Identifier(sub)
        if row[0]:
            await new.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
        if row[1] is not None:
            await new.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
        await new.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
        notes.append(f"dropped {sub} on the new primary")
    # the old slot on the old primary: only when no subscription of ours on the old primary uses it
    mine = await (await back.execute("SELECT 1 FROM pg_subscription WHERE subslotname = %s", (slot,))).fetchone()
    held = await (await back.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s AND "
                                     "database = current_database()", (slot,))).fetchone()
    if held is not None and mine is None:
        if held[0]:
            return Step("old subscription", "failed", f"slot {slot} on the old primary is still in use",
                        time.perf_counter() - t0)
        await back.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        notes.append(f"dropped slot {slot} on the old primary")
    return Step("old subscription", "ok", ", ".join(notes) or "nothing left to remove", time.perf_counter() - t0)


async def _reverse_subscription(back: psycopg.AsyncConnection[Any], config: DatabaseConfig, new_primary: str,
                                sub: str, pub: str) -> Step:
    t0 = time.perf_counter()
    row = await (await back.execute("SELECT subenabled FROM pg_subscription s JOIN pg_database d "
                                    "ON d.oid = s.subdbid AND d.datname = current_database() WHERE subname = %s",
                                    (sub,))).fetchone()
    ident = sql.Identifier(sub)
    if row is None:
        source = conninfo(config.sites[new_primary], for_replication=True, application_name=sub)
        for setting in QUIET:  # not a superuser: the server's own settings decide (see the module docstring)
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                await back.execute(setting)
        try:
            await back.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} "
                                       "WITH (create_slot = false, copy_data = false, slot_name = {})").format(
                ident, sql.Literal(source), sql.Identifier(pub), sql.Literal(config.slot_name)))
        except psycopg.Error as exc:  # the message could quote the conninfo: keep only a safe reason
            return Step("reverse subscription", "failed", describe_pg_error(exc, config.sites[new_primary]),
                        time.perf_counter() - t0)
        return Step("reverse subscription", "ok", f"created {sub} on the slot made at promotion "
                    "(copy_data = false)", time.perf_counter() - t0)
    if not row[0]:
        await back.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(ident))
        return Step("reverse subscription", "ok", f"re-enabled {sub}", time.perf_counter() - t0)
    return Step("reverse subscription", "ok", f"{sub} already replicating", time.perf_counter() - t0)


async def _wait_caught_up(new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any], sub: str,
                          slot: str, timeout: float) -> int | None:
    """Poll until the reverse slot confirmed the LSN current at the start; return the last lag seen."""
    cur = await new.execute("SELECT pg_current_wal_lsn()::text")
    row = await cur.fetchone()
    target = row[0] if row else None
    deadline = time.monotonic() + timeout
    lag: int | None = None
    while True:
        cur = await new.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn, "
                                "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                                "FROM pg_replication_slots WHERE slot_name = %s", (target, slot))
        row = await cur.fetchone()
        if row is not None and row[0]:
            return 0
        lag = None if row is None or row[1] is None else int(row[1])
        if time.monotonic() > deadline:
            return lag
        await asyncio.sleep(0.1)

"""Preparing failback: replicate the other way, from the new primary back to the returned old one.

Only after reconciliation found the two databases identical (otherwise the reverse subscription,
which does not re-copy data, would silently keep the differences; the caller passes the result):

1. ``publication``: on the new primary, the publication with the tables the old primary published
   (read from the old primary, or from the old subscription if the old publication is gone);
2. ``old subscription``: on the new primary, the disabled subscription from before the failover is
   detached and dropped; its slot on the old primary is dropped (it would hold WAL forever);
3. ``reverse subscription``: on the old primary, ``CREATE SUBSCRIPTION ... WITH (copy_data = false)``
   pointing at the new primary (or re-enabled if it exists);
4. ``catch-up``: wait, bounded, until the new slot has confirmed the new primary's current LSN.

Every step checks before it acts, so running it again is harmless. The old primary stays fenced
(logical apply workers write even into a ``default_transaction_read_only`` database). When the
reverse subscription cannot be created, catch-up is not waited for (it cannot happen).

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
import time
from typing import Any, Protocol

import psycopg
from psycopg import sql

from actions.database.results import ActionResult, Step, summarize
from engine.config.database import DatabaseConfig
from probes.postgres import format_bytes
from probes.postgres_conn import PgError, connect, conninfo, describe_pg_error

PUBLISHED = "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2"
SUBSCRIBED = """
SELECT n.nspname, c.relname FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
JOIN pg_class c ON c.oid = r.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE s.subname = %s ORDER BY 1, 2
"""

REQUIRED = ("publication", "old subscription", "reverse subscription", "catch-up")
# a failed or slow CREATE SUBSCRIPTION must not copy its connection string into the server log
QUIET = ("SET log_statement = 'none'", "SET log_min_duration_statement = -1",
         "SET log_min_error_statement = panic")


class Reconciled(Protocol):
    """What failback needs to know from a reconciliation result."""

    @property
    def identical(self) -> bool: ...

    @property
    def sentence(self) -> str: ...


async def slot_lag_bytes(conn: psycopg.AsyncConnection[Any], slot: str) -> int | None:
    """Bytes of WAL the slot has not confirmed; None when the slot does not exist."""
    cur = await conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                             "FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def prepare_failback(config: DatabaseConfig, new_primary: str, reconciliation: Reconciled | None, *,
                           catch_up_timeout: float = 30.0) -> ActionResult:
    """Set up replication ``new_primary`` → old primary; never raises for server errors."""
    old = config.other_site(new_primary)
    steps: list[Step] = []
    if reconciliation is None or not reconciliation.identical:
        why = "no reconciliation result" if reconciliation is None else reconciliation.sentence
        steps.append(Step("reconciliation", "failed", f"the databases must be reconciled first ({why})"))
        return summarize("failback preparation", old, steps)
    timeout = config.promotion.statement_timeout
    pub, sub, slot = config.publication, config.subscription, config.slot_name
    try:
        async with asyncio.timeout(config.promotion.timeout + catch_up_timeout):
            async with await connect(config.sites[new_primary], statement_timeout=timeout, writable=True,
                                     application_name="failover-engine failback") as new, \
                    await connect(config.sites[old], statement_timeout=timeout, writable=True,
                                  application_name="failover-engine failback") as back:
                t0 = time.perf_counter()
                tables = [tuple(r) for r in await (await back.execute(PUBLISHED, (pub,))).fetchall()]
                if not tables:
                    tables = [tuple(r) for r in await (await new.execute(SUBSCRIBED, (sub,))).fetchall()]
                if not tables:
                    steps.append(Step("publication", "failed",
                                      f"no tables known: publication {pub} on {old} and subscription {sub} "
                                      f"on {new_primary} are both missing or empty"))
                    return summarize("failback preparation", old, steps)
                have = {tuple(r) for r in await (await new.execute(PUBLISHED, (pub,))).fetchall()}
                exists = await (await new.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                                                  (pub,))).fetchone()
                listed = sql.SQL(", ").join(sql.Identifier(str(s), str(t)) for s, t in tables)
                if exists is None:
                    await new.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(pub),
                                                                                          listed))
                    steps.append(Step("publication", "ok", f"created {pub} on {new_primary} "
                                      f"({len(tables)} tables)", time.perf_counter() - t0))
                else:
                    missing = [t for t in tables if t not in have]
                    if missing:
                        await new.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                            sql.Identifier(pub), sql.SQL(", ").join(sql.Identifier(str(s), str(t))
                                                                    for s, t in missing)))
                    steps.append(Step("publication", "ok", f"{pub} on {new_primary} has all {len(tables)} tables",
                                      time.perf_counter() - t0))
                steps.append(await _drop_old_subscription(new, back, sub, slot))
                reverse = await _reverse_subscription(back, config, new_primary, sub, pub)
                steps.append(reverse)
                if reverse.status == "failed":
                    steps.append(Step("catch-up", "failed", "not attempted: no reverse subscription"))
                    return summarize("failback preparation", old, steps, required=REQUIRED)
                t0 = time.perf_counter()
                lag = await _wait_caught_up(new, back, sub, slot, catch_up_timeout)
                if lag == 0:
                    steps.append(Step("catch-up", "ok", f"{old} has applied everything from {new_primary}",
                                      time.perf_counter() - t0))
                else:
                    behind = "no slot yet" if lag is None else f"{format_bytes(lag)} behind"
                    steps.append(Step("catch-up", "failed", f"{behind} after {catch_up_timeout:g}s",
                                      time.perf_counter() - t0))
    except TimeoutError:
        steps.append(Step("timeout", "failed", "failback preparation timed out"))
    except (PgError, psycopg.Error) as exc:
        steps.append(Step("failback", "failed", str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)))
    return summarize("failback preparation", old, steps, required=REQUIRED)


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
                                       "WITH (copy_data = false, slot_name = {})").format(
                ident, sql.Literal(source), sql.Identifier(pub), sql.Literal(config.slot_name)))
        except psycopg.Error as exc:  # the message could quote the conninfo: keep only a safe reason
            return Step("reverse subscription", "failed", describe_pg_error(exc, config.sites[new_primary]),
                        time.perf_counter() - t0)
        return Step("reverse subscription", "ok", f"created {sub} (copy_data = false)", time.perf_counter() - t0)
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

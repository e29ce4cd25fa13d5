"""Re-initialise a subscription whose slot was dropped: a fresh slot and subscription with ``copy_data``.

When a slot kept too much WAL someone drops it (``pg_drop_replication_slot``), or PostgreSQL
invalidates it (``max_slot_wal_keep_size``); the subscriber can never catch up from where it was.
The way back is a full copy: on the subscriber (the standby, ``site``) the old subscription is
detached and dropped, the published tables are emptied, and ``CREATE SUBSCRIPTION ... WITH
(copy_data = true, create_slot = true)`` makes a new slot on the primary and copies every table.

It refuses, changing nothing, when that would lose data or go the wrong way:

- ``site`` is the active site (the engine's journal says so; else the service's configured ``active``),
  or the other site is fenced (read-only): the copy must flow from the primary to the standby;
- the publication is missing on the primary, or the slot exists and is in use (nothing to do);
- a row of a published table on the subscriber is missing on the primary (by its primary key, one
  column or several): emptying the table would lose it. Reconcile first (``failover-engine reconcile``),
  or keep the rows (quarantine); a non-empty table without a primary key cannot be proven and refuses.

:func:`inspect` reads both sides, :func:`plan` (pure) gives the statements or the refusals, and
:func:`reinit_subscription` runs the plan (``dry_run``: only returns it). The printed
``CREATE SUBSCRIPTION`` masks the password; the executed one carries the real connection string
(prefer ``replication_passfile``), in a session that keeps statements out of the server log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from actions.database.failback import QUIET
from engine.config.database import DatabaseConfig
from probes.postgres_conn import PgError, connect, conninfo, describe_pg_error

CHUNK = 10_000  # subscriber keys checked on the primary per query
SHOWN = 10  # rows named in a refusal
KEY = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)
"""


@dataclass
class Facts:
    """What both sides hold now."""

    subscriber: str
    publisher: str
    active: str
    publisher_read_only: bool = False
    publication: bool = False
    tables: list[tuple[str, str]] = field(default_factory=list)  # published (schema, table)
    slot: bool | None = None  # None: no slot; else whether it is active (in use)
    subscription: bool | None = None  # None: none; else whether it is enabled
    non_empty: list[str] = field(default_factory=list)  # published tables with rows on the subscriber
    only_here: dict[str, list[str]] = field(default_factory=dict)  # table -> keys missing on the publisher
    unprovable: list[str] = field(default_factory=list)  # non-empty tables without a primary key


@dataclass(frozen=True)
class Plan:
    """The statements to run per side, in order, or why not."""

    refusals: tuple[str, ...]
    statements: tuple[tuple[str, str], ...]  # (site, SQL as printed)


def _table(schema: str, name: str) -> str:
    return sql.Identifier(schema, name).as_string(None)


def plan(config: DatabaseConfig, facts: Facts) -> Plan:
    """What re-initialising means for ``facts`` (pure): the refusals, else the statements in order."""
    sub, pub, slot = config.subscription, config.publication, config.slot_name
    s, p = facts.subscriber, facts.publisher
    refusals = []
    if s == facts.active:
        refusals.append(f"{s} is the active site (the primary): a copy must flow to the standby, not into the primary")
    if facts.publisher_read_only:
        refusals.append(f"{p} is fenced (read-only): it is not the primary to copy from")
    if not facts.publication:
        refusals.append(f"publication {pub} does not exist on {p}: create it first (replication-broken.md)")
    if facts.slot is True:
        refusals.append(f"slot {slot} on {p} exists and is in use: nothing to re-initialise")
    elif facts.slot is False and facts.subscription is not None:
        refusals.append(f"slot {slot} on {p} still exists and {sub} on {s} can use it: "
                        f"ALTER SUBSCRIPTION {sub} ENABLE instead (replication-broken.md)")
    for table, keys in facts.only_here.items():
        shown = ", ".join(keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")
        refusals.append(f"{table} on {s} holds {len(keys)} row(s) {p} does not have (key {shown}): emptying it "
                        "would lose them; reconcile and keep them first (failover-engine reconcile)")
    refusals += [f"{table} on {s} has rows and no primary key: cannot prove {p} has them"
                 for table in facts.unprovable]
    if refusals:
        return Plan(tuple(refusals), ())
    steps: list[tuple[str, str]] = []
    if facts.subscription is not None:
        steps += [(s, f"ALTER SUBSCRIPTION {sub} DISABLE"), (s, f"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)"),
                  (s, f"DROP SUBSCRIPTION {sub}")]
    if facts.slot is False:  # an orphan slot nobody uses: its position means nothing for a fresh copy
        steps.append((p, f"SELECT pg_drop_replication_slot('{slot}')"))
    if facts.non_empty:
        steps.append((s, "TRUNCATE " + ", ".join(facts.non_empty)))
    steps.append((s, f"CREATE SUBSCRIPTION {sub} CONNECTION '<{p}, password masked>' PUBLICATION {pub} "
                     f"WITH (copy_data = true, create_slot = true, slot_name = '{slot}')"))
    return Plan((), tuple(steps))


async def _rows(conn: psycopg.AsyncConnection[Any], query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query, params)
    return list(await cur.fetchall())


async def _missing_keys(sub_conn: psycopg.AsyncConnection[Any], pub_conn: psycopg.AsyncConnection[Any],
                        schema: str, table: str, key: list[tuple[str, str]]) -> list[str]:
    """Primary keys of ``table`` on the subscriber that the publisher lacks, walked in keyset pages (any number of
    key columns; every lookup on the publisher goes through its primary key index)."""
    ident = sql.Identifier(schema, table)
    cols = sql.SQL(", ").join(sql.Identifier(name) for name, _type in key)
    typed = sql.SQL(", ").join(sql.SQL("%s::" + typ) for _name, typ in key)  # type names from the catalog
    first = sql.SQL("SELECT {c} FROM {t} ORDER BY {c} LIMIT %s").format(c=cols, t=ident)
    page = sql.SQL("SELECT {c} FROM {t} WHERE ({c}) > ({v}) ORDER BY {c} LIMIT %s").format(c=cols, t=ident, v=typed)
    chunk = max(1, CHUNK // len(key))
    missing: list[str] = []
    last: tuple[Any, ...] | None = None
    while True:
        rows = await _rows(sub_conn, first, (chunk,)) if last is None else await _rows(sub_conn, page, (*last, chunk))
        if not rows:
            return missing
        values = sql.SQL(", ").join(sql.SQL("({})").format(typed) for _ in rows)
        probe = sql.SQL("SELECT {c} FROM {t} WHERE ({c}) IN (VALUES {v})").format(c=cols, t=ident, v=values)
        there = set(await _rows(pub_conn, probe, [value for row in rows for value in row]))
        missing += [str(row[0]) if len(row) == 1 else str(row) for row in rows if tuple(row) not in there]
        last = tuple(rows[-1])


async def inspect(config: DatabaseConfig, site: str, active: str, *, timeout: float) -> Facts:
    """Read both sides (raises PgError when one cannot be reached or read)."""
    publisher = config.other_site(site)
    facts = Facts(site, publisher, active)
    pub_conn = await connect(config.sites[publisher], statement_timeout=timeout, application_name="failover reinit")
    try:
        sub_conn = await connect(config.sites[site], statement_timeout=timeout, application_name="failover reinit")
    except PgError:
        await pub_conn.close()
        raise
    try:
        facts.publisher_read_only = (await _rows(pub_conn, "SHOW default_transaction_read_only"))[0][0] == "on"
        facts.publication = bool(await _rows(pub_conn, "SELECT 1 FROM pg_publication WHERE pubname = %s",
                                             (config.publication,)))
        facts.tables = [(r[0], r[1]) for r in await _rows(
            pub_conn, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2",
            (config.publication,))]
        slot = await _rows(pub_conn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                           (config.slot_name,))
        facts.slot = bool(slot[0][0]) if slot else None
        sub = await _rows(sub_conn, "SELECT subenabled FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                                    "AND d.datname = current_database() WHERE subname = %s", (config.subscription,))
        facts.subscription = bool(sub[0][0]) if sub else None
        for schema, table in facts.tables:
            name = _table(schema, table)
            if (await _rows(sub_conn, "SELECT to_regclass(%s)", (name,)))[0][0] is None:
                continue  # not on the subscriber: CREATE SUBSCRIPTION names it (its error is the answer)
            if not await _rows(sub_conn, sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(schema, table))):
                continue
            facts.non_empty.append(name)
            key = [(str(n), str(t)) for n, t in await _rows(sub_conn, KEY, (name,))]
            if not key:
                facts.unprovable.append(name)
                continue
            missing = await _missing_keys(sub_conn, pub_conn, schema, table, key)
            if missing:
                facts.only_here[name] = missing
    except (psycopg.Error, TimeoutError) as exc:
        raise PgError(describe_pg_error(exc)) from None
    finally:
        await pub_conn.close()
        await sub_conn.close()
    return facts


@dataclass(frozen=True)
class Reinit:
    """What was found, planned and done; ``ok`` when nothing was refused and every statement ran."""

    ok: bool
    plan: Plan
    done: tuple[str, ...]
    sentence: str


async def reinit_subscription(config: DatabaseConfig, site: str, active: str, *, dry_run: bool,
                              timeout: float = 60.0, sync_wait: float = 60.0) -> Reinit:
    """Re-initialise ``site``'s subscription (see the module docstring); never raises for server trouble."""
    try:
        facts = await inspect(config, site, active, timeout=timeout)
    except PgError as exc:
        why = f"cannot read both sites: {exc}"
        return Reinit(False, Plan((why,), ()), (), f"refused: {why}")
    found = plan(config, facts)
    if found.refusals:
        return Reinit(False, found, (), "refused, nothing changed: " + "; ".join(found.refusals))
    if dry_run:
        return Reinit(True, found, (), f"dry run: {len(found.statements)} statement(s) would run; nothing changed")
    done: list[str] = []
    try:
        await _execute(config, facts, found, done, timeout)
        synced = await _wait_synced(config, site, timeout, sync_wait)
    except (PgError, psycopg.Error, TimeoutError) as exc:
        reason = str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)
        return Reinit(False, found, tuple(done), f"failed after {len(done)} statement(s): {reason}")
    return Reinit(True, found, tuple(done), f"re-initialised {config.subscription} on {site} from "
                  f"{facts.publisher} with a new slot {config.slot_name} and copy_data; {synced}")


async def _execute(config: DatabaseConfig, facts: Facts, found: Plan, done: list[str], timeout: float) -> None:
    s, p = facts.subscriber, facts.publisher
    conns = {s: await connect(config.sites[s], statement_timeout=timeout, writable=True,
                              application_name="failover reinit"),
             p: await connect(config.sites[p], statement_timeout=timeout, application_name="failover reinit")}
    try:
        for where, shown in found.statements:
            conn = conns[where]
            if shown.startswith("CREATE SUBSCRIPTION"):
                for setting in QUIET:  # the connection string must not reach the server log
                    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                        await conn.execute(setting)
                source = conninfo(config.sites[p], for_replication=True, application_name=config.subscription)
                await conn.execute(sql.SQL(
                    "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} "
                    "WITH (copy_data = true, create_slot = true, slot_name = {})").format(
                    sql.Identifier(config.subscription), sql.Literal(source), sql.Identifier(config.publication),
                    sql.Literal(config.slot_name)))
            else:
                await conn.execute(sql.SQL(shown))  # names in it are validated by the config
            done.append(f"{where}: {shown}")
    finally:
        for conn in conns.values():
            await conn.close()


async def _wait_synced(config: DatabaseConfig, site: str, timeout: float, wait: float) -> str:
    """Wait (at most ``wait`` s) until every table of the subscription is ready (srsubstate 'r')."""
    conn = await connect(config.sites[site], statement_timeout=timeout, application_name="failover reinit")
    started = time.monotonic()
    try:
        while True:
            rows = await _rows(conn, "SELECT r.srsubstate, count(*) FROM pg_subscription_rel r JOIN pg_subscription s "
                                     "ON s.oid = r.srsubid WHERE s.subname = %s GROUP BY 1", (config.subscription,))
            states = {str(k): int(n) for k, n in rows}
            pending = sum(n for k, n in states.items() if k != "r")
            if not pending:
                return f"all {states.get('r', 0)} table(s) copied and streaming after {time.monotonic() - started:.1f}s"
            if time.monotonic() - started > wait:
                return f"{pending} table(s) still copying after {wait:g}s (pg_subscription_rel on {site})"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()

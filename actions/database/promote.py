"""Promoting the standby of a logically replicated pair: stop applying, fix sequences, allow writes.

Steps (each idempotent, so the runbook may repeat the whole promotion after a crash):

1. ``subscription``: ``ALTER SUBSCRIPTION ... DISABLE`` and wait (bounded) until its apply worker
   has exited, so no row arrives after the sequences are read. DISABLE does not wake the worker (it
   notices at its next wake-up, often 100-300 ms later); with ``end_apply_worker`` (a switchover whose
   drain proved the standby caught up after the fence: :func:`engine.core.apply_stop.apply_stop`) the
   worker is ended at once instead (``pg_terminate_backend``; without the privilege, waited for as
   usual). When the old primary cannot be
   reached its slot is detached (``SET (slot_name = NONE)``), so the subscription can later be
   dropped without the publisher. A configured subscription that does not exist is a **refusal**
   (a misspelt name must not promote a database that another subscription keeps writing into).
2. ``other subscriptions``: every *other* enabled subscription of this database whose connection
   string points at the old primary (host and port, or its ``replication_host``/``replication_port``)
   is disabled too (and its slot detached when the old primary is unreachable), and named in the
   result. A subscription whose connection string cannot be read (no privilege) is refused, not
   guessed about. Subscriptions to other servers are left alone.
3. ``reverse slot``: the publication of the replicated tables and a logical slot (named like the
   forward slot, ``slot`` or the subscription name) on this server, *before* it accepts writes, so
   every write from now on is retained for the old primary's failback (see
   :mod:`actions.database.reverse`: why, the disk-usage risk and its clean-up). Never blocks
   writes: a slot that cannot be made is a ``skipped`` step with the reason.
4. ``sequences``: every sequence of the replicated tables to at least ``max(column) + margin``.
5. ``writes``: reset ``default_transaction_read_only`` (a fence from an earlier failback) and check
   from a new session that it can write. Skipped (and the promotion reported incomplete) when an
   earlier step failed: writes are never allowed with sequences behind or a subscription applying.

A physical standby (``pg_is_in_recovery()``) is refused: this engine promotes logical replicas only.
The result is ok only when every step is; anything less names the steps that failed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from actions.database.fence import NO_SYNC_WAIT, unfence
from actions.database.results import ActionResult, Step, summarize
from actions.database.reverse import ensure_reverse_slot
from actions.database.sequences import SequenceMove, sync_sequences
from actions.database.synchronous import mode_on_new_primary
from actions.reconcile.after_failover import read_promotion_point
from engine.config.database import DatabaseConfig, PgConnection
from probes.postgres_conn import PgError, Unreachable, connect, describe_pg_error

REQUIRED = ("subscription", "other subscriptions", "sequences", "writes")
WORKER_POLL = 0.01  # seconds between two looks at the apply worker after DISABLE
END_WORKERS = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_subscription
WHERE subname = %s AND pid IS NOT NULL
"""


async def publisher_reachable(config: DatabaseConfig, site: str) -> str | None:
    """None when ``site`` accepts a connection, else the reason it does not."""
    try:
        conn = await connect(config.sites[site], statement_timeout=config.promotion.statement_timeout,
                             application_name="failover-engine reachability")
    except Unreachable as exc:
        return str(exc)
    await conn.close()
    return None


async def _disable_subscription(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig, old_primary: str,
                                *, end_worker: bool = False) -> Step:
    t0 = time.perf_counter()
    name = config.subscription
    cur = await conn.execute("SELECT subenabled, subslotname FROM pg_subscription s JOIN pg_database d "
                             "ON d.oid = s.subdbid AND d.datname = current_database() WHERE subname = %s", (name,))
    row = await cur.fetchone()
    if row is None:
        return Step("subscription", "failed",
                    f"subscription {name} not found in this database: refusing to allow writes "
                    f"(check the configured name; another subscription may still apply writes from {old_primary})",
                    time.perf_counter() - t0)
    enabled, slot = bool(row[0]), row[1]
    notes = await _stop(conn, config, name, enabled, slot, old_primary, end_worker=end_worker)
    if notes is None:
        return Step("subscription", "failed", "apply worker still running after DISABLE", time.perf_counter() - t0)
    return Step("subscription", "ok", ", ".join(notes), time.perf_counter() - t0)


async def _stop(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig, name: str, enabled: bool,
                slot: str | None, old_primary: str, *, end_worker: bool = False) -> list[str] | None:
    """Disable subscription ``name``, wait for its worker (or end it, with ``end_worker``), detach its slot if
    the publisher is gone.

    Returns what was done, or None when the apply worker did not exit in time.
    """
    ident = sql.Identifier(name)
    notes = []
    if enabled:
        await conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
        notes.append("disabled")
    else:
        notes.append("already disabled")
    if end_worker:
        notes.append(await _end_workers(conn, name))
    # whether the publisher still answers (is its slot kept?) is asked while the worker winds down
    reach = asyncio.ensure_future(publisher_reachable(config, old_primary)) if slot is not None else None
    try:
        deadline = time.monotonic() + config.promotion.statement_timeout
        while True:  # DISABLE is asynchronous: the apply worker exits a moment later
            cur = await conn.execute("SELECT count(*) FROM pg_stat_subscription WHERE subname = %s "
                                     "AND pid IS NOT NULL", (name,))
            alive = await cur.fetchone()
            if not alive or not alive[0]:
                break
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(WORKER_POLL)
        unreachable = await reach if reach is not None else None
    finally:
        if reach is not None and not reach.done():
            reach.cancel()
    if slot is not None:
        if unreachable is not None:
            await conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
            notes.append(f"slot {slot} detached ({old_primary} unreachable: {unreachable})")
        else:
            notes.append(f"slot {slot} kept on {old_primary} (dropped when failback is prepared)")
    else:
        notes.append("slot already detached")
    return notes


async def _end_workers(conn: psycopg.AsyncConnection[Any], name: str) -> str:
    """End the (already disabled) subscription's workers; without the privilege, say so (the caller waits)."""
    try:
        cur = await conn.execute(END_WORKERS, (name,))
        row = await cur.fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        return f"apply worker not ended ({describe_pg_error(exc)}): waited for it"
    ended = int(row[0]) if row else 0
    return f"{ended} worker{'s' * (ended != 1)} ended at once (the drain proved the standby caught up)"


OTHER_SUBSCRIPTIONS = """
SELECT s.subname, s.subslotname, s.subconninfo FROM pg_subscription s
JOIN pg_database d ON d.oid = s.subdbid AND d.datname = current_database()
WHERE s.subenabled AND s.subname <> %s ORDER BY 1
"""


def points_at(conninfo_text: str, target: PgConnection) -> bool:
    """Pure: does a subscription's connection string name ``target`` (host and port, either address)?

    Host names are compared as written (no DNS); a multi-host string matches if any host does.
    """
    try:
        params = conninfo_to_dict(conninfo_text)
    except psycopg.ProgrammingError:
        return True  # unreadable: assume the worst
    hosts = [h.strip() for h in str(params.get("host") or params.get("hostaddr") or "localhost").split(",")]
    ports = [p.strip() for p in str(params.get("port") or "5432").split(",")]
    if len(ports) == 1:
        ports = ports * len(hosts)
    wanted = {(target.host, target.port),
              (target.replication_host or target.host, target.replication_port or target.port)}
    for host, port in zip(hosts, ports, strict=False):
        try:
            number = int(port or 5432)
        except ValueError:
            return True
        if (host, number) in wanted:
            return True
    return False


async def _other_subscriptions(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig, old_primary: str,
                               ) -> Step:
    """Disable every other enabled subscription of this database that still reads from ``old_primary``."""
    t0 = time.perf_counter()
    try:
        cur = await conn.execute(OTHER_SUBSCRIPTIONS, (config.subscription,))
        rows = await cur.fetchall()
    except psycopg.errors.InsufficientPrivilege:
        cur = await conn.execute("SELECT s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                                 "AND d.datname = current_database() WHERE s.subenabled AND s.subname <> %s "
                                 "ORDER BY 1", (config.subscription,))
        names = [str(r[0]) for r in await cur.fetchall()]
        if not names:
            return Step("other subscriptions", "ok", "none enabled", time.perf_counter() - t0)
        return Step("other subscriptions", "failed",
                    f"enabled subscription(s) {', '.join(names)} may still apply writes from {old_primary} "
                    "(their connection strings cannot be read without superuser): disable them first",
                    time.perf_counter() - t0)
    target = config.sites[old_primary]
    stopped = []
    for name, slot, info in rows:
        if not points_at(str(info or ""), target):
            continue
        notes = await _stop(conn, config, str(name), True, slot, old_primary)
        if notes is None:
            return Step("other subscriptions", "failed",
                        f"subscription {name} (pointing at {old_primary}) still applying after DISABLE",
                        time.perf_counter() - t0)
        stopped.append(f"{name} ({', '.join(notes)})")
    if not stopped:
        return Step("other subscriptions", "ok", f"none enabled pointing at {old_primary}", time.perf_counter() - t0)
    return Step("other subscriptions", "ok", f"also pointing at {old_primary}: {'; '.join(stopped)}",
                time.perf_counter() - t0)


def _describe_moves(moves: list[SequenceMove]) -> str:
    moved = [m for m in moves if m.moved]
    if not moves:
        return "no sequences on the replicated tables"
    listed = ", ".join(f"{m.sequence} {m.before if m.before is not None else '-'}→{m.after}" for m in moved[:5])
    more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
    return f"{len(moved)} of {len(moves)} moved" + (f": {listed}{more}" if moved else " (already ahead)")


async def promotable(config: DatabaseConfig, site: str) -> tuple[str | None, bool]:
    """Read-only, before anything is fenced: could :func:`promote` work on ``site``? ``(None, _)`` when it
    is a logical replica holding the configured subscription; else ``(why not, transient)``: a server that
    cannot be reached may answer on the next attempt, a missing subscription will not."""
    try:
        async with asyncio.timeout(config.promotion.statement_timeout + config.sites[site].connect_timeout), \
                await connect(config.sites[site], statement_timeout=config.promotion.statement_timeout,
                              application_name="failover-engine precheck") as conn:
            cur = await conn.execute("SELECT pg_is_in_recovery(), EXISTS (SELECT 1 FROM pg_subscription s JOIN "
                                     "pg_database d ON d.oid = s.subdbid AND d.datname = current_database() "
                                     "WHERE s.subname = %s)", (config.subscription,))
            row = await cur.fetchone()
    except Unreachable as exc:
        return f"its database cannot be reached: {exc}", True
    except TimeoutError:
        return "its database did not answer in time", True
    except psycopg.Error as exc:
        return f"its database refused the check: {describe_pg_error(exc)}", True
    if row is None or row[0]:
        return "its database is a physical standby (in recovery), not a logical replica", False
    if not row[1]:
        return (f"its database holds no subscription {config.subscription}: it is not a standby of the primary "
                "(after a failover, prepare the failback first)"), False
    return None, False


async def promote(config: DatabaseConfig, site: str, *, end_apply_worker: bool = False) -> ActionResult:
    """Promote the database of ``site``; bounded by ``promotion.timeout``; never raises for server errors.

    ``end_apply_worker``: only when every acknowledged write is proven applied (a switchover's drain, see
    :func:`engine.core.apply_stop.apply_stop`); the configured subscription's worker is then ended at once.
    """
    old_primary = config.other_site(site)
    steps: list[Step] = []
    data: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(config.promotion.timeout):
            async with await connect(config.sites[site], statement_timeout=config.promotion.statement_timeout,
                                     writable=True, application_name="failover-engine promote",
                                     settings=NO_SYNC_WAIT) as conn:
                cur = await conn.execute("SELECT pg_is_in_recovery()")
                row = await cur.fetchone()
                if row and row[0]:
                    steps.append(Step("subscription", "failed",
                                      "server is a physical standby (in recovery): not a logical replica"))
                    return summarize("promotion", site, steps, required=REQUIRED)
                stopped = await _disable_subscription(conn, config, old_primary, end_worker=end_apply_worker)
                steps.append(stopped)
                if stopped.status != "failed":
                    stopped = await _other_subscriptions(conn, config, old_primary)
                    steps.append(stopped)
                if stopped.status == "failed":
                    return summarize("promotion", site, steps, data=data, required=REQUIRED)
                # replication into it has stopped and it takes no write yet: the point reconciliation
                # judges "written after promotion" by (actions.reconcile.causes)
                data["promotion_point"] = (await read_promotion_point(conn)).to_dict()
                steps.append(await ensure_reverse_slot(conn, config, site))
                if (kept := await mode_on_new_primary(conn, config, site)) is not None:  # before writes
                    steps.append(kept)
                t0 = time.perf_counter()
                try:
                    moves = await sync_sequences(conn, subscription=config.subscription,
                                                 margin=config.promotion.sequence_margin)
                    data["sequences"] = [m.to_dict() for m in moves]
                    steps.append(Step("sequences", "ok", _describe_moves(moves), time.perf_counter() - t0))
                except psycopg.Error as exc:
                    steps.append(Step("sequences", "failed", describe_pg_error(exc), time.perf_counter() - t0))
                if steps[-1].status == "failed":  # sequences behind: the first insert would collide
                    steps.append(Step("writes", "failed", "not allowed: sequences were not synced"))
                else:
                    steps.append(await unfence(config, site, session=conn))
    except TimeoutError:
        steps.append(Step("timeout", "failed", f"promotion gave up after {config.promotion.timeout:g}s",
                          time.perf_counter() - started))
    except Unreachable as exc:
        steps.append(Step("connect", "failed", f"{site} unreachable: {exc}"))
    except (PgError, psycopg.Error) as exc:
        steps.append(Step("promote", "failed", str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)))
    return summarize("promotion", site, steps, data=data, required=REQUIRED)

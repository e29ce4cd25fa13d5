"""Fencing the old primary: make its database refuse writes and end client sessions, best effort.

Steps, each idempotent: ``ALTER DATABASE ... SET default_transaction_read_only = on`` (new sessions
cannot write), terminate every *client backend* of that database except our own session (the
replication processes — ``walsender`` and logical replication workers — have other backend types
and are never touched), then verify from a fresh session that writes are refused. An unreachable
server (or fencing disabled in the config) gives a *skipped* result: ``ok`` True, because the fence
is best effort and the runbook goes on, ``skipped`` True and a sentence with the reason, so the
event is clear. A reachable server that could not be fenced gives ``ok`` False. The whole fence is
bounded by ``fencing.timeout``.

This is a fence against well-behaved clients only: a client can still ``SET transaction_read_only
= off``. Revoking privileges or stopping the server is the operator's stronger tool.
:func:`unfence` resets the setting (promotion and failback use it). :func:`end_client_sessions` ends the
client sessions once more (a switchover, after DNS answers the new primary): a session opened on the fenced
old primary between the fence and the DNS change is read-only, and a pool keeps such a connection (a
read-only refusal does not break it), so without this its client would never follow DNS.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg import sql

from actions.database.results import ActionResult, Step, summarize
from engine.config.database import DatabaseConfig
from probes.postgres_conn import PgError, Unreachable, connect, describe_pg_error

TERMINATE = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
# the engine's own catalog changes never wait for a synchronous standby (a lost one would stall the fence)
NO_SYNC_WAIT = {"synchronous_commit": "local"}


async def fence(config: DatabaseConfig, site: str) -> ActionResult:
    """Fence the database of ``site``; never raises for an unreachable or failing server."""
    if not config.fencing.enabled:
        return ActionResult("fence", site, True, f"fence of {site} skipped: fencing is disabled in the config",
                            (Step("fence", "skipped", "disabled in config"),))
    steps: list[Step] = []
    conn_cfg = config.sites[site]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(config.fencing.timeout):
            try:
                conn = await connect(conn_cfg, statement_timeout=config.fencing.timeout, writable=True,
                                     application_name="failover-engine fence", settings=NO_SYNC_WAIT)
            except Unreachable as exc:
                return ActionResult("fence", site, True, f"fence of {site} skipped: unreachable ({exc})",
                                    (Step("connect", "skipped", str(exc)),))
            async with conn:
                t0 = time.perf_counter()
                await conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                                   .format(sql.Identifier(conn_cfg.dbname)))
                steps.append(Step("read-only", "ok", "new sessions refuse writes", time.perf_counter() - t0))
                if config.fencing.terminate_sessions:
                    t0 = time.perf_counter()
                    cur = await conn.execute(TERMINATE)
                    row = await cur.fetchone()
                    ended = int(row[0]) if row else 0
                    steps.append(Step("sessions", "ok", f"{ended} client session{'s' * (ended != 1)} ended",
                                      time.perf_counter() - t0))
            t0 = time.perf_counter()
            async with await connect(conn_cfg, statement_timeout=config.fencing.timeout,
                                     application_name="failover-engine fence check") as check:
                cur = await check.execute("SHOW default_transaction_read_only")
                row = await cur.fetchone()
            verified = row is not None and row[0] == "on"
            steps.append(Step("verify", "ok" if verified else "failed",
                              "a new session is read-only" if verified else "a new session can still write",
                              time.perf_counter() - t0))
    except TimeoutError:
        steps.append(Step("timeout", "failed", f"fence gave up after {config.fencing.timeout:g}s",
                          time.perf_counter() - started))
    except (PgError, psycopg.Error) as exc:
        steps.append(Step("fence", "failed", str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)))
    return summarize("fence", site, steps, required=("read-only", "verify"))


async def end_client_sessions(config: DatabaseConfig, site: str, *, timeout: float) -> Step:
    """End every client session of ``site``'s database but ours; bounded by ``timeout``; never raises."""
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with await connect(config.sites[site], statement_timeout=timeout,
                                     application_name="failover-engine release clients") as conn:
                cur = await conn.execute(TERMINATE)
                row = await cur.fetchone()
    except TimeoutError:
        return Step("sessions", "failed", f"timed out after {timeout:g}s", time.perf_counter() - t0)
    except Unreachable as exc:
        return Step("sessions", "skipped", f"{site} unreachable: {exc}", time.perf_counter() - t0)
    except (PgError, psycopg.Error) as exc:
        why = str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)
        return Step("sessions", "failed", why, time.perf_counter() - t0)
    ended = int(row[0]) if row else 0
    return Step("sessions", "ok", f"{ended} client session{'s' * (ended != 1)} ended on {site}",
                time.perf_counter() - t0)


async def unfence(config: DatabaseConfig, site: str, *, statement_timeout: float | None = None,
                  session: psycopg.AsyncConnection[Any] | None = None) -> Step:
    """Allow writes again on ``site`` and check it from a new session; returns the step (may be failed).

    ``session``: an open writable session of ``site`` (the promotion's) to reset the setting through, instead
    of opening one; the check is always a new session.
    """
    conn_cfg = config.sites[site]
    timeout = statement_timeout or config.promotion.statement_timeout
    reset = sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(sql.Identifier(conn_cfg.dbname))
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(config.promotion.timeout):
            if session is not None:
                await session.execute(reset)
            else:
                async with await connect(conn_cfg, statement_timeout=timeout, writable=True,
                                         application_name="failover-engine unfence", settings=NO_SYNC_WAIT) as conn:
                    await conn.execute(reset)
            async with await connect(conn_cfg, statement_timeout=timeout,
                                     application_name="failover-engine unfence check") as check:
                cur = await check.execute("SELECT current_setting('transaction_read_only'), pg_is_in_recovery()")
                row = await cur.fetchone()
    except TimeoutError:
        return Step("writes", "failed", f"timed out after {config.promotion.timeout:g}s", time.perf_counter() - t0)
    except (PgError, psycopg.Error) as exc:
        why = str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)
        return Step("writes", "failed", why, time.perf_counter() - t0)
    if row is None or row[0] != "off" or row[1]:
        why = "server is in recovery (a physical standby)" if row and row[1] else "new sessions are still read-only"
        return Step("writes", "failed", why, time.perf_counter() - t0)
    return Step("writes", "ok", "new sessions may write", time.perf_counter() - t0)

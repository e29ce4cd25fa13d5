"""The drain of a planned switchover: after the fence, prove the standby applied every acknowledged write.

With the old primary fenced (no client can commit any more), :func:`drain` writes one last heartbeat
row there through the engine's own writable session, then waits until the standby has applied that
row. Logical replication applies transactions in commit order, so once the marker is on the standby,
every transaction committed before it (every write a client saw acknowledged) is there too. The
marker is an ordinary heartbeat (this engine's row for the old primary), so the consistency check
reads it like any other. Bounded by ``timeout``; polls every 5 ms (a primary-key read on the standby).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg import sql

from actions.database.results import ActionResult, Step, summarize
from engine.config.database import DatabaseConfig
from probes.postgres import table_ident
from probes.postgres_conn import PgError, Unreachable, connect, describe_pg_error

POLL = 0.005


async def drain(config: DatabaseConfig, source: str, target: str, *, writer_site: str, timeout: float,
                marker: float | None = None) -> ActionResult:
    """Write a marker heartbeat on ``source`` and wait until ``target`` has applied it."""
    table = table_ident(config.heartbeat.table)
    marker = time.time() if marker is None else marker
    steps: list[Step] = []
    data: dict[str, Any] = {"marker": marker}
    t0 = time.perf_counter()
    # the standby's session opens while the marker is written: one connection less on the switchover's path
    opening = asyncio.ensure_future(connect(config.sites[target], statement_timeout=config.promotion.statement_timeout,
                                            application_name="failover-engine drain"))
    try:
        async with asyncio.timeout(timeout):
            async with await connect(config.sites[source], statement_timeout=config.promotion.statement_timeout,
                                     writable=True, application_name="failover-engine drain") as src:
                cur = await src.execute(sql.SQL(
                    "INSERT INTO {t} AS h (site, primary_site, beat_at, lsn) VALUES (%s, %s, %s, pg_current_wal_lsn()) "
                    "ON CONFLICT (site, primary_site) DO UPDATE SET beat_at = excluded.beat_at, lsn = excluded.lsn, "
                    "written_at = clock_timestamp() RETURNING pg_current_wal_lsn()::text").format(t=table),
                    (writer_site, source, marker))
                row = await cur.fetchone()
                data["lsn"] = row[0] if row else None
            steps.append(Step("marker", "ok", f"last heartbeat written on {source} at LSN {data['lsn']}",
                              time.perf_counter() - t0))
            t1 = time.perf_counter()
            async with await opening as dst:
                query = sql.SQL("SELECT beat_at FROM {t} WHERE site = %s AND primary_site = %s").format(t=table)
                polls = 0
                while True:
                    polls += 1
                    cur = await dst.execute(query, (writer_site, source))
                    got = await cur.fetchone()
                    if got is not None and float(got[0]) >= marker:
                        break
                    await asyncio.sleep(POLL)
            data["applied_s"] = round(time.perf_counter() - t1, 4)
            steps.append(Step("applied", "ok", f"{target} applied it after {data['applied_s'] * 1000:.0f} ms "
                              f"({polls} reads): every write acknowledged on {source} is on {target}",
                              time.perf_counter() - t1))
    except TimeoutError:
        steps.append(Step("applied", "failed", f"{target} did not apply the marker within {timeout:g}s: the standby "
                          "lags or replication is broken", time.perf_counter() - t0))
    except Unreachable as exc:
        steps.append(Step("connect", "failed", str(exc)))
    except (PgError, psycopg.Error) as exc:
        steps.append(Step("drain", "failed", str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)))
    finally:
        await _discard(opening)
    return summarize("drain", target, steps, data=data, required=("marker", "applied"))


async def _discard(opening: asyncio.Future[psycopg.AsyncConnection[Any]]) -> None:
    """Close the standby's session if it opened and was never used (the drain stopped before); cancel it else."""
    if not opening.done():
        opening.cancel()
        return
    if not opening.cancelled() and opening.exception() is None and not opening.result().closed:
        await opening.result().close()

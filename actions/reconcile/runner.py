"""Running a reconciliation of one service: connections, hash mode, replication state, tables, metrics.

:func:`reconcile` never raises for server trouble: an unreachable site, a refused table or a failing
metric query becomes part of the :class:`ReconcileResult` (whose ``exit_code`` is then 2). Every
query runs under the configured ``statement_timeout``; chunks follow ``chunk_budget`` and ``pause``.

Modes: *live* (``watermark="auto"`` or a number: replication runs; rows in flight are named and
settled within a bounded wait, see :mod:`actions.reconcile.live`), *stopped* (``watermark=None``:
nothing flows, every difference counts) and *after a failover* (``promotion`` given: stopped, and
every difference gets a cause, see :mod:`actions.reconcile.causes`).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Literal

import psycopg

from actions.reconcile.after_failover import classify_causes
from actions.reconcile.bisect import walk
from actions.reconcile.causes import PromotionPoint
from actions.reconcile.live import (
    Replication,
    all_real,
    not_caught_up,
    read_watermark,
    replication_state,
    settle,
    standby_caught_up,
)
from actions.reconcile.pg_side import PgSide, hash_mode, server_major
from actions.reconcile.result import MetricResult, ReconcileResult, TableResult
from actions.reconcile.shape import HashMode, TableShape, agree, inspect_table
from actions.reconcile.side import Pacing, Sleep, WalkStats
from engine.config.database import BusinessMetric, DatabaseConfig, ReconcileTable
from probes.postgres_conn import PgError, Refused, connect, describe_pg_error

Watermark = Literal["auto"] | float | None
# Many short range queries: JIT compilation would cost more than it saves on each, and parallel
# workers would make the scan felt by production; one backend per side is the whole footprint.
SESSION = {"jit": "off", "max_parallel_workers_per_gather": "0"}
RECHECK_LIMIT = 10_000


async def shapes_of(primary: psycopg.AsyncConnection[Any], standby: psycopg.AsyncConnection[Any],
                    table: ReconcileTable, sites: tuple[str, str], deadline: float,
                    ) -> tuple[TableShape, TableShape, list[str]]:
    """Both sides' shapes of ``table`` and notes; raises :class:`Refused` (the primary's problem first)."""
    async with asyncio.timeout(deadline):
        found = await asyncio.gather(
            *(inspect_table(conn, table.name, table.key_columns, site, columns=table.columns, exclude=table.exclude)
              for conn, site in ((primary, sites[0]), (standby, sites[1]))), return_exceptions=True)
    for shape in found:
        if isinstance(shape, BaseException):
            raise shape
    left, right = found
    assert isinstance(left, TableShape) and isinstance(right, TableShape)
    notes = agree(left, right, *sites)
    names = set(left.all_columns)
    if table.updated_at and table.updated_at not in names:
        raise Refused(f"table {table.name}: updated_at column {table.updated_at} not found")
    return left, right, notes


async def _live(primary: psycopg.AsyncConnection[Any], standby: psycopg.AsyncConnection[Any], left: PgSide,
                right: PgSide, stats: WalkStats, config: DatabaseConfig, primary_site: str, replication: Replication,
                deadline: float, sleep: Sleep) -> None:
    if replication == "absent":
        all_real(stats)
        return
    if not (stats.real_count or stats.in_flight_count):
        return
    if replication == "paused":
        not_caught_up(stats)
        return
    rc = config.reconcile
    bound = min(rc.in_flight_margin + config.heartbeat.interval, rc.statement_timeout)
    proven, since = await standby_caught_up(primary, standby, config, primary_site, bound, deadline, sleep)
    if proven:
        await settle(left, right, stats, since - rc.in_flight_margin)
    else:
        not_caught_up(stats)


async def _compare_table(primary: psycopg.AsyncConnection[Any], standby: psycopg.AsyncConnection[Any],
                         table: ReconcileTable, config: DatabaseConfig, mode: HashMode, watermark: float | None,
                         replication: Replication | None, promotion: PromotionPoint | None,
                         sites: tuple[str, str], sleep: Sleep) -> TableResult:
    started = time.perf_counter()
    rc = config.reconcile
    deadline = rc.statement_timeout + 5.0  # the server's bound, plus slack for the network

    def failed(status: Literal["refused", "error"], reason: str) -> TableResult:
        return TableResult(table.name, status, reason, seconds=time.perf_counter() - started)

    try:
        left_shape, right_shape, notes = await shapes_of(primary, standby, table, sites, deadline)
    except Refused as exc:
        return failed("refused", str(exc))
    except (psycopg.Error, TimeoutError) as exc:
        return failed("error", f"table {table.name}: {describe_pg_error(exc)}")
    left = PgSide(primary, left_shape, mode, table.updated_at, deadline=deadline)
    right = PgSide(standby, right_shape, mode, table.updated_at, deadline=deadline)
    pacing = Pacing(chunk_rows=table.chunk_rows, chunk_budget=rc.chunk_budget, pause=rc.pause,
                    mirror=rc.scan == "auto")
    try:
        async with primary.transaction(), standby.transaction():  # one snapshot per side for the whole walk
            idle = int((rc.pause + rc.statement_timeout) * 1000) + 60_000  # a pause is not a stuck session
            for conn in (primary, standby):
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {idle}")
            stats = await walk(left, right, pacing=pacing, watermark=watermark if table.updated_at else None,
                               sleep=sleep, keep=max(rc.max_reported_rows, RECHECK_LIMIT))
        if replication is not None:
            await _live(primary, standby, left, right, stats, config, sites[0], replication, deadline, sleep)
        real = [d for d in stats.diffs if not d.in_flight]
        if promotion is not None:
            real = await classify_causes(left, right, real, promotion, table.updated_at)
    except (psycopg.Error, TimeoutError) as exc:
        return failed("error", f"table {table.name}: {describe_pg_error(exc)}")
    shown = real[: rc.max_reported_rows]
    flying = tuple(d for d in stats.diffs if d.in_flight)[: rc.max_reported_rows]
    keys = [d.key for d in (*shown, *flying)]
    samples: dict[Any, tuple[str | None, str | None]] = {}
    if keys:
        try:
            a, b = await asyncio.gather(left.texts(keys), right.texts(keys))
            samples = {k: (a.get(k), b.get(k)) for k in keys}
        except (psycopg.Error, TimeoutError):
            samples = {}  # the rows are only shown to humans: their keys and kinds are already known
    return TableResult(table.name, "differences" if stats.real_count else "identical", "", stats.rows_primary,
                       stats.rows_standby, tuple(shown), stats.real_count, stats.in_flight_count,
                       time.perf_counter() - started, stats.queries, stats.bisect_seconds, samples, flying,
                       left_shape.key_names, tuple(notes), stats.mode)


async def _metric_value(conn: psycopg.AsyncConnection[Any], query: str, deadline: float) -> float:
    async with asyncio.timeout(deadline), conn.transaction():
        await conn.execute("SET TRANSACTION READ ONLY")
        cur = await conn.execute(query.encode())
        row = await cur.fetchone()
    if row is None or len(row) != 1:
        raise PgError("the query must return one row with one column")
    if row[0] is None:
        return 0.0
    try:
        value = float(row[0])
    except (TypeError, ValueError):
        raise PgError(f"the query returned {type(row[0]).__name__}, not a number") from None
    if not math.isfinite(value):  # NaN compares false with everything: it would pass any tolerance
        raise PgError(f"the query returned {value}, not a finite number")
    return value


async def compare_metric(primary: psycopg.AsyncConnection[Any], standby: psycopg.AsyncConnection[Any],
                         metric: BusinessMetric, sites: tuple[str, str], deadline: float) -> MetricResult:
    """Run the metric on both sides and compare with the tolerance; errors make a failed result."""
    values: list[float] = []
    for conn, site in ((primary, sites[0]), (standby, sites[1])):
        try:
            values.append(await _metric_value(conn, metric.query, deadline))
        except (PgError, psycopg.Error, TimeoutError) as exc:
            why = str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)
            return MetricResult(metric.name, False, f"query failed on {site}: {why}", tolerance=metric.tolerance,
                                error=True)
    left, right = values
    diff = abs(left - right)
    if diff > metric.tolerance:
        return MetricResult(metric.name, False, f"{sites[0]} {left:g} vs {sites[1]} {right:g} "
                            f"(difference {diff:g} > tolerance {metric.tolerance:g})", left, right, metric.tolerance)
    return MetricResult(metric.name, True, f"{left:g} vs {right:g} (within {metric.tolerance:g})", left, right,
                        metric.tolerance)


async def reconcile(config: DatabaseConfig, *, service: str, primary: str, now: float,
                    watermark: Watermark = "auto", sleep: Sleep = asyncio.sleep,
                    promotion: PromotionPoint | None = None) -> ReconcileResult:
    """Compare every configured table and metric between ``primary`` and the other site.

    ``promotion``: after a failover (``primary`` is the promoted site), the point it was promoted at;
    replication has stopped, so the watermark is ignored and every difference gets a cause.
    """
    standby = config.other_site(primary)
    sites = (primary, standby)
    rc = config.reconcile
    started = time.perf_counter()
    if promotion is not None:
        watermark = None

    def failed(error: str, mode: str = "-") -> ReconcileResult:
        return ReconcileResult(service, primary, standby, mode, None, now, time.perf_counter() - started,
                               error=error)

    conns: list[psycopg.AsyncConnection[Any]] = []
    try:
        for site in sites:
            try:
                conns.append(await connect(config.sites[site], statement_timeout=rc.statement_timeout,
                                           application_name="failover-engine reconcile", settings=SESSION))
            except PgError as exc:
                return failed(f"{site} unreachable: {exc}")
        left, right = conns
        deadline = rc.statement_timeout + 5.0
        replication: Replication | None = None
        mark: float | None = None
        async with asyncio.timeout(deadline):
            majors = await asyncio.gather(server_major(left), server_major(right))
            for conn in conns:
                await PgSide.prepare(conn)
            if watermark is not None:
                replication = await replication_state(left, right, config, deadline)
                if replication != "absent":
                    mark = await read_watermark(right, config, primary) if watermark == "auto" else watermark
        mode = hash_mode(majors[0], majors[1], rc.hash)
        tables = [await _compare_table(left, right, t, config, mode, mark, replication, promotion, sites, sleep)
                  for t in rc.tables]
        if rc.metrics:
            async with asyncio.timeout(deadline):
                for conn in conns:
                    await PgSide.release(conn)
        metrics = [await compare_metric(left, right, m, sites, deadline) for m in rc.metrics]
        return ReconcileResult(service, primary, standby, mode, mark, now, time.perf_counter() - started,
                               tuple(tables), tuple(metrics),
                               promotion=None if promotion is None else promotion.to_dict())
    except (psycopg.Error, TimeoutError) as exc:
        return failed(describe_pg_error(exc))
    finally:
        for conn in conns:
            await conn.close()

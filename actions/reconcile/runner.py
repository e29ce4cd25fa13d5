"""Running a reconciliation of one service: connections, hash mode, watermark, tables, metrics.

:func:`reconcile` never raises for server trouble: an unreachable site, a refused table or a failing
metric query becomes part of the :class:`ReconcileResult`. Every query runs under the configured
``statement_timeout``; chunks follow ``chunk_budget`` and ``pause``.

Lag watermark (``watermark="auto"``): the standby's replicated heartbeat rows carry
``written_at``, the *primary's* clock when the last applied heartbeat was written; rows whose
``updated_at`` (also the primary's clock) is newer than that, minus ``in_flight_margin`` for
transactions that started earlier and committed later, may not have arrived yet and are counted as
in flight, not as differences. Without a heartbeat row the standby's ``now()`` minus the margin
is used. After a failover the caller passes ``watermark=None``: replication has stopped, so
nothing is in flight and every difference counts.

Deletes carry no timestamp, so the watermark cannot cover them: a row deleted on the primary and
not yet replicated looks like a row *only on the standby*. Rule (live runs only, i.e. with a
watermark): after the walk, when differences were found, the runner reads the primary's current
WAL position and waits (at most ``in_flight_margin + heartbeat.interval``) until the subscription's
slot has confirmed it, or the standby has applied a heartbeat written after that moment; either
proves the standby applied every commit made before the walk's reads. Then:

- proven caught up: the differing keys (up to :data:`RECHECK_LIMIT`) are read again on both
  sides and classified again; a difference that has disappeared was in flight and is dropped,
  one that remains is real (a row still only on the standby is ``missing_on_primary``);
- not proven (subscription paused, standby behind, slot unknown): every row only on the standby
  is counted *in flight*, not as a difference, because its delete may not have arrived yet. The
  lag probe is what reports a standby that stays behind.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from typing import Any, Literal

import psycopg
from psycopg import sql

from actions.reconcile.bisect import Pacing, Sleep, WalkStats, walk
from actions.reconcile.pg_side import HashMode, PgSide, TableShape, agree, hash_mode, inspect_table, server_major
from actions.reconcile.plan import classify
from actions.reconcile.result import MetricResult, ReconcileResult, TableResult
from engine.config.database import BusinessMetric, DatabaseConfig, ReconcileTable
from probes.postgres import table_ident
from probes.postgres_conn import PgError, Refused, connect, describe_pg_error, fetch

Watermark = Literal["auto"] | float | None
# Many short range queries: JIT compilation would cost more than it saves on each, and parallel
# workers would make the scan felt by production; one backend per side is the whole footprint.
SESSION = {"jit": "off", "max_parallel_workers_per_gather": "0"}


async def read_watermark(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig, primary: str) -> float:
    """Epoch seconds (primary clock) before which every primary write has reached this standby."""
    margin = config.reconcile.in_flight_margin
    try:
        cur = await conn.execute(sql.SQL("SELECT extract(epoch FROM max(written_at))::float8 FROM {} "
                                         "WHERE primary_site = %s").format(table_ident(config.heartbeat.table)),
                                 (primary,))
        row = await cur.fetchone()
        if row is not None and row[0] is not None:
            return float(row[0]) - margin
    except psycopg.errors.UndefinedTable:
        pass
    cur = await conn.execute("SELECT extract(epoch FROM now())::float8")
    row = await cur.fetchone()
    assert row is not None
    return float(row[0]) - margin


RECHECK_LIMIT = 10_000


async def _standby_caught_up(primary: psycopg.AsyncConnection[Any], standby: psycopg.AsyncConnection[Any],
                             config: DatabaseConfig, primary_site: str, bound: float, deadline: float,
                             sleep: Sleep) -> bool:
    """True once the standby provably applied every commit the primary made before this call.

    Proof: the subscription's slot confirmed the primary's current WAL position, or the standby
    applied a heartbeat the primary wrote after this moment (primary clock). Waits at most ``bound``.
    """
    rows = await fetch(primary, "SELECT pg_current_wal_lsn()::text, extract(epoch FROM clock_timestamp())::float8",
                       deadline=deadline)
    target, since = rows[0]
    beats = sql.SQL("SELECT coalesce(extract(epoch FROM max(written_at))::float8 >= %s, false) FROM {} "
                    "WHERE primary_site = %s").format(table_ident(config.heartbeat.table))
    until = time.monotonic() + bound
    while True:
        rows = await fetch(primary, "SELECT coalesce(confirmed_flush_lsn >= %s::pg_lsn, false) "
                                    "FROM pg_replication_slots WHERE slot_name = %s", (target, config.slot_name),
                           deadline=deadline)
        if rows and rows[0][0]:
            return True
        try:
            rows = await fetch(standby, beats, (since, primary_site), deadline=deadline)
            if rows and rows[0][0]:
                return True
        except psycopg.errors.UndefinedTable:
            pass
        if time.monotonic() >= until:
            return False
        await sleep(0.05)


def _recheck_plan(stats: WalkStats, caught_up: bool) -> list[int]:
    """Keys to read again (caught up), or apply the not-caught-up rule to ``stats`` in place and return []."""
    if caught_up:
        return sorted(d.key for d in stats.diffs if not d.in_flight)[:RECHECK_LIMIT]
    moved = stats.standby_only_count  # their delete may not have arrived: in flight, not differences
    stats.diffs = [replace(d, in_flight=True) if d.kind == "missing_on_primary" and not d.in_flight else d
                   for d in stats.diffs]
    stats.real_count -= moved
    stats.in_flight_count += moved
    stats.standby_only_count = 0
    return []


async def _recheck(left: PgSide, right: PgSide, stats: WalkStats, watermark: float, caught_up: bool) -> None:
    """Apply the in-flight rule of the module docstring to the walk's differences (in ``stats``)."""
    keys = _recheck_plan(stats, caught_up)
    if not keys:
        return
    a, b = await asyncio.gather(left.rows_for(keys), right.rows_for(keys))
    fresh = classify(a, b, watermark)
    checked = set(keys)
    stats.real_count -= len(checked)
    stats.diffs = [d for d in stats.diffs if d.in_flight or d.key not in checked]
    stats.real_count += sum(not d.in_flight for d in fresh)
    stats.in_flight_count += sum(d.in_flight for d in fresh)
    stats.diffs = sorted(stats.diffs + fresh, key=lambda d: d.key)


async def _compare_table(primary: psycopg.AsyncConnection[Any], standby: psycopg.AsyncConnection[Any],
                         table: ReconcileTable, config: DatabaseConfig, mode: str, watermark: float | None,
                         sites: tuple[str, str], sleep: Sleep) -> TableResult:
    started = time.perf_counter()
    deadline = config.reconcile.statement_timeout + 5.0  # the server's bound, plus slack for the network
    try:
        async with asyncio.timeout(deadline):
            shapes = await asyncio.gather(inspect_table(primary, table.name, table.key, sites[0]),
                                          inspect_table(standby, table.name, table.key, sites[1]),
                                          return_exceptions=True)
        left_shape, right_shape = shapes
        for shape in shapes:  # the primary's problem first, whichever answered first
            if isinstance(shape, BaseException):
                raise shape
        assert isinstance(left_shape, TableShape) and isinstance(right_shape, TableShape)
        agree(left_shape, right_shape, *sites)
        if table.updated_at and table.updated_at not in {n for n, _, _ in left_shape.columns}:
            raise Refused(f"table {table.name}: updated_at column {table.updated_at} not found")
    except Refused as exc:
        return TableResult(table.name, "refused", str(exc), seconds=time.perf_counter() - started)
    except (psycopg.Error, TimeoutError) as exc:
        return TableResult(table.name, "error", f"table {table.name}: {describe_pg_error(exc)}",
                           seconds=time.perf_counter() - started)
    chosen: HashMode = "native" if mode == "native" else "portable"
    left = PgSide(primary, left_shape, chosen, table.updated_at, deadline=deadline)
    right = PgSide(standby, right_shape, chosen, table.updated_at, deadline=deadline)
    rc = config.reconcile
    pacing = Pacing(chunk_keys=table.chunk_rows, chunk_budget=rc.chunk_budget, pause=rc.pause)
    try:
        stats = await walk(left, right, pacing=pacing, watermark=watermark if table.updated_at else None,
                           sleep=sleep, keep=max(rc.max_reported_rows, RECHECK_LIMIT))
    except (psycopg.Error, TimeoutError) as exc:
        return TableResult(table.name, "error", f"table {table.name}: {describe_pg_error(exc)}",
                           seconds=time.perf_counter() - started)
    if watermark is not None and stats.real_count:
        try:
            bound = min(rc.in_flight_margin + config.heartbeat.interval, rc.statement_timeout)
            caught_up = await _standby_caught_up(primary, standby, config, sites[0], bound, deadline, sleep)
            await _recheck(left, right, stats, watermark, caught_up)
        except (psycopg.Error, TimeoutError) as exc:
            return TableResult(table.name, "error", f"table {table.name}: {describe_pg_error(exc)}",
                               seconds=time.perf_counter() - started)
    real = [d for d in stats.diffs if not d.in_flight]
    shown = real[: rc.max_reported_rows]
    keys = [d.key for d in shown]
    samples: dict[int, tuple[str | None, str | None]] = {}
    if keys:
        try:
            a, b = await asyncio.gather(left.texts(keys), right.texts(keys))
            samples = {k: (a.get(k), b.get(k)) for k in keys}
        except (psycopg.Error, TimeoutError):
            samples = {}  # the rows are only shown to humans: their keys and kinds are already known
    return TableResult(table.name, "differences" if stats.real_count else "identical", "", stats.rows_primary,
                       stats.rows_standby, tuple(shown), stats.real_count, stats.in_flight_count,
                       time.perf_counter() - started, stats.queries, stats.bisect_seconds, samples)


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
            return MetricResult(metric.name, False, f"query failed on {site}: {why}", tolerance=metric.tolerance)
    left, right = values
    diff = abs(left - right)
    if diff > metric.tolerance:
        return MetricResult(metric.name, False, f"{sites[0]} {left:g} vs {sites[1]} {right:g} "
                            f"(difference {diff:g} > tolerance {metric.tolerance:g})", left, right, metric.tolerance)
    return MetricResult(metric.name, True, f"{left:g} vs {right:g} (within {metric.tolerance:g})", left, right,
                        metric.tolerance)


async def reconcile(config: DatabaseConfig, *, service: str, primary: str, now: float,
                    watermark: Watermark = "auto", sleep: Sleep = asyncio.sleep) -> ReconcileResult:
    """Compare every configured table and metric between ``primary`` and the other site."""
    standby = config.other_site(primary)
    sites = (primary, standby)
    rc = config.reconcile
    started = time.perf_counter()

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
        async with asyncio.timeout(rc.statement_timeout + 5.0):
            majors = await asyncio.gather(server_major(left), server_major(right))
            for conn in conns:
                await PgSide.prepare(conn)
            mark = await read_watermark(right, config, primary) if watermark == "auto" else watermark
        mode = hash_mode(majors[0], majors[1], rc.hash)
        tables = [await _compare_table(left, right, t, config, mode, mark, sites, sleep) for t in rc.tables]
        metrics = [await compare_metric(left, right, m, sites, rc.statement_timeout + 5.0) for m in rc.metrics]
        return ReconcileResult(service, primary, standby, mode, mark, now, time.perf_counter() - started,
                               tuple(tables), tuple(metrics))
    except (psycopg.Error, TimeoutError) as exc:
        return failed(describe_pg_error(exc))
    finally:
        for conn in conns:
            await conn.close()

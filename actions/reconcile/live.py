"""Live reconciliation while replication runs: which rows are in flight, and settling them.

Lag watermark (``watermark="auto"``): the standby's replicated heartbeat rows carry
``written_at``, the *primary's* clock when the last applied heartbeat was written; rows whose
``updated_at`` (also the primary's clock) is newer than that, minus ``in_flight_margin`` for
transactions that started earlier and committed later, may not have arrived yet and are *in
flight*, not differences. Without a heartbeat row the standby's ``now()`` minus the margin is used.

Replication state (:func:`replication_state`), read once per run before the walk:

- ``absent``: no subscription on the standby or no slot on the primary. Nothing can be in flight:
  no watermark, no wait, every difference is real.
- ``paused``: the subscription exists but is disabled (or its worker is not running). Rows can be
  in flight but cannot arrive: they are named, not waited for.
- ``flowing``: when the walk found differences or rows in flight, the runner reads the primary's
  current WAL position and waits, at most ``in_flight_margin + heartbeat.interval``, until the
  subscription's slot confirmed it or the standby applied a heartbeat written after that moment;
  either proves the standby applied every commit made before the wait. Then every differing and
  in-flight key (up to :data:`RECHECK_LIMIT`) is read again on both sides and classified with the
  watermark moved to that moment: a difference that disappeared was in flight and is dropped, one
  that remains is real, and only rows written during the wait are still in flight (named by key).
  Not proven within the bound: a row only on the standby is counted in flight (its delete may be
  on the way), the lag probe reports a standby that stays behind.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, Literal

import psycopg
from psycopg import sql

from actions.reconcile.pg_side import PgSide
from actions.reconcile.plan import classify
from actions.reconcile.side import Sleep, WalkStats
from engine.config.database import DatabaseConfig
from probes.postgres import table_ident
from probes.postgres_conn import fetch

Replication = Literal["absent", "paused", "flowing"]
RECHECK_LIMIT = 10_000
SUBSCRIPTION = """
SELECT s.subenabled, EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.pid IS NOT NULL
                             AND w.relid IS NULL)
FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid AND d.datname = current_database()
WHERE s.subname = %s
"""


async def replication_state(primary: psycopg.AsyncConnection[Any], standby: psycopg.AsyncConnection[Any],
                            config: DatabaseConfig, deadline: float) -> Replication:
    """Whether the standby replicates from the primary now (module docstring)."""
    slot = await fetch(primary, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (config.slot_name,),
                       deadline=deadline)
    sub = await fetch(standby, SUBSCRIPTION, (config.subscription,), deadline=deadline)
    if not slot or not sub:
        return "absent"
    enabled, running = sub[0]
    return "flowing" if enabled and running else "paused"


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


async def standby_caught_up(primary: psycopg.AsyncConnection[Any], standby: psycopg.AsyncConnection[Any],
                            config: DatabaseConfig, primary_site: str, bound: float, deadline: float,
                            sleep: Sleep) -> tuple[bool, float]:
    """(proven, since): the standby applied every commit the primary made before ``since`` (primary
    clock, epoch s), proven by the slot or a heartbeat; waits at most ``bound`` seconds."""
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
            return True, float(since)
        try:
            rows = await fetch(standby, beats, (since, primary_site), deadline=deadline)
            if rows and rows[0][0]:
                return True, float(since)
        except psycopg.errors.UndefinedTable:
            pass
        if time.monotonic() >= until:
            return False, float(since)
        await sleep(0.05)


def all_real(stats: WalkStats) -> None:
    """Replication absent: nothing can be in flight; every difference counts (in place)."""
    stats.diffs = [replace(d, in_flight=False) for d in stats.diffs]
    stats.real_count += stats.in_flight_count
    stats.standby_only_count = sum(d.kind == "missing_on_primary" for d in stats.diffs)
    stats.in_flight_count = 0


def not_caught_up(stats: WalkStats) -> None:
    """Not proven caught up: a row only on the standby (its delete may be on the way) is in flight."""
    moved = stats.standby_only_count
    stats.diffs = [replace(d, in_flight=True) if d.kind == "missing_on_primary" and not d.in_flight else d
                   for d in stats.diffs]
    stats.real_count -= moved
    stats.in_flight_count += moved
    stats.standby_only_count = 0


async def settle(left: PgSide, right: PgSide, stats: WalkStats, watermark: float) -> None:
    """Caught up to ``watermark``: read every differing and in-flight key again and classify anew."""
    keys = [d.key for d in stats.diffs][:RECHECK_LIMIT]
    if not keys:
        return
    a, b = await asyncio.gather(left.rows_for(keys), right.rows_for(keys))
    fresh = classify(a, b, watermark)
    checked = set(keys)
    old = [d for d in stats.diffs if d.key in checked]
    stats.real_count -= sum(not d.in_flight for d in old)
    stats.in_flight_count -= sum(d.in_flight for d in old)
    stats.diffs = [d for d in stats.diffs if d.key not in checked] + fresh
    stats.real_count += sum(not d.in_flight for d in fresh)
    stats.in_flight_count += sum(d.in_flight for d in fresh)
    stats.standby_only_count = sum(d.kind == "missing_on_primary" and not d.in_flight for d in stats.diffs)

"""The replication signal of a service: slot lag, apply-worker liveness and heartbeat lag in seconds.

One probe per service (``SignalKey(service, None, "replication")``). Each observation reads:

- on the **primary** (when reachable): the slot's lag in bytes (``pg_replication_slots``; it works
  even when the subscriber is down), the latest heartbeat rows and ``pg_current_wal_lsn()``, which
  together are the *primary commit point* the daemon keeps in its journal;
- on the **standby**: the apply worker of the subscription (``pg_stat_subscription``; no row or a
  NULL pid means "not running"; if the standby cannot be read it is ``None``, "unknown", never 0)
  and the heartbeat rows as replicated.

Heartbeat lag, and why it is measured this way: the engine writes ``beat_at`` (its own clock) into
one row per writing site on the primary every few seconds (``actions.database.heartbeat``). When
both servers are readable, lag = primary's ``beat_at`` - standby's replicated ``beat_at`` for the
same row: both values come from the same writer's clock, so clock skew between the database hosts
(or between the engine and the hosts) cannot enter, and an idle primary reads as caught up because
the heartbeat keeps flowing.

When the primary is unreachable the probe compares the standby with the **last primary heartbeats
it saw** (or that the daemon seeded from its journal with :meth:`PostgresLagProbe.remember`): the
lag is then exactly the data-loss window a failover would accept, so a standby that had applied
everything before the primary died reads 0 s and a failover is not held back by a growing number.
Only with no remembered beat at all does it fall back to ``now`` (this engine's clock) minus the
freshest replicated ``beat_at``. ``details["heartbeat_age_s"]`` (``now`` minus that beat) says how old
the standby's newest data is in every case. While the primary is unreachable a stopped apply worker
is expected and does not fail the signal by itself: the signal judges the standby's data.

Two liveness rules keep a stopped pipeline from reading as caught up (the heartbeat lag compares
beats, so with no new beats it stays at 0 whatever happens):

- **no heartbeat**: when the primary is readable but its newest heartbeat row is older than
  ``3 x heartbeat.interval`` (by this engine's clock), the signal fails with "no heartbeat on gcp
  for 40s": nobody is writing beats, so the lag cannot be measured. (Writers on other instances
  with offset clocks only shift this by their offset; three intervals leave room for that.)
- **apply stalled**: when the slot has WAL to confirm and its ``confirmed_flush_lsn`` has not moved
  for longer than ``lag_probe.max_lag`` (the probe remembers it between observations, on its
  monotonic clock), the signal fails with "apply stalled for 35s": the apply worker is alive but
  stuck (a lock, a conflict, a huge transaction).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from engine.config.base import format_duration
from engine.config.database import DatabaseConfig
from engine.core.clock import Clock
from engine.core.model import SignalKey
from probes.base import BaseProbe
from probes.postgres_conn import PgError, connect, describe_pg_error

SIGNAL_NAME = "replication"


def table_ident(name: str) -> sql.Identifier:
    """``schema.table`` or ``table`` as a quoted identifier."""
    return sql.Identifier(*name.split("."))


def format_bytes(n: int) -> str:
    """``0 B``, ``812 B``, ``2.2 MB`` (decimal units, as humans read dashboards)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


@dataclass(frozen=True, slots=True)
class PrimaryReading:
    """What the primary said: slot lag, heartbeats, and its WAL position."""

    slot_lag_bytes: int | None
    slot_active: bool | None
    heartbeats: dict[str, float]
    lsn: str
    publication_found: bool
    slot_confirmed_lsn: str | None = None


@dataclass(frozen=True, slots=True)
class StandbyReading:
    """What the standby said: whether the subscription exists and its worker runs, and heartbeats."""

    subscription_found: bool
    subscription_enabled: bool
    apply_worker_alive: bool
    heartbeats: dict[str, float]


def heartbeat_lag(primary: dict[str, float] | None, standby: dict[str, float], now: float) -> float | None:
    """Seconds the standby is behind, per the module docstring; None when it cannot be known."""
    if not standby:
        return None
    if primary:
        lags = [max(0.0, beat - standby[site]) for site, beat in primary.items() if site in standby]
        if not lags:
            return None
        return max(lags)
    return max(0.0, now - max(standby.values()))


def judge(primary: PrimaryReading | None, primary_error: str | None, standby: StandbyReading | None,
          standby_error: str | None, now: float, max_lag: float, *, primary_site: str, standby_site: str,
          remembered: dict[str, float] | None = None, heartbeat_interval: float | None = None,
          stalled_for: float | None = None) -> tuple[bool, str, float | None, dict[str, Any]]:
    """Pure verdict from the two readings: (ok, reason, heartbeat lag, details).

    ``remembered``: the primary's heartbeats as last seen, used when ``primary`` is None.
    ``heartbeat_interval``: enables the "no heartbeat" rule (module docstring); ``stalled_for``:
    seconds the slot's confirmed position has not moved while it had WAL to confirm.
    """
    details: dict[str, Any] = {"primary": primary_site, "standby": standby_site, "slot_lag_bytes": None,
                               "heartbeat_lag_s": None, "apply_worker_alive": None}
    problems: list[str] = []
    if primary is not None:
        details["slot_lag_bytes"] = primary.slot_lag_bytes
        if primary.heartbeats:
            details["primary_commit"] = {"heartbeat_at": max(primary.heartbeats.values()), "lsn": primary.lsn}
        if not primary.publication_found:
            problems.append(f"publication not found on {primary_site}")
        if primary.heartbeats and heartbeat_interval:
            age = now - max(primary.heartbeats.values())
            details["primary_heartbeat_age_s"] = age
            if age > 3 * heartbeat_interval:
                problems.append(f"no heartbeat on {primary_site} for {age:.0f}s (is the heartbeat writer running?)")
        if stalled_for is not None and stalled_for > max_lag and primary.slot_lag_bytes:
            details["apply_stalled_s"] = stalled_for
            problems.append(f"apply stalled for {stalled_for:.0f}s (slot position not moving)")
    else:
        details["primary_error"] = primary_error
    if standby is None:
        reason = f"standby {standby_site} unreachable: {standby_error}"
        if primary is not None and primary.slot_lag_bytes is not None:
            reason += f", slot lag {format_bytes(primary.slot_lag_bytes)}"
        return False, reason, None, details
    details["apply_worker_alive"] = standby.apply_worker_alive if standby.subscription_found else False
    reference = primary.heartbeats if primary is not None else (remembered or None)
    lag = heartbeat_lag(reference, standby.heartbeats, now)
    details["heartbeat_lag_s"] = lag
    if standby.heartbeats:
        details["heartbeat_age_s"] = max(0.0, now - max(standby.heartbeats.values()))
    slot = (f"slot lag {format_bytes(primary.slot_lag_bytes)}"
            if primary is not None and primary.slot_lag_bytes is not None else None)
    if not standby.subscription_found:
        problems.append(f"subscription not found on {standby_site}")
    elif not standby.apply_worker_alive and primary is not None:
        problems.append("apply worker not running" + ("" if standby.subscription_enabled
                                                      else " (subscription disabled)"))
    notes = []
    if primary is None:
        basis = "to the last known primary commit" if remembered else "to now: no primary commit known"
        notes.append(f"primary {primary_site} unreachable: {primary_error} (lag measured {basis})")
    head = [f"heartbeat lag {lag:.1f}s > {format_duration(max_lag)}"] if lag is not None and lag > max_lag else []
    if not head and not problems and lag is None:
        problems.append("heartbeat lag unknown (no heartbeat row on the standby: run `db init`)")
    if head or problems:
        return False, ", ".join(head + ([slot] if slot else []) + problems + notes), lag, details
    return True, ", ".join([f"heartbeat lag {lag:.1f}s"] + ([slot] if slot else []) + notes), lag, details


class PostgresLagProbe(BaseProbe):
    """Reads both servers concurrently and judges the replication from ``primary`` to the other site."""

    def __init__(self, config: DatabaseConfig, *, service: str, primary: str, clock: Clock | None = None) -> None:
        super().__init__(timeout=config.lag_probe.timeout, clock=clock)
        self.config = config
        self.key = SignalKey(service, None, SIGNAL_NAME)
        self.primary = primary
        self._last_primary_beats: dict[str, float] = {}
        self._confirmed: tuple[str, float] | None = None  # (slot confirmed LSN, since when: monotonic)

    @property
    def standby(self) -> str:
        return self.config.other_site(self.primary)

    def set_primary(self, site: str) -> None:
        """After a failover the daemon points the probe at the new direction."""
        self.config.other_site(site)
        self.primary = site
        self._last_primary_beats = {}
        self._confirmed = None

    def _stalled_for(self, primary: PrimaryReading | None) -> float | None:
        """Seconds the slot's confirmed LSN has stood still while WAL was waiting (None: moving or idle)."""
        if primary is None or not primary.slot_lag_bytes or primary.slot_confirmed_lsn is None:
            self._confirmed = None
            return None
        mono = self.clock.monotonic()
        if self._confirmed is None or self._confirmed[0] != primary.slot_confirmed_lsn:
            self._confirmed = (primary.slot_confirmed_lsn, mono)
            return 0.0
        return mono - self._confirmed[1]

    def remember(self, heartbeat_at: float, writer_site: str) -> None:
        """Seed the last known primary heartbeat (from the journal after a restart, or from a beat)."""
        if heartbeat_at > self._last_primary_beats.get(writer_site, float("-inf")):
            self._last_primary_beats[writer_site] = heartbeat_at

    async def _check(self) -> tuple[bool, str, float | None, dict[str, object]]:
        primary_site, standby_site = self.primary, self.standby
        results = await asyncio.gather(self._read_primary(primary_site), self._read_standby(standby_site, primary_site),
                                       return_exceptions=True)
        primary: PrimaryReading | None = None
        standby: StandbyReading | None = None
        primary_error = standby_error = None
        if isinstance(results[0], BaseException):
            primary_error = self._reason(results[0])
        else:
            primary = results[0]
            for writer, beat in primary.heartbeats.items():
                self.remember(beat, writer)
        if isinstance(results[1], BaseException):
            standby_error = self._reason(results[1])
        else:
            standby = results[1]
        return judge(primary, primary_error, standby, standby_error, self.clock.now(),
                     self.config.lag_probe.max_lag, primary_site=primary_site, standby_site=standby_site,
                     remembered=dict(self._last_primary_beats), heartbeat_interval=self.config.heartbeat.interval,
                     stalled_for=self._stalled_for(primary))

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        if isinstance(exc, PgError):
            return str(exc)
        return describe_pg_error(exc)

    async def _read_primary(self, site: str) -> PrimaryReading:
        conn_cfg = self.config.sites[site]
        async with await connect(conn_cfg, statement_timeout=self.config.lag_probe.statement_timeout,
                                 application_name="failover-engine lag probe") as conn:
            cur = await conn.execute(
                "SELECT pg_current_wal_lsn()::text, "
                "EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s)", (self.config.publication,))
            lsn, pub_found = await _one(cur)
            cur = await conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, active, "
                "confirmed_flush_lsn::text "
                "FROM pg_replication_slots WHERE slot_name = %s", (self.config.slot_name,))
            slot = await cur.fetchone()
            beats = await _heartbeats(conn, self.config.heartbeat.table, site)
        return PrimaryReading(
            slot_lag_bytes=None if slot is None or slot[0] is None else int(str(slot[0])),
            slot_active=None if slot is None else bool(slot[1]),
            heartbeats=beats, lsn=str(lsn), publication_found=bool(pub_found),
            slot_confirmed_lsn=None if slot is None or slot[2] is None else str(slot[2]))

    async def _read_standby(self, site: str, primary: str) -> StandbyReading:
        conn_cfg = self.config.sites[site]
        async with await connect(conn_cfg, statement_timeout=self.config.lag_probe.statement_timeout,
                                 application_name="failover-engine lag probe") as conn:
            cur = await conn.execute("SELECT subenabled FROM pg_subscription s JOIN pg_database d "
                                     "ON d.oid = s.subdbid AND d.datname = current_database() "
                                     "WHERE subname = %s", (self.config.subscription,))
            sub = await cur.fetchone()
            cur = await conn.execute("SELECT pid FROM pg_stat_subscription WHERE subname = %s AND relid IS NULL",
                                     (self.config.subscription,))
            worker = await cur.fetchone()
            beats = await _heartbeats(conn, self.config.heartbeat.table, primary)
        return StandbyReading(subscription_found=sub is not None, subscription_enabled=bool(sub and sub[0]),
                              apply_worker_alive=worker is not None and worker[0] is not None, heartbeats=beats)


async def _one(cur: psycopg.AsyncCursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    row = await cur.fetchone()
    if row is None:  # pragma: no cover - a SELECT without FROM always returns a row
        raise PgError("no row")
    return row


async def _heartbeats(conn: psycopg.AsyncConnection[Any], table: str, primary: str) -> dict[str, float]:
    """Heartbeats written on ``primary``, by writing site; empty when the table is missing."""
    try:
        cur = await conn.execute(sql.SQL("SELECT site, beat_at FROM {} WHERE primary_site = %s")
                                 .format(table_ident(table)), (primary,))
    except psycopg.errors.UndefinedTable:
        return {}
    return {str(site): float(beat) for site, beat in await cur.fetchall()}

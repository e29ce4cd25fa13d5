"""Replication slots on a primary: how much WAL each one keeps (its ``restart_lsn`` against the current WAL).

A logical slot whose subscriber is gone keeps every WAL segment from its ``restart_lsn`` on, without
limit, until the primary's disk is full. :func:`retained_wal` reads ``pg_replication_slots`` with
``pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)`` on one site; it never raises: a server that
cannot be read is an observation (:class:`SlotReading` with ``error``).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from engine.config.database import DatabaseConfig
from probes.postgres_conn import PgError, connect, describe_pg_error, fetch

QUERY = """
SELECT slot_name, slot_type, active, wal_status,
       CASE WHEN pg_is_in_recovery() OR restart_lsn IS NULL THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END AS retained
FROM pg_replication_slots ORDER BY slot_name
"""


@dataclass(frozen=True)
class Slot:
    """One slot: name, type, whether a consumer is attached, WAL status, retained bytes (None: unknown)."""

    name: str
    kind: str
    active: bool
    wal_status: str | None
    retained: int | None


@dataclass(frozen=True)
class SlotReading:
    """Every slot of one site, or why they could not be read."""

    site: str
    slots: tuple[Slot, ...] = ()
    error: str | None = None


async def retained_wal(config: DatabaseConfig, site: str, *, timeout: float) -> SlotReading:
    """The slots of ``site`` and the WAL each retains, within ``timeout`` seconds."""
    target = config.sites[site]
    try:
        conn = await connect(target, statement_timeout=timeout, application_name="failover-engine slots")
    except PgError as exc:
        return SlotReading(site, error=str(exc))
    try:
        rows = await fetch(conn, QUERY, deadline=timeout)
    except (psycopg.Error, TimeoutError, OSError) as exc:
        return SlotReading(site, error=describe_pg_error(exc, target))
    finally:
        await conn.close()
    return SlotReading(site, tuple(Slot(str(name), str(kind), bool(active), status, None if kept is None else int(kept))
                                   for name, kind, active, status, kept in rows))

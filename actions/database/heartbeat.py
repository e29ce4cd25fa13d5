"""The heartbeat table: created by ``db init``, written by the engine on the primary every few seconds.

One row per (writing engine site, primary site). ``beat_at`` is the writer's clock (epoch seconds),
so comparing the primary's row with the standby's replicated copy measures lag without mixing host
clocks, and an idle primary reads as caught up (see :mod:`probes.postgres`). Keying the row by the
primary it was written on lets the consistency check ask the new primary "what is the last beat of
the *old* primary you applied?" even after the engine has started beating on the new one.

:func:`init_database` is idempotent: it creates the table on both sites, adds it to the publication
on the primary and refreshes the subscription on the standby so the table starts replicating.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import sql

from actions.consistency import CommitPoint
from actions.database.results import ActionResult, Step, summarize
from engine.config.database import DatabaseConfig
from probes.postgres import table_ident
from probes.postgres_conn import PgError, connect, describe_pg_error

DDL = """CREATE TABLE IF NOT EXISTS {table} (
    site text NOT NULL,
    primary_site text NOT NULL,
    beat_at double precision NOT NULL,
    lsn pg_lsn,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, primary_site))"""


def heartbeat_ddl(table: str) -> sql.Composed:
    return sql.SQL(DDL).format(table=table_ident(table))


class HeartbeatWriter:
    """Upserts this engine's heartbeat row on the current primary; the daemon calls :meth:`beat`.

    A connection is kept between beats and reopened after any error; each beat is bounded by the
    connect timeout and a statement timeout of one heartbeat interval.
    """

    def __init__(self, config: DatabaseConfig, *, writer_site: str, primary: str) -> None:
        config.other_site(primary)
        self.config = config
        self.writer_site = writer_site
        self.primary = primary
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._stale: psycopg.AsyncConnection[tuple[Any, ...]] | None = None

    def set_primary(self, site: str) -> None:
        """Beat on ``site`` from now on (after a failover)."""
        self.config.other_site(site)
        self.primary = site
        self._stale, self._conn = self._conn, None

    async def beat(self, now: float) -> CommitPoint:
        """Write ``beat_at = now`` and return the primary's commit point; raises ``PgError``."""
        stale, self._stale = self._stale, None
        if stale is not None:
            await stale.close()
        query = sql.SQL(
            "INSERT INTO {t} AS h (site, primary_site, beat_at, lsn) VALUES (%s, %s, %s, pg_current_wal_lsn()) "
            "ON CONFLICT (site, primary_site) DO UPDATE SET beat_at = excluded.beat_at, lsn = excluded.lsn, "
            "written_at = clock_timestamp() RETURNING pg_current_wal_lsn()::text"
        ).format(t=table_ident(self.config.heartbeat.table))
        site = self.config.sites[self.primary]
        try:
            async with asyncio.timeout(site.connect_timeout + self.config.heartbeat.interval):
                if self._conn is None or self._conn.closed:
                    self._conn = await connect(site, statement_timeout=self.config.heartbeat.interval,
                                               application_name="failover-engine heartbeat")
                cur = await self._conn.execute(query, (self.writer_site, self.primary, now))
                row = await cur.fetchone()
        except TimeoutError:
            await self.aclose()
            raise PgError(f"heartbeat on {self.primary} timed out") from None
        except PgError:
            await self.aclose()
            raise
        except psycopg.Error as exc:
            await self.aclose()
            raise PgError(f"heartbeat on {self.primary} failed: {describe_pg_error(exc)}") from None
        return CommitPoint(now, str(row[0]) if row else None, self.writer_site, self.primary)

    async def aclose(self) -> None:
        for conn in (self._conn, self._stale):
            if conn is not None:
                await conn.close()
        self._conn = self._stale = None


async def init_database(config: DatabaseConfig, primary: str) -> ActionResult:
    """``db init``: heartbeat table on both sites, in the publication, subscription refreshed.

    Bounded by ``promotion.timeout``; never raises for server trouble.
    """
    try:
        async with asyncio.timeout(config.promotion.timeout):
            return await _init(config, primary)
    except TimeoutError:
        return ActionResult("db init", primary, False,
                            f"db init of {primary} incomplete: timed out after {config.promotion.timeout:g}s")


async def _init(config: DatabaseConfig, primary: str) -> ActionResult:
    standby = config.other_site(primary)
    steps: list[Step] = []
    table = config.heartbeat.table
    timeout = config.promotion.statement_timeout
    try:
        async with await connect(config.sites[primary], statement_timeout=timeout, writable=True) as conn:
            await conn.execute(heartbeat_ddl(table))
            steps.append(Step("table on primary", "ok", f"{table} exists on {primary}"))
            cur = await conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (config.publication,))
            if await cur.fetchone() is None:
                steps.append(Step("publication", "failed", f"publication {config.publication} not found on {primary}"))
                return summarize("db init", primary, steps)
            schema, _, name = table.rpartition(".")
            cur = await conn.execute(
                "SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND tablename = %s "
                "AND (%s = '' OR schemaname = %s)", (config.publication, name, schema, schema))
            if await cur.fetchone() is None:
                await conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(config.publication), table_ident(table)))
                steps.append(Step("publication", "ok", f"added {table} to {config.publication}"))
            else:
                steps.append(Step("publication", "ok", f"{table} already in {config.publication}"))
    except (PgError, psycopg.Error) as exc:
        steps.append(Step("primary", "failed", f"{primary}: {_why(exc)}"))
        return summarize("db init", primary, steps)
    try:
        async with await connect(config.sites[standby], statement_timeout=timeout, writable=True) as conn:
            await conn.execute(heartbeat_ddl(table))
            steps.append(Step("table on standby", "ok", f"{table} exists on {standby}"))
            cur = await conn.execute("SELECT subenabled FROM pg_subscription s JOIN pg_database d ON "
                                     "d.oid = s.subdbid AND d.datname = current_database() WHERE subname = %s",
                                     (config.subscription,))
            sub = await cur.fetchone()
            if sub is None:
                steps.append(Step("subscription", "failed",
                                  f"subscription {config.subscription} not found on {standby}"))
            elif not sub[0]:
                steps.append(Step("subscription", "skipped", "subscription disabled: refresh it after enabling"))
            else:
                await conn.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(
                    sql.Identifier(config.subscription)))
                steps.append(Step("subscription", "ok", f"{config.subscription} refreshed"))
    except (PgError, psycopg.Error) as exc:
        steps.append(Step("standby", "failed", f"{standby}: {_why(exc)}"))
    return summarize("db init", primary, steps)


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)

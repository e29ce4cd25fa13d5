"""Clients that commit continuously and remember every acknowledged row (tests and benches).

:class:`AckWriter` inserts into ``orders`` continuously at the database its ``target`` names; a row
counts only once its COMMIT returned (autocommit: each insert is a commit). Every acknowledged row (a
unique ``amount`` from ``first``) is remembered with a label, the time it was sent and the time it was
acknowledged. :class:`DnsWriter` is the same writer following the service's DNS name, as an application
would: on every (re)connect it resolves the name at the authoritative server (BIND of the cluster) and
connects to that site's database; after any error it drops the connection and opens a new one (a pool
that discards a connection on any error, or a client with ``target_session_attrs=read-write``, which refuses
the fenced, read-only old primary at connect). :class:`PoolWriter` follows DNS the same way but keeps a
connection after an error unless the connection itself broke, as psycopg_pool and HikariCP do by default:
a read-only refusal (SQLSTATE 25006) from the fenced old primary does not make it reconnect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from tests.support.postgres import ReplicatedDb

if TYPE_CHECKING:
    from tests.support.cluster import Cluster


class AckWriter:
    def __init__(self, target: Callable[[], str], *, first: int = 2_000_000, pause: float = 0.003,
                 retry_pause: float = 0.01) -> None:
        self.target = target
        self.first, self.pause, self.retry_pause = first, pause, retry_pause
        self.acked: list[tuple[int, str, float]] = []  # (amount, label, wall time acknowledged)
        self.sent: list[float] = []  # wall time each acknowledged row was sent, in the order of ``acked``
        self.refused = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def where(self) -> tuple[str, str]:
        """The label and the DSN to connect to (asked again after every error)."""
        return "", self.target()

    def discard(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """After an error: drop this connection and open a new one (re-resolving)? Always, here."""
        return True

    def acked_rows(self) -> list[tuple[int, float, float]]:
        """Every acknowledged row: (amount, sent, acknowledged)."""
        return [(n, sent, at) for (n, _, at), sent in zip(self.acked, self.sent, strict=True)]

    def latencies(self) -> list[float]:
        """Seconds from sending each acknowledged insert to its acknowledgement."""
        return [at - sent for (_, _, at), sent in zip(self.acked, self.sent, strict=True)]

    async def _run(self) -> None:
        n = self.first
        conn: psycopg.AsyncConnection[Any] | None = None
        label = ""
        while not self._stop.is_set():
            try:
                if conn is None:
                    label, dsn = await self.where()
                    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=2)
                n += 1
                sent = time.time()
                await conn.execute("INSERT INTO orders(account, amount) VALUES (1, %s)", (n,))
                self.acked.append((n, label, time.time()))
                self.sent.append(sent)
            except psycopg.Error:
                self.refused += 1
                if conn is not None and self.discard(conn):
                    await conn.close()
                    conn = None
                await asyncio.sleep(self.retry_pause)
            if self.pause:
                await asyncio.sleep(self.pause)
        if conn is not None:
            await conn.close()

    def start(self) -> AckWriter:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


class DnsWriter(AckWriter):
    def __init__(self, cluster: Cluster, db: ReplicatedDb, *, first: int = 2_000_000, pause: float = 0.003,
                 retry_pause: float = 0.01) -> None:
        super().__init__(lambda: db.primary_dsn, first=first, pause=pause, retry_pause=retry_pause)
        self.cluster, self.db = cluster, db

    def dsn(self, site: str) -> str:
        return self.db.primary_dsn if site == "gcp" else self.db.standby_dsn

    async def where(self) -> tuple[str, str]:
        site = await asyncio.to_thread(self.cluster.dns_site)
        return site, self.dsn(site)

    def start(self) -> DnsWriter:
        super().start()
        return self


class PoolWriter(DnsWriter):
    """A :class:`DnsWriter` with a default pool's policy: a connection is replaced only when it broke."""

    def discard(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        return conn.broken or conn.closed

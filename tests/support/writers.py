"""A client that writes through the service's DNS name, as an application would (tests and benches).

:class:`DnsWriter` inserts into ``orders`` continuously; on every (re)connect it resolves the service
name at the authoritative server (BIND of the cluster) and connects to that site's database. Every
acknowledged row (a unique ``amount`` from ``first``) is remembered with the site and the wall time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from tests.support.cluster import Cluster
from tests.support.postgres import ReplicatedDb


class DnsWriter:
    def __init__(self, cluster: Cluster, db: ReplicatedDb, *, first: int = 2_000_000, pause: float = 0.003,
                 retry_pause: float = 0.01) -> None:
        self.cluster, self.db = cluster, db
        self.first, self.pause, self.retry_pause = first, pause, retry_pause
        self.acked: list[tuple[int, str, float]] = []  # (amount, site, wall time)
        self.refused = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def dsn(self, site: str) -> str:
        return self.db.primary_dsn if site == "gcp" else self.db.standby_dsn

    async def _run(self) -> None:
        n = self.first
        conn: psycopg.AsyncConnection[Any] | None = None
        site = ""
        while not self._stop.is_set():
            try:
                if conn is None:
                    site = await asyncio.to_thread(self.cluster.dns_site)
                    conn = await psycopg.AsyncConnection.connect(self.dsn(site), autocommit=True, connect_timeout=2)
                n += 1
                await conn.execute("INSERT INTO orders(account, amount) VALUES (1, %s)", (n,))
                self.acked.append((n, site, time.time()))
            except psycopg.Error:
                self.refused += 1
                if conn is not None:
                    await conn.close()
                conn = None
                await asyncio.sleep(self.retry_pause)
            await asyncio.sleep(self.pause)
        if conn is not None:
            await conn.close()

    def start(self) -> DnsWriter:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

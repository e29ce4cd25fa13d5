"""What the loss benchmarks share: a replicated pair over a delayed link, an acknowledging writer, a whole-site
kill, and the loss verdict computed from what an engine could observe.

One :class:`Run` is one fresh replicated database on a long-lived pair of PostgreSQL 15 clusters
(:mod:`tests.support.postgres`). The subscriber reaches the publisher through a
:class:`tests.support.faultproxy.FaultProxy` in ``latency`` mode (``tc netem`` is not available here):
every chunk is held ``delay`` seconds in each direction, the cross-cloud replication link. The
subscription applies with ``synchronous_commit = on``, so a synchronous commit on the publisher waits
for one round trip, not for the standby's WAL writer.

The *site* of the publisher is: its postmaster and every child, the proxy (its replication link) and a
small *agent* process standing for its engine (a TCP listener the bench polls like a peer). The
**whole-site kill** stops every process of the cluster (SIGSTOP, so none runs on while the others
die), closes the proxy, kills the agent, then SIGKILLs the cluster.

What an engine could observe, and nothing more, goes into the verdict (:func:`verdict`): the commit
points of its own heartbeats on the primary (:class:`actions.database.heartbeat.HeartbeatWriter`),
the last time the agent answered (its silence, :func:`actions.consistency.silent_since`), the
synchronous evidence of a :class:`engine.runtime.sync_watch.SyncWatch` ticking in this process, and,
after the kill, the standby (:func:`actions.consistency.check_loss`). The acknowledging writer
(:class:`tests.support.writers.AckWriter`) is the ground truth: an acknowledged row missing on the
standby after the kill is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actions.consistency import CommitPoint, check_loss, primary_end, silent_since
from actions.database.heartbeat import HeartbeatWriter
from engine.config.database import DatabaseConfig
from engine.core.loss import LossVerdict, SyncEvidence
from engine.runtime.sync_watch import SyncWatch
from tests.support.faultproxy import FaultProxy
from tests.support.postgres import PgCluster, PgPair, ReplicatedDb, wait_until
from tests.support.writers import AckWriter

AGENT = ("import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
         "s.bind(('127.0.0.1',0));s.listen(64);print(s.getsockname()[1],flush=True)\n"
         "while True:\n c,_=s.accept();c.close()\n")
POLL = 0.25          # how often the agent (the old site's engine) is polled, and the poll's timeout
_names = itertools.count(1)


def cluster_pids(cluster: PgCluster) -> list[int]:
    """The postmaster of ``cluster`` and all its children (each runs in its own session: no process group)."""
    pm = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pm:
                    kids.append(int(entry.name))
    return [pm, *kids]


def freeze_and_kill(pids: list[int]) -> None:
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


@dataclass
class Run:
    """One replicated database over a delayed link, with its writer, heartbeats, agent and (optional) watch."""

    pair: PgPair
    delay: float
    mode: str = "off"
    heartbeat: float = 0.5
    degrade_after: float = 2.0
    db: ReplicatedDb = field(init=False)
    proxy: FaultProxy = field(init=False)
    config: DatabaseConfig = field(init=False)
    agent: asyncio.subprocess.Process = field(init=False)
    agent_port: int = 0
    last_heard: float = 0.0
    last_point: CommitPoint | None = None
    watch: SyncWatch | None = None
    events: list[str] = field(default_factory=list)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start(self) -> Run:
        n = next(_names)
        self.db = await asyncio.to_thread(self.pair.replicate, publication=f"pub_{n}", subscription=f"sub_{n}")
        pub = self.pair.publisher
        self.proxy = await FaultProxy(pub.host, pub.port).start()
        await self.proxy.set("latency", self.delay)
        sub = self.db.subscription
        via = f"host=127.0.0.1 port={self.proxy.port} user=postgres dbname={self.db.dbname}"
        for statement in (f"ALTER SUBSCRIPTION {sub} CONNECTION '{via}'",
                          f"ALTER SUBSCRIPTION {sub} SET (synchronous_commit = on)"):
            self.db.on_standby(statement)
        await asyncio.to_thread(wait_until, lambda: bool(self.db.on_primary(
            f"SELECT 1 FROM pg_stat_replication WHERE application_name = '{sub}' AND state = 'streaming' "
            f"AND client_port IS NOT NULL")), 20.0, "streaming through the proxy")
        self.config = DatabaseConfig.model_validate(self.db.database_config(
            synchronous=self.mode, heartbeat={"interval": self.heartbeat},
            synchronous_degrade={"after": self.degrade_after, "check_interval": 0.2, "commit_wait_limit": 0.5}))
        self.agent = await asyncio.create_subprocess_exec(sys.executable, "-c", AGENT, stdout=subprocess.PIPE)
        assert self.agent.stdout is not None
        self.agent_port = int(await self.agent.stdout.readline())
        self._tasks.append(asyncio.create_task(self._poll_agent()))
        self._tasks.append(asyncio.create_task(self._beat()))
        if self.mode != "off":
            self.watch = SyncWatch(self.config, service="bench", primary="gcp", clock=time.time,
                                   record=self._record, may_act=lambda: True)
            self._tasks.append(asyncio.create_task(self.watch.run()))
            deadline = time.monotonic() + 30
            while self.watch.state.kind != "sync":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"synchronous mode not confirmed: {self.watch.status()['sentence']}")
                await asyncio.sleep(0.05)
        return self

    async def _record(self, sentence: str, data: dict[str, Any], alert: bool) -> None:
        self.events.append(f"{time.time():.3f} {sentence}")

    async def _poll_agent(self) -> None:
        while True:
            started = time.time()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(POLL):
                    _, writer = await asyncio.open_connection("127.0.0.1", self.agent_port)
                    writer.close()
                    self.last_heard = started
            await asyncio.sleep(max(0.0, POLL - (time.time() - started)))

    async def _beat(self) -> None:
        writer = HeartbeatWriter(self.config, writer_site="azure", primary="gcp")
        try:
            while True:
                started = time.time()
                with contextlib.suppress(Exception):
                    self.last_point = await writer.beat(started)
                await asyncio.sleep(max(0.0, self.heartbeat - (time.time() - started)))
        finally:
            with contextlib.suppress(Exception):
                await writer.aclose()

    def writer(self) -> AckWriter:
        return AckWriter(lambda: self.db.primary_dsn, pause=0.0)

    async def kill_site(self) -> float:
        """The whole site at once: cluster frozen, link closed, agent killed, cluster killed. Returns the time."""
        pids = cluster_pids(self.pair.publisher)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        at = time.time()
        self.agent.kill()
        await self.proxy.stop()
        freeze_and_kill(pids)
        await self.agent.wait()
        return at

    async def verdict(self, watch_evidence: SyncEvidence | None) -> LossVerdict:
        """After the kill: wait until the old site is silent to the poller, stop applying (the promotion's first
        step), and judge from what was observed."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        silent_at = silent_since(self.last_heard, POLL, POLL)
        await asyncio.sleep(max(0.0, silent_at - time.time()))
        self.db.on_standby(f"ALTER SUBSCRIPTION {self.db.subscription} DISABLE")
        return await check_loss(self.config, "azure", self.last_point, end=primary_end(engine_silent_at=silent_at),
                                sync=watch_evidence or SyncEvidence())

    def lost(self, writer: AckWriter) -> list[tuple[int, float, float]]:
        """Acknowledged rows missing on the standby: (amount, sent, acked)."""
        have = {int(str(row[0])) for row in self.db.on_standby(
            f"SELECT amount::bigint FROM orders WHERE amount >= {writer.first}")}
        return [(n, sent, acked) for n, sent, acked in writer.acked_rows() if n not in have]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.proxy.stop()
        if self.agent.returncode is None:
            self.agent.kill()
            await self.agent.wait()
        pub = self.pair.publisher
        if not await asyncio.to_thread(_alive, pub):
            await asyncio.to_thread(pub.start)
        pub.execute("ALTER SYSTEM RESET synchronous_standby_names")  # else the drop waits for a gone standby
        pub.execute("SELECT pg_reload_conf()")
        await asyncio.to_thread(self.db.drop)


def quiet_cancellations() -> None:
    """The proxy's connection tasks cancelled by a site kill are expected: do not print them as errors."""
    loop = asyncio.get_running_loop()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not isinstance(context.get("exception"), asyncio.CancelledError):
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _alive(cluster: PgCluster) -> bool:
    try:
        cluster.execute("SELECT 1")
    except Exception:  # killed: pg_ctl start copes with its stale pid file
        return False
    return True

"""A database-only crash and the returning ex-primary, with real PostgreSQL, BIND and engine processes.

Each site is probed twice: its HTTP health (the sample site, through the fault proxies) and a TCP
connect to its PostgreSQL port, so a dead postmaster makes the site DOWN while its engine stays
alive. The pair is fresh per test (the tests kill and restart the primary).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.support.cluster import Cluster, running
from tests.support.postgres import PgCluster, PgPair, ReplicatedDb

pytestmark = pytest.mark.slow

STRAY_INTERVAL = 0.5  # database.stray_watch.interval below
FENCE_TIMEOUT = 3.0  # database.fencing.timeout below
OPERATOR, VIEWER = "crash-op-token-0123456789", "crash-view-token-0123456789"


@pytest.fixture
def replicated(pg_pair_factory: Callable[[], PgPair]) -> Iterator[ReplicatedDb]:
    pair = pg_pair_factory()
    db = pair.replicate()
    db.on_primary("INSERT INTO accounts(owner, balance) SELECT 'o' || g, g FROM generate_series(1, 100) g")
    db.on_primary("INSERT INTO orders(account, amount) SELECT g % 100 + 1, g FROM generate_series(1, 200) g")
    db.wait_synced()
    db.wait_caught_up()
    yield db
    try:
        if not pair.publisher._owns_port():  # killed by the test and not started again (a stale pid file)
            start_again(pair.publisher)
        db.drop()
    finally:
        pair.stop()


def database_yaml(db: ReplicatedDb) -> str:
    section = db.database_config(
        heartbeat={"interval": "300ms"},
        lag_probe={"interval": "500ms", "timeout": "400ms", "statement_timeout": "300ms", "max_lag": "20s"},
        fencing={"enabled": True, "timeout": f"{FENCE_TIMEOUT:g}s"},
        stray_watch={"interval": f"{STRAY_INTERVAL * 1000:g}ms"},
        reconcile={"enabled": False},
    )
    return "    database: " + json.dumps(section)


def db_probe(cluster: PgCluster) -> str:
    return f"{{type: tcp, name: db, host: {cluster.host}, port: {cluster.port}, interval: 0.3, timeout: 0.2}}"


@pytest.fixture
async def cluster(tmp_path: Path, replicated: ReplicatedDb) -> AsyncIterator[Cluster]:
    pair = replicated.pair
    async with running(Cluster(tmp_path, extra_service=lambda _vid: database_yaml(replicated),
                       api_tokens=[("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)],
                       extra_probes={"gcp": db_probe(pair.publisher), "azure": db_probe(pair.subscriber)})) as c:
        yield c


def kill_postmaster(cluster: PgCluster) -> None:
    """SIGKILL the postmaster only (its backends notice and exit); the engines keep running."""
    pid = int((cluster.datadir / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)


def start_again(cluster: PgCluster) -> None:
    """Start the killed server again on the same port, where the engines look for it (a stale pid file or a
    last backend still exiting may need a retry)."""
    port = cluster.port
    deadline = time.monotonic() + 30
    while True:
        cluster.port = port  # a failed attempt may have moved on to another free port
        try:
            cluster.start(attempts=1)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def insert(dsn: str) -> str:
    """One client INSERT from a new session: 'ok', or the reason it was refused."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            conn.execute("INSERT INTO orders(account, amount, note) VALUES (1, 1, 'stale')")
        return "ok"
    except psycopg.errors.ReadOnlySqlTransaction:
        return "read-only"
    except psycopg.Error as exc:
        return f"error: {exc}"


async def metric(c: Cluster, vid: str, name: str) -> float:
    """Sum of a metric's samples on one engine (0 when absent)."""
    async with aiohttp.ClientSession() as s, s.get(c.voters[vid].url + "/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and 'service="shop"' in line and 'site="gcp"' in line)


async def events(c: Cluster, vid: str, kind: str) -> list[dict[str, Any]]:
    data: dict[str, Any] = await c.get(vid, f"/v1/events?service=shop&kind={kind}&limit=100")
    return list(data["events"])


async def fail_over_by_crash(c: Cluster, primary: PgCluster) -> tuple[float, float]:
    """Kill gcp's postmaster; wait for the failover; return (seconds it took, the worst-case RTO in status)."""
    status = await c.wait_for("engine-azure", lambda s: s["services"]["shop"]["lag_s"] is not None, what="lag known")
    worst = float(status["services"]["shop"]["rto"]["worst_case_s"])
    assert c.voters["engine-gcp"].proc is not None
    started = time.monotonic()
    kill_postmaster(primary)
    await c.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure"
                     and s["services"]["shop"]["operation"] is None, timeout=worst, what="failover done")
    return time.monotonic() - started, worst


async def test_a_database_only_crash_fails_over_within_the_worst_case_rto(cluster: Cluster,
                                                                           replicated: ReplicatedDb) -> None:
    """gcp's postmaster dies, its engine lives: it gives the lease up and azure takes over within the RTO."""
    took, worst = await fail_over_by_crash(cluster, replicated.pair.publisher)
    assert took <= worst, f"failover took {took:.1f}s, worst case {worst:.1f}s"
    assert cluster.voters["engine-gcp"].proc is not None and cluster.voters["engine-gcp"].proc.poll() is None
    op = (await cluster.operations("engine-azure"))[0]
    assert (op["kind"], op["state"]) == ("failover", "done"), json.dumps(op["steps"], indent=1)[:3000]
    fence = op["steps"]["fence"]
    assert fence["attempts"] == 1 and fence["data"]["released_by"] == ["engine-gcp"], fence
    assert "engine-gcp reports its primary not writable (lease given up)" in fence["summary"]
    assert fence["data"]["waited_s"] < fence["data"]["lease_s"]
    given_up = [e["message"] for e in await events(cluster, "engine-gcp", "lease")]
    assert any("gives up the write lease" in m for m in given_up), given_up
    assert cluster.dns_site() == "azure"
    rows = replicated.on_standby("INSERT INTO orders(account, amount) VALUES (1, 1) RETURNING id")
    assert int(str(rows[0][0])) > 200


async def test_the_returning_ex_primary_is_fenced_within_one_interval_and_the_fence_timeout(
        cluster: Cluster, replicated: ReplicatedDb) -> None:
    """After the crash failover gcp's server starts again writable: a client INSERT there is refused within
    stray_watch.interval + fencing.timeout, with an alert event and the metric on an engine."""
    await fail_over_by_crash(cluster, replicated.pair.publisher)
    await cluster.wait_for("engine-gcp", lambda s: s["services"]["shop"]["active"] == "azure", what="gcp adopts")
    await asyncio.to_thread(start_again, replicated.pair.publisher)
    back = time.monotonic()
    bound = STRAY_INTERVAL + FENCE_TIMEOUT
    results: list[tuple[float, str]] = []
    while time.monotonic() - back < bound + 2.0:
        results.append((time.monotonic() - back, await asyncio.to_thread(insert, replicated.primary_dsn)))
        if results[-1][1] == "read-only":
            break
        await asyncio.sleep(0.05)
    refused_at = next((t for t, r in results if r == "read-only"), None)
    assert refused_at is not None and refused_at <= bound, f"bound {bound}s; inserts: {results}"
    assert all(r != "ok" for t, r in results if t > refused_at)
    # the counter is raised once the fence is verified and journaled, a moment after the database turned read-only
    deadline = time.monotonic() + 5.0
    while True:
        fenced = [await metric(cluster, vid, "failover_engine_stray_primary_fenced_total")
                  for vid in ("engine-gcp", "engine-azure")]
        if sum(fenced) >= 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert sum(fenced) >= 1, fenced
    alerts = [e["message"] for vid in ("engine-gcp", "engine-azure") for e in await events(cluster, vid, "alert")]
    assert any("stray primary: the database in gcp takes writes but azure is the active site at epoch 2" in m
               for m in alerts), alerts
    fences = [e["message"] for vid in ("engine-gcp", "engine-azure") for e in await events(cluster, vid, "fence")]
    assert any(m.startswith("shop: fenced the stray primary in gcp") for m in fences), fences
    # the active site's database was never touched; the watch sees gcp read-only now (the gauge back to 0)
    replicated.on_standby("INSERT INTO orders(account, amount) VALUES (2, 2)")
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["stray_primary"]["sites"]["gcp"]["stray"]
                           is False, what="stray gone")
    assert await metric(cluster, "engine-azure", "failover_engine_stray_primary") == 0

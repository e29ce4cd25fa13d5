"""Planned switchover with the real PostgreSQL pair, BIND and two engines plus a witness.

Under a writer that follows DNS (re-resolving at the authoritative server on every reconnect), a
switchover to azure and one back lose no acknowledged write, and each time the old primary becomes
a working standby. Preconditions that fail answer 412 with machine-readable reasons; a manual failover
away from a healthy primary needs fence_first or force.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.scenarios.test_database_failover import OPERATOR, VIEWER, database_yaml, post
from tests.support.cluster import Cluster
from tests.support.postgres import PgPair, ReplicatedDb
from tests.support.writers import DnsWriter, PoolWriter

pytestmark = pytest.mark.slow


@pytest.fixture
def replicated(pg_pair: PgPair) -> Iterator[ReplicatedDb]:
    db = pg_pair.replicate()
    db.on_primary("INSERT INTO accounts(owner, balance) SELECT 'o' || g, g FROM generate_series(1, 50) g")
    db.wait_synced()
    db.wait_caught_up()
    yield db
    db.drop()


@pytest.fixture
async def cluster(tmp_path: Path, replicated: ReplicatedDb) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, extra_service=lambda _vid: database_yaml(replicated),  # type: ignore[arg-type]
                api_tokens=[("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)])
    await c.start()
    try:
        await c.wait_sites_up()
        await c.wait_for("engine-gcp", lambda s: s["services"]["shop"]["lag_s"] is not None
                         and s["services"]["shop"]["replication"]["state"] == "up", what="replication up")
        yield c
    finally:
        await c.stop()


def amounts(db: ReplicatedDb, standby: bool) -> set[int]:
    rows = (db.on_standby if standby else db.on_primary)("SELECT amount FROM orders WHERE amount >= 2000000")
    return {int(float(str(r[0]))) for r in rows}


async def switch(cluster: Cluster, target: str) -> dict[str, Any]:
    status, body = await post(cluster, "engine-gcp", "/v1/services/shop/switchover",
                              {"reason": f"planned move to {target}", "target": target})
    assert status == 202, body
    await cluster.wait_for("engine-gcp", lambda s: s["services"]["shop"]["active"] == target
                           and s["services"]["shop"]["operation"] is None, timeout=60, what=f"switchover to {target}")
    op = next(o for o in await cluster.operations("engine-gcp") if o["id"] == body["operation"])
    assert op["state"] == "done", json.dumps(op["steps"], indent=1)[:4000]
    return op  # type: ignore[no-any-return]


async def test_switchover_there_and_back_under_load_loses_nothing(cluster: Cluster, replicated: ReplicatedDb) -> None:
    """Two switchovers under load: nothing acknowledged is lost, and both a writer that reconnects after any error
    and one that keeps its connection unless it broke (a default pool) follow DNS both ways."""
    writer = DnsWriter(cluster, replicated).start()
    pooled = PoolWriter(cluster, replicated, first=5_000_000).start()
    try:
        await asyncio.sleep(1.0)
        op = await switch(cluster, "azure")
        assert op["kind"] == "switchover" and op["evidence"]["planned"] is True
        # the evidence: every peer's verdict with its age, this engine's observations, lag and RPO
        assert {v["voter"] for v in op["evidence"]["peer_verdicts"]} == {"engine-azure", "witness"}
        assert all(v["view"]["sites"] == {"gcp": "up", "azure": "up"} for v in op["evidence"]["peer_verdicts"])
        assert op["evidence"]["observations"]["gcp"][0]["state"] == "up" and op["evidence"]["rpo_s"] == 30.0
        assert set(op["steps"]) == {"precheck", "lower_ttl", "weighted_failback", "fence", "drain", "promote",
                                    "shift_dns", "verify_dns", "reverse", "restore_ttl", "reconcile", "report"}
        assert "every write acknowledged on gcp is on azure" in op["steps"]["drain"]["summary"]
        # the drain proved the standby caught up: the apply worker was ended, not waited for
        assert "ended at once (the drain proved the standby caught up)" in op["steps"]["promote"]["summary"]
        # once DNS answered azure, the read-only sessions a pool opened on the fenced gcp were ended
        assert op["steps"]["verify_dns"]["data"]["clients_released"]["status"] == "ok"
        await asyncio.sleep(1.0)  # writes land on azure now, and flow back to gcp
        await cluster.wait_for("engine-gcp", lambda s: s["services"]["shop"]["replication"]["state"] == "up",
                               timeout=20, what="gcp is azure's standby")
        back = await switch(cluster, "gcp")
        assert back["steps"]["drain"]["state"] == "done"
        await asyncio.sleep(0.5)
    finally:
        await writer.stop()
        await pooled.stop()
    for follower in (writer, pooled):
        sites = {site for _, site, _ in follower.acked}
        assert sites == {"gcp", "azure"}, sites  # the writer followed DNS both ways
    acked = {n for n, _, _ in writer.acked} | {n for n, _, _ in pooled.acked}
    replicated.wait_caught_up(timeout=20)
    on_primary = amounts(replicated, standby=False)
    assert acked <= on_primary, f"{len(acked - on_primary)} acknowledged writes lost"
    # and the pair agrees again: azure is gcp's standby once more
    deadline = time.monotonic() + 15
    while amounts(replicated, standby=True) != on_primary:
        assert time.monotonic() < deadline, "azure did not catch up as gcp's standby"
        await asyncio.sleep(0.1)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        replicated.on_standby("INSERT INTO orders(account, amount) VALUES (1, 1)")
    assert len(acked) > 100 and writer.refused < len(acked)


async def test_preconditions_answer_412_with_reasons(cluster: Cluster, replicated: ReplicatedDb) -> None:
    status, body = await post(cluster, "engine-gcp", "/v1/services/shop/switchover",
                              {"reason": "check", "dry_run": True})
    assert status == 200 and body["would"] == "start", body
    replicated.on_standby(f"ALTER SUBSCRIPTION {replicated.subscription} DISABLE")
    replicated.on_primary("INSERT INTO orders(account, amount) VALUES (1, 1)")
    try:
        await cluster.wait_for("engine-gcp", lambda s: (s["services"]["shop"]["lag_s"] or 0) > 5.5, timeout=20,
                               what="lag above switchover_max_lag")
        status, body = await post(cluster, "engine-gcp", "/v1/services/shop/switchover", {"reason": "now"})
        assert status == 412, body
        assert "standby_lagging" in [r["code"] for r in body["reasons"]] or \
            "replication_down" in [r["code"] for r in body["reasons"]], body
    finally:
        # a standby with its subscription disabled takes writes outside the active site: the engines fence it as a
        # stray primary (runbooks/stray-primary.md), so this maintenance session overrides the fence
        replicated.pair.subscriber.execute(f"ALTER SUBSCRIPTION {replicated.subscription} ENABLE", replicated.dbname,
                                           force_write=True)
    for vid in cluster.voters:
        await cluster.cut(vid, "azure", "reset")
    await cluster.wait_for("engine-gcp", lambda s: s["services"]["shop"]["sites"]["azure"]["health"] == "down",
                           what="azure down")
    status, body = await post(cluster, "engine-gcp", "/v1/services/shop/switchover", {"reason": "now"})
    assert status == 412 and "target_unhealthy" in [r["code"] for r in body["reasons"]], body
    assert await cluster.operations("engine-gcp") == [] and cluster.dns_site() == "gcp"


async def test_scheduled_switchover_starts_on_time(cluster: Cluster) -> None:
    at = time.time() + 2.0
    status, body = await post(cluster, "engine-gcp", "/v1/services/shop/switchover",
                              {"reason": "maintenance window", "scheduled_at": at})
    assert status == 202 and body["scheduled_at"] == at, body
    assert await cluster.operations("engine-gcp") == []
    await cluster.wait_for("engine-gcp", lambda s: s["services"]["shop"]["active"] == "azure", timeout=40,
                           what="scheduled switchover")
    op = (await cluster.operations("engine-gcp"))[0]
    assert op["trigger"] == "scheduled" and op["created_at"] >= at - 0.05

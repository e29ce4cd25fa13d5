"""Failover with a real PostgreSQL pair (logical replication) behind the sites: fence, promote, prove.

The pair: site gcp is the publisher, azure the subscriber. The engines write heartbeats on the
primary, measure lag on the standby, and, on failover, fence the old primary, promote the standby
(subscription disabled, sequences synced), shift DNS, check the data-loss window and reconcile.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.support.cluster import Cluster
from tests.support.postgres import PgPair, ReplicatedDb

pytestmark = pytest.mark.slow


def database_yaml(db: ReplicatedDb) -> str:
    section = db.database_config(
        heartbeat={"interval": "300ms"},
        lag_probe={"interval": "500ms", "timeout": "400ms", "statement_timeout": "300ms", "max_lag": "20s"},
        fencing={"enabled": True, "timeout": "3s"},
        reconcile={"enabled": True, "schedule": "1h", "statement_timeout": "10s",
                   "tables": [{"name": "accounts"}, {"name": "orders"}],
                   "metrics": [{"name": "balance", "query": "SELECT coalesce(sum(balance), 0) FROM accounts"}]},
    )
    return "    database: " + json.dumps(section)


@pytest.fixture
def replicated(pg_pair: PgPair) -> Iterator[ReplicatedDb]:
    db = pg_pair.replicate()
    db.on_primary("INSERT INTO accounts(owner, balance) SELECT 'o' || g, g FROM generate_series(1, 200) g")
    db.on_primary("INSERT INTO orders(account, amount) SELECT g % 200 + 1, g FROM generate_series(1, 500) g")
    db.wait_synced()
    db.wait_caught_up()
    yield db
    db.drop()


OPERATOR, VIEWER = "db-op-token-0123456789", "db-view-token-0123456789"


async def start(tmp_path: Path, db: ReplicatedDb, **kw: object) -> Cluster:
    c = Cluster(tmp_path, extra_service=lambda _vid: database_yaml(db),  # type: ignore[arg-type]
                api_tokens=[("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)], **kw)
    await c.start()
    await c.wait_sites_up()
    return c


@pytest.fixture
async def cluster(tmp_path: Path, replicated: ReplicatedDb) -> AsyncIterator[Cluster]:
    c = await start(tmp_path, replicated)
    try:
        yield c
    finally:
        await c.stop()


async def test_failover_fences_promotes_and_proves(cluster: Cluster, replicated: ReplicatedDb) -> None:
    """The gcp site dies (its database lives): the old primary is fenced, the standby promoted, nothing lost, and
    the data-loss verdict is an honest bound (asynchronous replication cannot prove zero)."""
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["lag_s"] is not None, what="lag known")
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", timeout=30,
                           what="failover")
    op = (await cluster.operations("engine-azure"))[0]
    assert op["state"] == "done", json.dumps(op["steps"], indent=1)[:3000]
    steps = op["steps"]
    assert steps["fence"]["state"] == "done"
    assert steps["promote"]["state"] == "done"
    # asynchronous replication: zero is not provable, the verdict is an upper bound from the fence backwards
    loss = steps["consistency"]["data"]
    assert loss["kind"] == "bounded" and loss["status"].startswith("possible loss <= "), loss
    assert loss["bound_s"] < 2.0, loss
    assert steps["reconcile"]["data"]["identical"] is True, steps["reconcile"]["summary"]
    # the old primary refuses writes; the new one takes an insert without an explicit id
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        replicated.on_primary("INSERT INTO orders(account, amount) VALUES (1, 1)")
    rows = replicated.on_standby("INSERT INTO orders(account, amount) VALUES (1, 1) RETURNING id")
    assert int(rows[0][0]) > 500  # type: ignore[arg-type]


async def test_standby_lag_above_rpo_refuses_failover(tmp_path: Path, replicated: ReplicatedDb) -> None:
    """Replication stalls until the lag exceeds a 2 s RPO: the primary's death pages, nothing moves."""
    c = await start(tmp_path, replicated, rpo=2.0)
    try:
        await c.wait_for("engine-azure", lambda s: s["services"]["shop"]["lag_s"] is not None, what="lag known")
        replicated.on_standby(f"ALTER SUBSCRIPTION {replicated.subscription} DISABLE")
        await c.wait_for("engine-azure", lambda s: (s["services"]["shop"]["lag_s"] or 0) > 2.5, timeout=20,
                         what="lag above RPO")
        for vid in c.voters:
            await c.cut(vid, "gcp", "reset")
        status = await c.wait_for("engine-azure", lambda s: s["services"]["shop"]["decision"]["verdict"] == "page",
                                  what="refusal")
        message = status["services"]["shop"]["decision"]["message"]
        assert "not moving: standby lag" in message and "exceeds RPO 2s" in message
        await asyncio.sleep(1.0)
        assert await c.operations("engine-azure") == []
        assert c.dns_site() == "gcp"
    finally:
        await c.stop()
        # a standby with its subscription disabled takes writes outside the active site: the engines fenced it
        # as a stray primary (runbooks/stray-primary.md), so this maintenance session overrides the fence
        replicated.pair.subscriber.execute(f"ALTER SUBSCRIPTION {replicated.subscription} ENABLE", replicated.dbname,
                                           force_write=True)



async def post(cluster: Cluster, vid: str, path: str, body: dict[str, Any], timeout: float = 60.0,
               ) -> tuple[int, Any]:
    """An operator POST with a longer bound than ``Cluster.call`` (prepare-failback reconciles and waits)."""
    async with aiohttp.ClientSession() as s, s.post(
            cluster.voters[vid].url + path, json=body, headers={"Authorization": f"Bearer {OPERATOR}"},
            timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        return r.status, await r.json()


async def test_failback_replays_the_writes_made_in_azure_then_moves_home(cluster: Cluster,
                                                                         replicated: ReplicatedDb) -> None:
    """Failover, a write in azure, gcp back: prepare-failback replays azure's writes to gcp; failback moves home."""
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["lag_s"] is not None, what="lag known")
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", timeout=30,
                           what="failover")
    promote = (await cluster.operations("engine-azure"))[0]["steps"]["promote"]
    assert "slot failover_sub created" in promote["summary"], promote["summary"]
    replicated.on_standby("INSERT INTO orders(account, amount) VALUES (7, 7777)")  # written while in azure
    await cluster.heal()
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["sites"]["gcp"]["health"] == "up")
    await asyncio.sleep(1.2)  # failback_healthy_for
    status, body = await post(cluster, "engine-azure", "/v1/services/shop/failback", {"reason": "home is back"})
    assert status == 409 and any(r.startswith("reverse_replication") for r in body["reasons"]), body
    status, body = await post(cluster, "engine-azure", "/v1/services/shop/prepare-failback",
                              {"reason": "home is back"})
    assert status == 200, body
    assert "written on azure after promotion (the slot carries them)" in body["sentence"], body["sentence"]
    assert replicated.on_primary("SELECT count(*) FROM orders WHERE amount = 7777") == [(1,)]
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["replication"]["state"] == "up"
                           and (s["services"]["shop"]["lag_s"] if s["services"]["shop"]["lag_s"] is not None
                                else 99) < 2, timeout=20, what="reverse replication")
    replicated.on_standby("INSERT INTO orders(account, amount) VALUES (8, 8888)")  # streams at once now
    deadline = asyncio.get_running_loop().time() + 10
    while replicated.on_primary("SELECT count(*) FROM orders WHERE amount = 8888")[0][0] != 1:
        assert asyncio.get_running_loop().time() < deadline, "the write made in azure did not reach gcp"
        await asyncio.sleep(0.05)
    # failback reconciles again now that replication flows back: the pair agrees, no acknowledgement needed
    status, body = await post(cluster, "engine-azure", "/v1/services/shop/failback", {"reason": "home is back"})
    assert status == 202, body
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "gcp", timeout=30,
                           what="failback")
    op = (await cluster.operations("engine-azure"))[0]
    assert (op["kind"], op["state"]) == ("failback", "done"), json.dumps(op["steps"], indent=1)[:3000]
    assert op["steps"]["reconcile"]["data"]["identical"] is True, op["steps"]["reconcile"]["summary"]
    # gcp takes writes again (sequences past azure's rows); azure refuses them
    azure_max = replicated.on_standby("SELECT max(id) FROM orders")[0][0]
    rows = replicated.on_primary("INSERT INTO orders(account, amount) VALUES (1, 1) RETURNING id")
    assert int(str(rows[0][0])) > int(str(azure_max))
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        replicated.on_standby("INSERT INTO orders(account, amount) VALUES (1, 1)")
    # re-protect: the same call now replicates gcp -> azure again, through the slot the failback made
    status, body = await post(cluster, "engine-azure", "/v1/services/shop/prepare-failback",
                              {"reason": "protect the service again"})
    assert status == 200, body
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["replication"]["state"] == "up"
                           and (s["services"]["shop"]["lag_s"] if s["services"]["shop"]["lag_s"] is not None
                                else 99) < 2, timeout=20, what="forward replication again")
    replicated.on_primary("INSERT INTO orders(account, amount) VALUES (9, 9999)")
    deadline = asyncio.get_running_loop().time() + 10
    while replicated.on_standby("SELECT count(*) FROM orders WHERE amount = 9999")[0][0] != 1:
        assert asyncio.get_running_loop().time() < deadline, "gcp's write did not reach azure"
        await asyncio.sleep(0.05)

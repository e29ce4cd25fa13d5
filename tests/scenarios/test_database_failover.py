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
    for vid in c.voters:
        await c.wait_for(vid, lambda s: all(site["health"] == "up" for site in s["services"]["shop"]["sites"].values()),
                         what="both sites up")
    return c


@pytest.fixture
async def cluster(tmp_path: Path, replicated: ReplicatedDb) -> AsyncIterator[Cluster]:
    c = await start(tmp_path, replicated)
    try:
        yield c
    finally:
        await c.stop()


async def test_failover_fences_promotes_and_proves(cluster: Cluster, replicated: ReplicatedDb) -> None:
    """The gcp site dies (its database lives): the old primary is fenced, the standby promoted, nothing lost."""
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
    assert steps["consistency"]["data"]["status"] == "ok"
    assert steps["consistency"]["data"]["loss_window_s"] < 2.0
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
        replicated.on_standby(f"ALTER SUBSCRIPTION {replicated.subscription} ENABLE")


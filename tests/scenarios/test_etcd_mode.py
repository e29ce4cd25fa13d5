"""Engine processes in etcd mode (``coordination: {type: etcd}``) on a real three-member etcd, BIND and
sample sites over loopback: a whole site lost fails over, two engines moving at once leave one winner
and one DNS change, the etcd leader killed or a minority member stopped leaves the engines working,
and an active engine cut off from etcd fences its own PostgreSQL database."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.cluster import Cluster
from tests.support.etcd import EtcdCluster
from tests.support.postgres import PgPair, ReplicatedDb

pytestmark = [pytest.mark.real, pytest.mark.slow]

OPERATOR, VIEWER = "etcd-op-token-0123456789", "etcd-view-token-0123456789"


def etcd_get(cluster: EtcdCluster, key: str) -> dict[str, Any] | None:
    """The JSON value of ``key`` read through the gateway of any answering member (None: absent)."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    for member in cluster.members:
        if member.paused or member.process is None:
            continue
        request = urllib.request.Request(f"{member.endpoint}/v3/kv/range", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                answer = json.loads(response.read())
        except OSError:
            continue
        kvs = answer.get("kvs") or []
        return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None
    raise AssertionError("no etcd member answered")


async def start(tmp_path: Path, etcd: EtcdCluster, **kw: Any) -> Cluster:
    tokens = [("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)]
    cluster = Cluster(tmp_path, etcd=etcd, api_tokens=tokens, **kw)
    try:
        await cluster.start()
        await cluster.wait_sites_up()
    except BaseException:
        print(cluster.logs())
        await cluster.stop()
        raise
    return cluster


@pytest.fixture
async def cluster(tmp_path: Path, etcd_cluster: EtcdCluster) -> AsyncIterator[Cluster]:
    c = await start(tmp_path, etcd_cluster)
    try:
        yield c
    finally:
        await c.stop()


async def votes_fresh(cluster: Cluster, vid: str = "engine-azure") -> None:
    """Until ``vid`` holds a fresh vote of every other voter (read from etcd)."""
    await cluster.wait_for(vid, lambda s: all(p["heard_age_s"] is not None and p["heard_age_s"] < 1.0
                                              for p in s["peers"]), timeout=15, what="every vote fresh via etcd")


async def test_a_whole_site_lost_fails_over_with_the_epoch_claimed_in_etcd(cluster: Cluster) -> None:
    """engine-gcp killed and the gcp site dark: azure and the witness (votes in etcd) move the service to azure,
    the epoch key in etcd names the operation that changed DNS, and DNS changed once."""
    await votes_fresh(cluster)
    await cluster.kill("engine-gcp")
    for vid in cluster.voters:
        if vid != "engine-gcp":
            await cluster.cut(vid, "gcp", "reset")
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", timeout=30,
                           what="failover to azure")
    op = (await cluster.operations("engine-azure"))[0]
    assert op["state"] == "done", json.dumps(op["steps"], indent=1)[:3000]
    assert "etcd epoch 2 claimed" in op["steps"]["shift_dns"]["summary"]
    assert cluster.dns_site() == "azure" and cluster.dns_epoch().startswith('"epoch=2 site=azure')
    assert cluster.etcd is not None
    epoch = etcd_get(cluster.etcd, f"{cluster.etcd_prefix}/services/shop/epoch")
    assert epoch is not None and epoch["epoch"] == 2 and epoch["site"] == "azure" and epoch["token"] == op["id"]


async def move(cluster: Cluster, vid: str) -> tuple[int, Any]:
    return await cluster.call(vid, "POST", "/v1/services/shop/switchover", OPERATOR,
                              {"reason": f"race from {vid}", "target": "azure"})


async def test_two_engines_moving_at_once_leave_one_winner_and_one_dns_change(cluster: Cluster) -> None:
    """Both engines are asked to switch the service to azure at the same moment: one operation is done, the other
    stands down (at etcd's compare-and-set or before), DNS moved exactly once, to epoch 2."""
    await votes_fresh(cluster)
    answers = await asyncio.gather(move(cluster, "engine-gcp"), move(cluster, "engine-azure"))
    assert any(status == 202 for status, _ in answers), answers
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", timeout=30,
                           what="switchover to azure")
    await asyncio.sleep(1.0)  # let the loser finish standing down
    ops = [op for vid in ("engine-gcp", "engine-azure") for op in await cluster.operations(vid)]
    done = [op for op in ops if op["state"] == "done"]
    assert len(done) == 1, json.dumps(ops, indent=1)[:4000]
    assert all(op["state"] in ("done", "stood_down") for op in ops), [op["state"] for op in ops]
    assert cluster.dns_epoch().startswith('"epoch=2 site=azure') and done[0]["id"] in cluster.dns_epoch()
    assert cluster.etcd is not None
    epoch = etcd_get(cluster.etcd, f"{cluster.etcd_prefix}/services/shop/epoch")
    assert epoch is not None and (epoch["epoch"], epoch["token"]) == (2, done[0]["id"])


async def test_a_pause_on_one_engine_pauses_every_engine_through_etcd(cluster: Cluster) -> None:
    """A pause posted to engine-gcp is written as an etcd key; engine-azure adopts it within a few ticks."""
    await votes_fresh(cluster)
    status, body = await cluster.call("engine-gcp", "POST", "/v1/services/shop/pause", OPERATOR,
                                      {"reason": "maintenance", "ttl": 600})
    assert status == 200, body
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["paused"], timeout=10,
                           what="pause adopted from etcd")
    assert cluster.etcd is not None
    stored = etcd_get(cluster.etcd, f"{cluster.etcd_prefix}/services/shop/operator/pause")
    assert stored is not None and stored["value"]["paused"] is True and stored["voter"] == "engine-gcp"


async def test_the_etcd_leader_killed_and_a_minority_member_stopped_leave_the_engines_working(
        tmp_path: Path, etcd_cluster_fresh: EtcdCluster) -> None:
    """With etcd's leader SIGKILLed the votes keep flowing after the election, and with a second, minority member
    then stopped (SIGSTOP, as cut off) the remaining quorum still carries a whole-site failover."""
    etcd = etcd_cluster_fresh
    cluster = await start(tmp_path, etcd)
    try:
        await votes_fresh(cluster)
        leader = etcd.leader()
        etcd.kill(leader)
        etcd.leader(timeout=15)  # a new one is elected among the two left
        await asyncio.sleep(1.0)
        await votes_fresh(cluster)
        etcd.restart(leader)
        etcd.wait_ready(30)
        minority = next(m for m in etcd.members if m is not etcd.leader())
        etcd.pause(minority)
        await votes_fresh(cluster)
        await cluster.kill("engine-gcp")
        for vid in cluster.voters:
            if vid != "engine-gcp":
                await cluster.cut(vid, "gcp", "reset")
        await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", timeout=30,
                               what="failover with a member stopped")
        assert cluster.dns_epoch().startswith('"epoch=2 site=azure')
        etcd.resume(minority)
    finally:
        await cluster.stop()


# -- self-fencing: the active engine cut off from etcd fences its own database ------------------------


def database_yaml(db: ReplicatedDb) -> str:
    section = db.database_config(
        heartbeat={"interval": "300ms"},
        lag_probe={"interval": "500ms", "timeout": "400ms", "statement_timeout": "300ms", "max_lag": "20s"},
        fencing={"enabled": True, "timeout": "3s"})
    return "    database: " + json.dumps(section)


@pytest.fixture
def replicated(pg_pair: PgPair) -> Iterator[ReplicatedDb]:
    db = pg_pair.replicate()
    db.wait_synced()
    yield db
    db.drop()


def read_only(db: ReplicatedDb) -> bool:
    rows = db.on_primary("SHOW default_transaction_read_only")
    return str(rows[0][0]) == "on"


async def test_the_active_engine_cut_off_from_etcd_fences_its_database_before_its_lease_can_expire(
        tmp_path: Path, etcd_cluster: EtcdCluster, replicated: ReplicatedDb) -> None:
    """engine-gcp holds the write lease in etcd; cut off from every member, it fences the gcp primary within the
    lease TTL (8 s) of its last renewal, while the lease key still exists; then the key expires."""
    cluster = await start(tmp_path, etcd_cluster, extra_service=lambda _vid: database_yaml(replicated))
    key = f"{cluster.etcd_prefix}/services/shop/lease"
    try:
        deadline = time.monotonic() + 15
        while etcd_get(etcd_cluster, key) is None:
            assert time.monotonic() < deadline, cluster.logs()
            await asyncio.sleep(0.1)
        assert etcd_get(etcd_cluster, key) == {"site": "gcp", "voter": "engine-gcp"}
        assert not read_only(replicated)
        cut_at = time.monotonic()
        await cluster.cut("engine-gcp", "etcd")
        await cluster.wait_for("engine-gcp", lambda s: s["services"]["shop"].get("self_fenced") is not None,
                               timeout=12, what="self-fenced")
        fenced_after = time.monotonic() - cut_at
        assert read_only(replicated)
        held = etcd_get(etcd_cluster, key)
        assert fenced_after < 8.0 and held is not None, (fenced_after, held)  # fenced before the lease could lapse
        deadline = time.monotonic() + 12
        while etcd_get(etcd_cluster, key) is not None:
            assert time.monotonic() < deadline, "the lease of a cut-off holder never expired"
            await asyncio.sleep(0.2)
    except (AssertionError, aiohttp.ClientError):
        print(cluster.logs())
        raise
    finally:
        await cluster.stop()  # the fence (ALTER DATABASE ... read only) goes with the database the fixture drops

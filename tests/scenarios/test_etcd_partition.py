"""Real partitions (network namespaces, nftables) in etcd mode: one etcd member in each of gcp, azure and
witness beside the voters, so cutting a namespace cuts its member too.

An isolated active site (its engine reaching only its own, now minority, member) fences its database
before its etcd lease can expire; azure promotes only once the lease is gone, and writers hammering
both databases never see both accept writes. The witness isolated with its member (a minority member
cut off) moves nothing and fences nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.netns_cluster import NetnsCluster, Writer

pytestmark = [pytest.mark.slow, pytest.mark.real]

LEASE_TTL = 6.0  # NetnsCluster's etcd_settings


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NetnsCluster]:
    c = NetnsCluster(tmp_path, tick=0.2, interval=0.3, timeout=0.2, threshold=3,
                     fence_timeout=1.0, coordination="etcd")
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def writers(cluster: NetnsCluster) -> dict[str, Writer]:
    return {site: Writer(site, cluster.dsn(site)).start() for site in ("gcp", "azure")}


async def test_the_isolated_active_site_fences_itself_before_its_etcd_lease_lapses_and_azure_promotes_after(
        cluster: NetnsCluster) -> None:
    """gcp isolated with its etcd member: engine-gcp fences its primary within the lease TTL, azure's engine
    promotes only once etcd dropped the lease, and no write is accepted by both databases at once."""
    ws = writers(cluster)
    try:
        await asyncio.sleep(1.0)
        assert ws["gcp"].writes and not ws["azure"].writes, "before: the primary writes, the standby refuses"
        isolated_at = time.time()
        cluster.isolate("gcp")
        await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure"
                               and s["services"]["shop"]["operation"] is None, timeout=40,
                               what="the failover to azure done")
        await cluster.wait_for("engine-gcp", lambda s: s["services"]["shop"]["self_fenced"] is not None,
                               timeout=5, what="gcp self-fenced")
        await asyncio.sleep(1.0)
        cluster.heal()
        await asyncio.sleep(1.0)
    finally:
        for w in ws.values():
            w.stop()
    gcp, azure = ws["gcp"], ws["azure"]
    last_gcp, first_azure = gcp.last_accepted, azure.first_accepted()
    facts = (f"isolated at {isolated_at:.3f}; gcp last acked {last_gcp and last_gcp.acked - isolated_at}, "
             f"azure first sent {first_azure and first_azure.sent - isolated_at}")
    assert last_gcp is not None and first_azure is not None, facts
    assert last_gcp.acked <= isolated_at + LEASE_TTL, facts  # fenced before the lease could lapse
    assert last_gcp.acked < first_azure.sent, f"both databases accepted writes at once: {facts}"
    assert not cluster.writable("gcp"), "the old primary stays fenced after the heal"
    ops = await cluster.operations("engine-azure")
    assert len(ops) == 1 and ops[0]["state"] == "done", json.dumps(ops, indent=1)[:3000]
    fence = ops[0]["steps"]["fence"]
    assert "etcd" in json.dumps(fence), fence  # promoted on etcd's word that the lease is gone
    assert "etcd epoch 2 claimed" in ops[0]["steps"]["shift_dns"]["summary"]
    assert cluster.dns_epoch().startswith('"epoch=2 site=azure'), cluster.dns_epoch()
    assert await cluster.operations("engine-gcp") == [], "the cut-off engine moved nothing"


async def test_a_minority_etcd_member_isolated_with_the_witness_moves_nothing(cluster: NetnsCluster) -> None:
    """The witness namespace (the witness voter and one etcd member) cut off for longer than the lease: the two
    engines keep a quorum of etcd, nothing moves, nothing is fenced, gcp keeps taking writes."""
    ws = writers(cluster)
    try:
        cluster.isolate("witness")
        deadline = time.monotonic() + 2 * LEASE_TTL
        while time.monotonic() < deadline:
            for vid in ("engine-gcp", "engine-azure"):
                service = await cluster.service(vid)
                assert service["operation"] is None and service["active"] == "gcp", (vid, service["operation"])
                assert service["self_fenced"] is None, (vid, service["self_fenced"])
            await asyncio.sleep(0.25)
        status = await cluster.status("engine-azure")
        heard = {p["id"]: p["heard_age_s"] for p in status["peers"]}
        assert heard["engine-gcp"] is not None and heard["engine-gcp"] < 1.0, heard
        cluster.heal()
    finally:
        for w in ws.values():
            w.stop()
    assert cluster.writable("gcp")
    late = ws["gcp"].last_accepted
    assert late is not None and late.acked > time.time() - 2.0, "gcp kept taking writes"
    for vid in ("engine-gcp", "engine-azure"):
        assert await cluster.operations(vid) == []
        assert await cluster.events(vid, "fence") == []

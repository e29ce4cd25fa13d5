"""Real partitions (network namespaces, nftables) against engine processes, PostgreSQL and BIND.

The self-fencing lease (``engine/config/lease.py``) in its proof: the active site cut off from the voters
fences its own database within the bound, the majority promotes the standby only after the lease,
and a client hammering both databases never has two of them accepting writes at once. A partition
that leaves the active site a majority (the witness lost, or the link between the sites cut while
the witness sees both) moves nothing and fences nothing.

Every part runs in its namespace (``tests/support/netns_cluster.py``); this process and its writers
sit in the root namespace, which an isolation keeps connected, so the writers reach both databases
throughout and time-stamp every acknowledged insert.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.config.lease import Lease
from tests.support.netns_cluster import NetnsCluster, Writer

pytestmark = [pytest.mark.slow, pytest.mark.real]

TICK = 0.2


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NetnsCluster]:
    c = NetnsCluster(tmp_path, tick=TICK, interval=0.3, timeout=0.2, threshold=3, fence_timeout=3.0)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def lease_of(cluster: NetnsCluster) -> Lease:
    lease = cluster.parsed_config("engine-azure").lease("shop")
    assert lease is not None, "three voters and a fenced database: the service has a lease"
    assert isinstance(lease, Lease)
    return lease


def writers(cluster: NetnsCluster) -> dict[str, Writer]:
    return {site: Writer(site, cluster.dsn(site)).start() for site in ("gcp", "azure")}


def describe(ws: dict[str, Writer], since: float) -> str:
    parts = []
    for site, w in ws.items():
        last, first = w.last_accepted, w.first_accepted()
        parts.append(f"{site}: {len(w.writes)} accepted (first sent {first.sent - since if first else None}, "
                     f"last acked {last.acked - since if last else None}), {len(w.refusals)} refused, "
                     f"errors {w.errors}")
    return "; ".join(parts)


async def test_isolated_primary_fences_itself_and_the_other_side_promotes_only_after_the_lease(
        cluster: NetnsCluster) -> None:
    """Primary site isolated with its engine: within the bound its database refuses writes, the other side
    promotes only after the lease, and a writer hammering both databases shows no overlap of accepted writes."""
    lease = lease_of(cluster)
    ws = writers(cluster)
    try:
        await asyncio.sleep(1.0)
        assert ws["gcp"].writes and not ws["azure"].writes, "before: the primary writes, the standby refuses"
        assert ws["azure"].refusals
        isolated_at = time.time()
        cluster.isolate("gcp")
        await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure"
                               and s["services"]["shop"]["operation"] is None, timeout=lease.wait + 30,
                               what="the failover to azure done")
        await cluster.wait_for("engine-gcp", lambda s: s["services"]["shop"]["self_fenced"] is not None,
                               timeout=5, what="gcp self-fenced")
        await asyncio.sleep(1.0)  # the azure writer reconnects to the promoted database
        cluster.heal()
        await cluster.wait_for("engine-gcp", lambda s: s["services"]["shop"]["epoch"] == 2
                               and s["services"]["shop"]["active"] == "azure", timeout=15,
                               what="gcp's engine learning of the move")
        await asyncio.sleep(2.0)  # healed, with the writer still knocking at gcp
    finally:
        for w in ws.values():
            w.stop()
    gcp, azure = ws["gcp"], ws["azure"]
    facts = describe(ws, isolated_at) + f"; lease {lease.explain()}, wait {lease.wait:g}s"
    print(facts)  # shown with -s: the measured timeline
    last_gcp, first_azure = gcp.last_accepted, azure.first_accepted()
    assert last_gcp is not None and first_azure is not None, facts
    # within the bound the isolated primary refuses writes, and keeps refusing (healed, it stays fenced)
    # (its newest echoed stamp is from before the cut: its fence is done by then + lease - margin)
    assert last_gcp.acked <= isolated_at + lease.length, facts
    refused = gcp.first_refusal(after=isolated_at)
    assert refused is not None and refused <= isolated_at + lease.length, facts
    assert not cluster.writable("gcp"), "after the heal the old primary must still be fenced"
    # the standby accepts only after the lease (counted from when gcp's engine was last heard, up to a
    # tick before the cut, plus a tick of the decision loop and scheduling)
    assert first_azure.sent >= isolated_at + lease.wait - (2 * TICK + 0.5), facts
    assert last_gcp.acked < first_azure.sent, f"both databases accepted writes at once: {facts}"
    assert len(azure.writes) > 50, facts
    # traffic moved once, at epoch 2
    assert cluster.dns_site() == "azure"
    assert cluster.dns_epoch().startswith('"epoch=2 site=azure'), cluster.dns_epoch()
    ops = await cluster.operations("engine-azure")
    assert len(ops) == 1, json.dumps(ops, indent=1)[:3000]
    op = ops[0]
    assert (op["state"], op["source"], op["target"], op["epoch_to"]) == ("done", "gcp", "azure", 2), op["message"]
    fence_step: dict[str, Any] = op["steps"]["fence"]
    assert fence_step["data"]["lease_s"] == lease.wait, fence_step  # it waited the lease out, not fenced from here
    assert op["steps"]["shift_dns"]["data"]["changed"] is True
    assert await cluster.operations("engine-gcp") == [], "the cut-off engine moved nothing"
    # gcp's engine says what it did and still says so after the heal
    fences = await cluster.events("engine-gcp", "fence")
    assert len(fences) == 1 and "self-fenced the database in gcp" in fences[0]["message"], fences
    status = await cluster.service("engine-gcp")
    assert status["self_fenced"] is not None and status["self_fenced"]["epoch"] == 1, status["self_fenced"]
    lost = [e["message"] for e in await cluster.events("engine-gcp", "lease") if e["at"] >= isolated_at]
    assert any(m.startswith("lease lost") for m in lost), lost


async def hold_still(cluster: NetnsCluster, lease: Lease, ws: dict[str, Writer], what: str) -> None:
    """For longer than ``lease.wait``: nothing moves, nothing is fenced, gcp keeps taking writes."""
    started = time.time()
    deadline = time.monotonic() + lease.wait + 2.0
    while time.monotonic() < deadline:
        for vid in ("engine-gcp", "engine-azure"):
            service = await cluster.service(vid)
            assert service["operation"] is None, f"{what}: {vid} started {service['operation']}"
            assert service["active"] == "gcp" and service["epoch"] == 1, (what, vid, service["active"])
            assert service["self_fenced"] is None, (what, vid, service["self_fenced"])
        await asyncio.sleep(0.25)
    for vid in ("engine-gcp", "engine-azure"):
        assert await cluster.operations(vid) == [], what
        assert await cluster.events(vid, "fence") == [], what
    gcp = ws["gcp"]
    assert not gcp.refusals and gcp.errors == {}, f"{what}: {describe(ws, started)}"
    recent = [w for w in gcp.writes if w.sent >= started]
    assert len(recent) > 100 and recent[-1].acked > time.time() - 1, f"{what}: {describe(ws, started)}"
    assert not ws["azure"].writes, f"{what}: the standby accepted writes"
    assert cluster.writable("gcp")
    assert (cluster.dns_site(), cluster.dns_epoch()) == ("gcp", '"epoch=1 site=gcp op=initial"'), what


async def test_witness_lost_or_the_sites_cut_apart_moves_nothing_and_fences_nothing(cluster: NetnsCluster) -> None:
    """Witness lost, peer link cut while the witness sees both: no action, no fencing."""
    lease = lease_of(cluster)
    ws = writers(cluster)
    try:
        await asyncio.sleep(0.5)
        cluster.isolate("witness")  # (a) the engines still hear each other: two voters of three
        await hold_still(cluster, lease, ws, "witness isolated")
        cluster.heal()
        for vid in cluster.voters:
            await cluster.wait_for(vid, lambda s: all((p["heard_age_s"] or 99) < 2 * TICK for p in s["peers"]),
                                   timeout=10, what="every peer heard again")
        cluster.cut("gcp", "azure")  # (b) the witness still sees both: gcp keeps its lease, azure sees gcp up there
        await hold_still(cluster, lease, ws, "gcp and azure cut apart")
    finally:
        for w in ws.values():
            w.stop()


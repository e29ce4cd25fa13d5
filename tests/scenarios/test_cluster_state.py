"""Peer mode, one truth: operator state set on one engine holds on every voter, and /v1/cluster shows all views.

Two engines and a witness as real processes over loopback (tests/support/cluster.py), verdicts every 300 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster

pytestmark = pytest.mark.slow
OPERATOR, VIEWER = "op-token-0123456789", "view-token-0123456789"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, api_tokens=[("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)])
    await c.start()
    try:
        await c.wait_sites_up()
        yield c
    finally:
        await c.stop()


def paused(s: dict) -> bool:  # type: ignore[type-arg]
    return bool(s["services"]["shop"]["paused"])


async def test_pause_on_one_engine_holds_on_every_voter(cluster: Cluster) -> None:
    """Paused on engine-gcp, engine-azure reports paused and refuses to fail over; resumed on azure, both resume."""
    status, _ = await cluster.call("engine-gcp", "POST", "/v1/services/shop/pause", OPERATOR,
                                   {"reason": "maintenance"})
    assert status == 200
    await cluster.wait_for("engine-azure", paused, timeout=5.0, what="pause adopted by engine-azure")
    await cluster.wait_for("witness", paused, timeout=5.0, what="pause adopted by the witness")
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    s = await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["decision"]["message"].startswith(
        "PAUSED: failover shop gcp -> azure"), what="paused decision on engine-azure")
    assert s["services"]["shop"]["active"] == "gcp"
    await asyncio.sleep(1.0)
    assert await cluster.operations("engine-azure") == []

    view = await cluster.get("engine-gcp", "/v1/cluster")
    assert [v["id"] for v in view["voters"]] == ["engine-gcp", "engine-azure", "witness"]
    assert all(isinstance(v["age_s"], float | int) and v["age_s"] < 5 for v in view["voters"])
    views = view["services"]["shop"]["views"]
    assert set(views) == {"engine-gcp", "engine-azure", "witness"}
    for row in views.values():
        assert row["paused"] is True and row["active"] == "gcp" and row["epoch"] == 1
        assert row["operator"]["pause"]["voter"] == "engine-gcp"
        assert row["operator"]["pause"]["by"] == "alice"
    assert len({row["operator"]["pause"]["version"] for row in views.values()}) == 1
    assert views["engine-gcp"]["sites"]["gcp"] == "down"

    status, _ = await cluster.call("engine-azure", "POST", "/v1/services/shop/resume", OPERATOR, {"reason": "done"})
    assert status == 200
    await cluster.wait_for("engine-gcp", lambda s: not paused(s), timeout=5.0, what="resume adopted by engine-gcp")
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", what="failover")
    view = await cluster.get("engine-azure", "/v1/cluster")
    pause = {vid: row["operator"]["pause"] for vid, row in view["services"]["shop"]["views"].items() if row}
    assert pause["engine-azure"]["voter"] == "engine-azure"
    assert pause["engine-azure"]["version"] > views["engine-gcp"]["operator"]["pause"]["version"]
    _, events = await cluster.call("engine-gcp", "GET", "/v1/events?kind=operator", VIEWER)
    assert any(e["message"].startswith("shop: adopted pause") and "engine-azure" in e["message"]
               for e in events["events"])

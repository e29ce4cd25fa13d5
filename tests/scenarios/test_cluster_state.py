"""Peer mode, one truth: operator state set on one engine holds on every voter, and /v1/cluster shows all views.

Two engines and a witness as real processes over loopback (tests/support/cluster.py), verdicts every 300 ms.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cluster import ROOT, Cluster, running

pytestmark = pytest.mark.slow
OPERATOR, VIEWER = "op-token-0123456789", "view-token-0123456789"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    tokens = [("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)]
    async with running(Cluster(tmp_path, api_tokens=tokens)) as c:
        yield c


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


def _status_cluster(url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_ENGINE_")}
    return subprocess.run([sys.executable, "-m", "engine", "status", "--cluster", "--url", url],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
                          env={**env, "PYTHONPATH": str(ROOT), "FAILOVER_ENGINE_TOKEN": VIEWER})


async def test_a_partition_heals_into_one_state_and_shows_the_conflict(cluster: Cluster) -> None:
    """Pauses written on both sides of a partition at one version converge on one winner, shown as a conflict."""
    gcp_side, others = "engine-gcp", ("engine-azure", "witness")
    for other in others:
        await cluster.cut(gcp_side, other)
        await cluster.cut(other, gcp_side)
    await cluster.wait_for("engine-azure", lambda s: all(
        p["id"] != gcp_side or (p["heard_age_s"] or 0) > 1.5 for p in s["peers"]), what="engine-gcp unheard")
    for vid, reason in ((gcp_side, "gcp maintenance"), ("engine-azure", "azure maintenance")):
        status, _ = await cluster.call(vid, "POST", "/v1/services/shop/pause", OPERATOR, {"reason": reason})
        assert status == 200
    await asyncio.sleep(1.0)
    cut_off = (await cluster.get("engine-azure", "/v1/cluster"))["services"]["shop"]["views"]
    assert cut_off["engine-azure"]["operator"]["pause"]["value"]["reason"] == "azure maintenance"

    await cluster.heal()

    def settled(view: dict) -> bool:  # type: ignore[type-arg]
        rows = view["services"]["shop"]["views"].values()
        return all(row and row["operator"]["pause"]["voter"] == gcp_side for row in rows)

    deadline = asyncio.get_running_loop().time() + 10
    view = await cluster.get("engine-azure", "/v1/cluster")
    while not settled(view):
        assert asyncio.get_running_loop().time() < deadline, view
        await asyncio.sleep(0.2)
        view = await cluster.get("engine-azure", "/v1/cluster")
    shop = view["services"]["shop"]
    assert all(row["paused"] for row in shop["views"].values())
    assert not [f for f in shop["disagree"] if f.startswith("operator.")]
    assert len(shop["conflicts"]) == 1, shop["conflicts"]
    conflict = shop["conflicts"][0]
    assert conflict["key"] == "pause" and conflict["version"] == 1
    assert (conflict["kept"]["voter"], conflict["overruled"]["voter"]) == (gcp_side, "engine-azure")
    assert conflict["overruled"]["value"]["reason"] == "azure maintenance"

    shown = await asyncio.to_thread(_status_cluster, cluster.voters["engine-azure"].url)
    assert shown.returncode == 0, shown.stderr
    for text in ("engine-azure (self)", "engine-gcp", "witness", "paused v1@engine-gcp",
                 "conflict on pause at version 1"):
        assert text in shown.stdout, shown.stdout

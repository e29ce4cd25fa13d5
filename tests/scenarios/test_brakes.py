"""The brakes, with two engines and a witness as processes, real BIND, faults from proxies.

A second outage within the circuit breaker's window is not acted on automatically, and re-arming
works; a runbook that hangs past its deadline halts and pages; a pause with an expiry resumes by
itself. (A healthy primary is not failed over without fencing it first: tests/scenarios/test_operator.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster

pytestmark = pytest.mark.slow
OPERATOR, VIEWER = "brake-op-token-0123456789", "brake-view-token-0123456789"


def svc(status: dict[str, Any]) -> dict[str, Any]:
    return status["services"]["shop"]  # type: ignore[no-any-return]


async def start(tmp_path: Path, **kw: Any) -> Cluster:
    c = Cluster(tmp_path, api_tokens=[("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)], **kw)
    await c.start()
    await c.wait_sites_up()
    return c


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await start(tmp_path, cooldown="1s")
    try:
        yield c
    finally:
        await c.stop()


async def events(c: Cluster, vid: str, kind: str) -> list[dict[str, Any]]:
    _, body = await c.call(vid, "GET", f"/v1/events?service=shop&kind={kind}", VIEWER)
    return body["events"]  # type: ignore[no-any-return]


async def test_breaker_stops_a_second_automatic_failover_until_rearmed(cluster: Cluster) -> None:
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    await cluster.wait_for("engine-azure", lambda s: svc(s)["active"] == "azure", what="first failover")
    await cluster.heal()
    await cluster.wait_for("engine-azure", lambda s: svc(s)["sites"]["gcp"]["health"] == "up", what="gcp back")
    await asyncio.sleep(1.2)  # failback_healthy_for
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/failback", OPERATOR,
                                      {"reason": "home is back"})
    assert status == 202, body
    await cluster.wait_for("engine-azure", lambda s: svc(s)["active"] == "gcp" and svc(s)["operation"] is None,
                           what="failback")
    op = (await cluster.operations("engine-azure"))[0]
    assert (op["kind"], op["evidence"]["planned"]) == ("failback", True)  # both healthy: a switchover
    assert "drain" in op["steps"] and "reverse" in op["steps"]

    # the second outage within the hour: paged, not acted on; the breaker says why
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    # the trip is journaled (and published to the peers) a moment before the tick's decision: wait for both
    status = await cluster.wait_for("engine-azure", lambda s: (svc(s)["breaker"] or {}).get("open") is True
                                    and svc(s)["decision"]["verdict"] == "page"
                                    and "cool-down" not in svc(s)["decision"]["message"],
                                    timeout=20, what="breaker open")
    shop = svc(status)
    assert shop["decision"]["verdict"] == "page", shop["decision"]
    assert "circuit breaker" in shop["decision"]["message"] or "automatic failover(s) of shop" in \
        shop["decision"]["message"], shop["decision"]["message"]
    assert shop["breaker"]["auto_failovers_in_window"] == 1 and shop["breaker"]["limit"] == 1
    await asyncio.sleep(1.0)
    assert svc(await cluster.status("engine-azure"))["active"] == "gcp" and cluster.dns_site() == "gcp"
    alerts = [e for e in await events(cluster, "engine-azure", "alert") if "circuit breaker opened" in e["message"]]
    assert len(alerts) == 1, alerts

    # a viewer cannot re-arm; an operator can, and the engine acts at once
    status, _ = await cluster.call("engine-azure", "POST", "/v1/services/shop/arm", VIEWER, {"reason": "let it"})
    assert status == 403
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/arm", OPERATOR,
                                      {"reason": "flapping understood, gcp is really down"})
    assert (status, body["was_open"]) == (200, True), body
    await cluster.wait_for("engine-azure", lambda s: svc(s)["active"] == "azure", timeout=20, what="armed failover")
    assert cluster.dns_site() == "azure"


async def test_runbook_past_its_deadline_halts_and_pages(tmp_path: Path) -> None:
    c = await start(tmp_path, policy="switchover_ttl: 30s, runbook_deadline: 2s")
    try:
        for vid in c.voters:
            await c.cut(vid, "dns", "blackhole")  # every DNS read hangs until its timeout
            await c.cut(vid, "gcp", "reset")
        status = await c.wait_for("engine-azure", lambda s: (svc(s)["operation"] or {}).get("state") == "halted",
                                  timeout=30, what="halted by the deadline")
        assert "runbook deadline 2s passed" in svc(status)["operation"]["message"], svc(status)["operation"]
        op = (await c.operations("engine-azure"))[0]
        assert op["state"] == "halted" and 1.9 <= op["finished_at"] - op["created_at"] < 3.5
        for _ in range(50):  # the halt shows in status a moment before its alert is journaled
            alerts = [e for e in await events(c, "engine-azure", "alert") if "runbook deadline" in e["message"]]
            if alerts:
                break
            await asyncio.sleep(0.1)
        assert alerts, "no alert for the deadline"
        # it keeps blocking: one runbook per service until an operator acts
        status_code, body = await c.call("engine-azure", "POST", "/v1/services/shop/failover", OPERATOR,
                                         {"reason": "again", "force": True})
        assert (status_code, body["error"]) == (409, "operation_in_progress")
    finally:
        await c.stop()


async def test_pause_with_expiry_resumes_by_itself(cluster: Cluster) -> None:
    status, body = await cluster.call("engine-gcp", "POST", "/v1/services/shop/pause", OPERATOR,
                                      {"reason": "short maintenance", "ttl": 1.5})
    assert status == 200 and body["until"] is not None
    shop = svc(await cluster.status_as("engine-gcp", VIEWER))
    assert shop["paused"] is True and shop["paused_until"] == pytest.approx(body["until"])
    status, bad = await cluster.call("engine-gcp", "POST", "/v1/services/shop/pause", OPERATOR,
                                     {"reason": "both", "ttl": 5, "until": 9e9})
    assert status == 422, bad
    await cluster.wait_for("engine-gcp", lambda s: svc(s)["paused"] is False, timeout=10, what="pause expired")
    resumed = [e for e in await events(cluster, "engine-gcp", "state") if "the pause expired" in e["message"]]
    assert resumed, "no event for the expiry"

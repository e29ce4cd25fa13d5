"""The operator surface on a running cluster: tokens and roles, pause, manual failover with dry run and
safety checks, retry and abort of a halted runbook; bad input is always a 4xx JSON error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, running

pytestmark = pytest.mark.slow
OPERATOR, VIEWER = "op-token-0123456789", "view-token-0123456789"


def up(s: dict, site: str) -> bool:  # type: ignore[type-arg]
    return bool(s["services"]["shop"]["sites"][site]["health"] == "up")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    tokens = [("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)]
    async with running(Cluster(tmp_path, api_tokens=tokens)) as c:
        yield c


async def test_tokens_and_roles(cluster: Cluster) -> None:
    """Reads need a token; mutations need an operator; wrong tokens are refused; peers are untouched."""
    status, body = await cluster.call("engine-azure", "GET", "/v1/status")
    assert (status, body["error"]) == (401, "unauthorized")
    status, _ = await cluster.call("engine-azure", "GET", "/v1/status", VIEWER)
    assert status == 200
    status, body = await cluster.call("engine-azure", "GET", "/v1/status", "nope")
    assert (status, body["detail"]) == (401, "unknown token")
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/pause", VIEWER, {"reason": "test"})
    assert status == 403 and "viewer" in body["detail"]
    status, _ = await cluster.call("engine-azure", "GET", "/healthz")
    assert status == 200
    # the peers still exchange verdicts (HMAC, no token): quorum holds
    status, body = await cluster.call("engine-azure", "GET", "/v1/status", VIEWER)
    assert body["quorum"] is True


async def test_bad_input_is_4xx_json(cluster: Cluster) -> None:
    """Unknown services and sites, bad JSON, wrong types and unknown fields are 4xx with a JSON error."""
    cases = [
        ("/v1/services/nope/pause", {"reason": "x" * 5}, 404, "unknown_service"),
        ("/v1/services/shop/pause", None, 422, "invalid"),
        ("/v1/services/shop/pause", {"reason": 5}, 422, "invalid"),
        ("/v1/services/shop/failover", {"reason": "because", "target": "aws"}, 404, "unknown_site"),
        ("/v1/services/shop/failover", {"reason": "because", "bogus": 1}, 422, "invalid"),
        ("/v1/services/shop/failover", {"reason": "because", "target": "gcp"}, 409, "already_active"),
        ("/v1/operations/op-x/retry", {"reason": "because"}, 404, "unknown_operation"),
    ]
    for path, body, code, error in cases:
        status, got = await cluster.call("engine-azure", "POST", path, OPERATOR, body)
        assert (status, got["error"]) == (code, error), (path, got)
    status, got = await cluster.call("engine-azure", "POST", "/v1/services/shop/pause", OPERATOR, raw=b"{not json")
    assert (status, got["error"]) == (400, "bad_json")
    status, got = await cluster.call("engine-azure", "POST", "/v1/services/shop/pause", OPERATOR,
                                     raw=b'{"reason": "' + b"x" * 100_000 + b'"}')
    assert status == 413


async def test_pause_holds_and_resume_acts(cluster: Cluster) -> None:
    """Paused, a dead primary is observed but never acted on (PAUSED: sentences); resumed, it fails over."""
    status, _ = await cluster.call("engine-azure", "POST", "/v1/services/shop/pause", OPERATOR,
                                   {"reason": "maintenance"})
    assert status == 200
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    s = await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["decision"]["message"].startswith(
        "PAUSED: failover shop gcp -> azure"), what="paused decision")
    assert s["services"]["shop"]["active"] == "gcp"
    await asyncio.sleep(0.5)
    assert await cluster.operations("engine-azure") == []
    status, _ = await cluster.call("engine-azure", "POST", "/v1/services/shop/resume", OPERATOR, {"reason": "done"})
    assert status == 200
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", what="failover")
    _, events = await cluster.call("engine-azure", "GET", "/v1/events?kind=operator", VIEWER)
    assert [e["message"] for e in reversed(events["events"])] == [
        "alice paused shop: maintenance", "alice resumed shop: done"]
    assert all(e["actor"] == "alice" for e in events["events"])


async def test_manual_failover_dry_run_refusal_force_and_audit(cluster: Cluster) -> None:
    """Dry run changes nothing; an unhealthy target is refused with reasons; force goes through, audited."""
    status, plan = await cluster.call("engine-azure", "POST", "/v1/services/shop/failover", OPERATOR,
                                      {"reason": "planned test", "dry_run": True})
    # gcp is healthy: a failover away from it must fence it first (or be a switchover, or forced)
    assert status == 200 and plan["would"] == "refuse"
    assert plan["reasons"][0].startswith("active_not_healthy: gcp is healthy: a planned move is a switchover")
    status, plan = await cluster.call("engine-azure", "POST", "/v1/services/shop/failover", OPERATOR,
                                      {"reason": "planned test", "dry_run": True, "fence_first": True})
    assert status == 200 and plan["would"] == "start" and plan["target"] == "azure"
    assert plan["plan"] == ["precheck", "fence", "promote", "shift_dns", "verify_dns", "consistency",
                            "reconcile", "report"]
    assert {g["gate"] for g in plan["gates"]} >= {"target_healthy", "quorum", "paused"}
    assert await cluster.operations("engine-azure") == [] and cluster.dns_site() == "gcp"

    await cluster.cut("engine-azure", "azure", "reset")
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["sites"]["azure"]["health"] == "down")
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/failover", OPERATOR,
                                      {"reason": "planned test"})
    assert status == 409 and body["error"] == "refused"
    assert body["reasons"][0].startswith("target_healthy: azure is down")
    assert cluster.dns_site() == "gcp"

    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/failover", OPERATOR,
                                      {"reason": "azure probe path is broken, site is fine", "force": True})
    assert status == 202, body
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", what="forced move")
    op = (await cluster.operations("engine-azure"))[0]
    assert (op["trigger"], op["actor"], op["state"]) == ("manual", "alice", "done")
    assert op["evidence"]["force"] is True
    _, events = await cluster.call("engine-azure", "GET", "/v1/events?kind=operator", VIEWER)
    audit = events["events"][0]
    assert audit["actor"] == "alice" and audit["data"]["force"] is True
    assert "forced past: target_healthy: azure is down" in audit["message"]


async def test_halted_runbook_retry_and_abort(cluster: Cluster) -> None:
    """A runbook halted by a DNS outage is retried once DNS is back; another halted one is aborted."""
    await cluster.cut("engine-azure", "dns", "refuse")
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/failover", OPERATOR,
                                      {"reason": "drill", "fence_first": True})
    assert status == 202
    op_id = body["operation"]
    await cluster.wait_for("engine-azure", lambda s: (s["services"]["shop"]["operation"] or {}).get("state")
                           == "halted", timeout=30, what="halted")
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/failover", OPERATOR,
                                      {"reason": "again"})
    assert (status, body["error"]) == (409, "operation_in_progress")
    await cluster.cut("engine-azure", "dns", "pass")
    status, _ = await cluster.call("engine-azure", "POST", f"/v1/operations/{op_id}/retry", OPERATOR,
                                   {"reason": "dns is back"})
    assert status == 202
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", what="retried")
    _, op = await cluster.call("engine-azure", "GET", f"/v1/operations/{op_id}", VIEWER)
    assert op["state"] == "done" and op["steps"]["precheck"]["attempts"] >= 4

    await cluster.cut("engine-azure", "dns", "refuse")
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/failover", OPERATOR,
                                      {"reason": "failback attempt", "target": "gcp", "force": True})
    assert status == 202, body
    second = body["operation"]
    await cluster.wait_for("engine-azure", lambda s: (s["services"]["shop"]["operation"] or {}).get("state")
                           == "halted", timeout=30, what="halted again")
    status, body = await cluster.call("engine-azure", "POST", f"/v1/operations/{second}/abort", OPERATOR,
                                      {"reason": "not tonight"})
    assert (status, body["state"]) == (200, "aborted")
    s = await cluster.status_as("engine-azure", VIEWER)
    assert s["services"]["shop"]["operation"] is None and s["services"]["shop"]["active"] == "azure"


async def test_failback_is_manual_and_checked(cluster: Cluster) -> None:
    """After a failover nothing moves back by itself; failback waits for a healthy home, then runs its runbook."""
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", what="failover")
    await cluster.heal()
    s = await cluster.wait_for("engine-azure", lambda s: up(s, "gcp"), what="home back up")
    assert s["services"]["shop"]["active"] == "azure"  # never automatic
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/failback", OPERATOR,
                                      {"reason": "home is back", "dry_run": True})
    assert status == 200 and body["target"] == "gcp"
    await asyncio.sleep(1.2)  # failback_healthy_for is 1s in the cluster config
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/failback", OPERATOR,
                                      {"reason": "home is back"})
    assert status == 202, body
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "gcp", what="failback")
    ops = await cluster.operations("engine-azure")
    assert ops[0]["kind"] == "failback" and ops[0]["state"] == "done" and ops[0]["epoch_to"] == 3
    assert cluster.dns_site() == "gcp"
    status, body = await cluster.call("engine-azure", "POST", "/v1/services/shop/failback", OPERATOR,
                                      {"reason": "again"})
    assert (status, body["error"]) == (409, "already_home")


async def test_status_page_asks_a_browser_for_the_token(cluster: Cluster) -> None:
    """With tokens on, / answers 401 with a Basic challenge, and serves the page to the token as password."""
    import base64

    import aiohttp

    url = cluster.voters["engine-azure"].url + "/"
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        basic = base64.b64encode(f"me:{VIEWER}".encode()).decode()
        async with s.get(url, headers={"Authorization": f"Basic {basic}"}) as r:
            assert r.status == 200 and "engine-azure" in await r.text()
        wrong = base64.b64encode(b"me:nope").decode()
        async with s.get(url, headers={"Authorization": f"Basic {wrong}"}) as r:
            assert r.status == 401

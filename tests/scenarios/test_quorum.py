"""Two engines and a witness as real processes, real BIND, faults from proxies: deciding together.

Timings: probes every 300 ms (timeout 200 ms), 3 failures to go down, verdicts every 200 ms.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster

pytestmark = pytest.mark.slow


def active(service_status: dict) -> str:  # type: ignore[type-arg]
    return str(service_status["services"]["shop"]["active"])


def site_health(status: dict, site: str) -> str:  # type: ignore[type-arg]
    return str(status["services"]["shop"]["sites"][site]["health"])


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await Cluster(tmp_path).start()
    try:
        await c.wait_sites_up()
        yield c
    finally:
        await c.stop()


async def all_done(c: Cluster, vid: str = "engine-azure") -> list[dict]:  # type: ignore[type-arg]
    ops = await c.operations(vid)
    return [o for o in ops if o["state"] == "done"]


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
async def test_primary_dies_fails_over_once(cluster: Cluster, mode: str) -> None:
    """The gcp site stops answering (RST or black hole): azure's engine moves DNS once, verified."""
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", mode)
    status = await cluster.wait_for("engine-azure", lambda s: active(s) == "azure", what="failover to azure")
    assert status["services"]["shop"]["epoch"] == 2
    assert cluster.dns_site() == "azure"
    assert "epoch=2 site=azure" in cluster.dns_epoch()
    done = await all_done(cluster)
    assert len(done) == 1
    op = done[0]
    assert op["steps"]["shift_dns"]["data"]["changed"] is True
    assert op["steps"]["verify_dns"]["state"] == "done"
    assert re.match(r"failover shop gcp -> azure: [23] of 3 voters see gcp down \(need 2\), [23] see azure up; "
                    r"this instance acts$", op["evidence"]["decision"])
    metrics = await cluster.get("engine-azure", "/metrics")
    assert 'failover_engine_runbook_step_duration_seconds_count{kind="failover",result="done",service="shop",' \
           'step="shift_dns"} 1.0' in metrics
    assert 'failover_engine_failovers_total{kind="failover",result="done",service="shop",trigger="auto"} 1.0' in metrics
    assert 'failover_engine_runbook_halted{service="shop"} 0.0' in metrics
    # the others learn the new epoch from the verdicts and never act themselves
    for vid in ("engine-gcp", "witness"):
        await cluster.wait_for(vid, lambda s: active(s) == "azure", what="adopted epoch")
        assert await cluster.operations(vid) == []


async def test_flapping_primary_does_not_move(cluster: Cluster) -> None:
    """Failures that never reach three in a row (two bad, one good, repeated) move nothing."""
    for _ in range(6):
        for vid in cluster.voters:
            await cluster.cut(vid, "gcp", "reset")
        await asyncio.sleep(0.45)  # about one or two probes fail
        await cluster.heal()
        await asyncio.sleep(0.35)
    await asyncio.sleep(1.0)
    for vid in cluster.voters:
        assert active(await cluster.status(vid)) == "gcp"
        assert await cluster.operations(vid) == []
    assert cluster.dns_site() == "gcp"


async def test_link_between_engines_cut_changes_nothing(cluster: Cluster) -> None:
    """The engines cannot reach each other but the witness sees both: nobody acts."""
    await cluster.cut("engine-gcp", "engine-azure")
    await cluster.cut("engine-azure", "engine-gcp")
    await asyncio.sleep(3.0)
    for vid in cluster.voters:
        status = await cluster.status(vid)
        assert active(status) == "gcp"
        assert status["services"]["shop"]["decision"]["verdict"] == "hold"
    assert cluster.dns_site() == "gcp"


async def test_isolated_primary_cloud_fails_over_without_it(cluster: Cluster) -> None:
    """gcp's site and engine are cut off: azure's engine and the witness fail over; the isolated engine holds."""
    await cluster.isolate("gcp")
    await cluster.wait_for("engine-azure", lambda s: active(s) == "azure", what="failover")
    assert cluster.dns_site() == "azure"
    status = await cluster.status("engine-gcp")
    decision = status["services"]["shop"]["decision"]
    assert active(status) == "gcp"  # it cannot learn the new epoch while cut off
    assert decision["verdict"] in ("hold", "page")
    assert await cluster.operations("engine-gcp") == []
    await cluster.heal()
    await cluster.wait_for("engine-gcp", lambda s: active(s) == "azure", what="engine-gcp adopts epoch 2")


async def test_executor_paused_past_its_turn_does_not_act_on_stale_state(tmp_path: Path) -> None:
    """azure's engine is frozen (SIGSTOP); gcp's engine acts as the fallback; on waking azure's stands down.

    On waking it may still hold verdicts from just before the move (fresh by every measure), so it may
    start a runbook: the epoch written beside the records, with the winner's operation id, makes it
    stand down without changing anything.
    """
    c = await Cluster(tmp_path).start()
    try:
        await c.wait_sites_up()
        c.signal("engine-azure", signal.SIGSTOP)
        for vid in c.voters:
            await c.cut(vid, "gcp", "reset")
        await c.wait_for("engine-gcp", lambda s: active(s) == "azure", what="fallback executor acts")
        assert len(await all_done(c, "engine-gcp")) == 1
        c.signal("engine-azure", signal.SIGCONT)
        await c.wait_for("engine-azure", lambda s: active(s) == "azure", what="woken engine adopts the epoch")
        await asyncio.sleep(1.0)
        woken = await c.operations("engine-azure")
        assert all(o["state"] == "stood_down" for o in woken)
        assert all(not o["steps"].get("shift_dns", {}).get("data", {}).get("changed") for o in woken)
        winner = (await all_done(c, "engine-gcp"))[0]
        assert c.dns_epoch() == f'"epoch=2 site=azure op={winner["id"]}"'
        await c.wait_for("engine-azure", lambda s: s["services"]["shop"]["decision"]["verdict"] == "hold")
    finally:
        await c.stop()


async def test_both_engines_racing_change_dns_once(tmp_path: Path) -> None:
    """Both engines believe they are the executor (a bad config): exactly one DNS change, the other stands down."""
    c = await Cluster(tmp_path, executors={"engine-gcp": ["engine-gcp", "engine-azure"],
                                          "engine-azure": ["engine-azure", "engine-gcp"]}).start()
    try:
        await c.wait_sites_up()
        for vid in c.voters:
            await c.cut(vid, "gcp", "reset")
        for vid in ("engine-gcp", "engine-azure"):
            await c.wait_for(vid, lambda s: active(s) == "azure" and s["services"]["shop"]["operation"] is None,
                             what="settled on azure")
        ops = await c.operations("engine-gcp") + await c.operations("engine-azure")
        changed = [o for o in ops if o["steps"].get("shift_dns", {}).get("data", {}).get("changed")]
        assert len(changed) == 1
        assert all(o["state"] in ("done", "stood_down") for o in ops)
        assert "epoch=2 site=azure" in c.dns_epoch()
    finally:
        await c.stop()


async def test_kill_9_after_the_dns_write_resumes_without_a_second_change(cluster: Cluster) -> None:
    """The executor dies after shifting DNS, while verifying; restarted, it verifies and finishes, no second write."""
    cluster.verify_relays["engine-azure"].dropping = True  # verification cannot finish...
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    deadline = asyncio.get_running_loop().time() + 15
    while cluster.dns_site() != "azure":  # ...but the shift goes through
        assert asyncio.get_running_loop().time() < deadline, "no DNS change"
        await asyncio.sleep(0.01)
    await cluster.kill("engine-azure")  # kill -9 between the write and the end of verification
    epoch_text = cluster.dns_epoch()
    cluster.verify_relays["engine-azure"].dropping = False
    cluster.launch("engine-azure")
    await cluster.wait_api("engine-azure")
    status = await cluster.wait_for("engine-azure", lambda s: active(s) == "azure", what="resumed to done")
    assert status["services"]["shop"]["epoch"] == 2
    ops = await cluster.operations("engine-azure")
    assert len(ops) == 1 and ops[0]["state"] == "done"
    steps = ops[0]["steps"]
    assert steps["precheck"]["attempts"] == 2  # the resumed run re-read DNS first (and found its own write)
    assert steps["verify_dns"]["state"] == "done"
    if steps["shift_dns"]["attempts"] == 1:  # killed after the shift was journaled: it is not repeated
        assert steps["shift_dns"]["data"]["changed"] is True
    else:  # killed after the server applied the update but before the step was journaled as done
        assert steps["shift_dns"]["attempts"] == 2
        assert steps["shift_dns"]["data"]["changed"] is False
        assert steps["shift_dns"]["summary"].startswith("already shifted by this operation")
    assert cluster.dns_epoch() == epoch_text  # the same write: no second change
    events = await cluster.get("engine-azure", "/v1/events?kind=runbook&limit=100")
    assert any(e["message"].startswith("resuming failover of shop") for e in events["events"])


async def test_dns_provider_briefly_down_is_retried_and_the_runbook_goes_on(cluster: Cluster) -> None:
    """The DNS server refuses the executor for a moment: bounded retries carry the runbook through."""
    await cluster.cut("engine-azure", "dns", "refuse")
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    await cluster.wait_for("engine-azure", lambda s: (s["services"]["shop"]["operation"] or {}).get("state")
                           == "running", what="operation started")
    await asyncio.sleep(0.8)
    await cluster.cut("engine-azure", "dns", "pass")
    await cluster.wait_for("engine-azure", lambda s: active(s) == "azure", what="failover completed")
    op = (await all_done(cluster))[0]
    assert op["steps"]["precheck"]["attempts"] >= 2
    assert cluster.dns_site() == "azure"


async def test_dns_provider_down_halts_with_an_alert(cluster: Cluster) -> None:
    """DNS stays down: the runbook halts at a step with a sentence, alerts, and changes nothing."""
    await cluster.cut("engine-azure", "dns", "refuse")
    for vid in cluster.voters:
        await cluster.cut(vid, "gcp", "reset")
    status = await cluster.wait_for("engine-azure", lambda s: (s["services"]["shop"]["operation"] or {}).get("state")
                                    == "halted", timeout=30, what="halted")
    message = status["services"]["shop"]["operation"]["message"]
    assert message.startswith("failover of shop stuck at precheck: ")
    events = await cluster.get("engine-azure", "/v1/events?kind=alert")
    assert [e["message"] for e in events["events"]] == [message]
    assert cluster.dns_site() == "gcp"
    # one runbook per service: nothing new starts while this one is halted, not even after a restart
    await asyncio.sleep(1.0)
    assert len(await cluster.operations("engine-azure")) == 1
    await cluster.kill("engine-azure")
    cluster.launch("engine-azure")
    await cluster.wait_api("engine-azure")
    status = await cluster.wait_for("engine-azure", lambda s: (s["services"]["shop"]["operation"] or {}).get("state")
                                    == "halted", what="halted after restart")
    assert status["services"]["shop"]["operation"]["message"] == message
    await asyncio.sleep(1.0)
    assert len(await cluster.operations("engine-azure")) == 1


async def test_webhooks_tell_the_story(tmp_path: Path) -> None:
    """Generic JSON and Slack-style webhooks receive the decision, each runbook step, and survive a 500."""
    from aiohttp import web

    received: dict[str, list[dict]] = {"json": [], "slack": []}  # type: ignore[type-arg]
    failed_once = {"json": False}

    async def hook(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "json" and not failed_once["json"]:
            failed_once["json"] = True
            return web.Response(status=500)  # the first delivery fails: it must be retried
        received[kind].append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook/{kind}", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    from tests.support import free_port

    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    c = Cluster(tmp_path, webhooks=[(f"http://127.0.0.1:{port}/hook/json", "json"),
                                    (f"http://127.0.0.1:{port}/hook/slack", "slack")])
    await c.start()
    try:
        await c.wait_sites_up()
        for vid in c.voters:
            await c.cut(vid, "gcp", "reset")
        await c.wait_for("engine-azure", lambda s: active(s) == "azure", what="failover")
        await asyncio.sleep(1.0)
        notes = [n for n in received["json"] if n["instance"] == "engine-azure"]
        kinds = [n["kind"] for n in notes]
        assert "decision" in kinds and kinds.count("runbook") >= 8
        started = next(n for n in notes if n["kind"] == "decision")
        assert started["service"] == "shop" and started["message"].startswith("failover of shop gcp -> azure started")
        assert started["data"]["evidence"]["majority"] == 2
        assert any(n["message"] == "failover of shop to azure done" for n in notes)
        slack = [n["text"] for n in received["slack"]]
        assert any(t.startswith(":gear: failover-engine engine-azure: [shop] failover of shop gcp -> azure started")
                   for t in slack)
        assert failed_once["json"]
    finally:
        await c.stop()
        await runner.cleanup()

"""Drills end to end: two engines and a witness, the PostgreSQL pair, BIND and the sample sites.

A shadow drill checks everything and changes nothing (DNS epoch, subscription, writes); a full
drill moves the service to azure, holds it there while validating, fails back and re-protects,
with every phase timed against its SLO; refusals come with machine-readable reasons; the HTML
report opens in headless Chromium.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios.test_database_failover import OPERATOR, VIEWER, database_yaml, post
from tests.support.chromium import dom_text, dump_dom
from tests.support.cluster import Cluster
from tests.support.postgres import PgPair, ReplicatedDb

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def replicated(pg_pair: PgPair) -> Iterator[ReplicatedDb]:
    db = pg_pair.replicate()
    db.on_primary("INSERT INTO accounts(owner, balance) SELECT 'o' || g, g FROM generate_series(1, 100) g")
    db.on_primary("INSERT INTO orders(account, amount) SELECT g % 100 + 1, g FROM generate_series(1, 300) g")
    db.wait_synced()
    db.wait_caught_up()
    yield db
    db.drop()


def drills_yaml(cluster: Cluster) -> str:
    sites = {site: f"http://127.0.0.1:{sample.port}" for site, sample in cluster.sites.items()}
    drills = {"full": {"hold": "2s", "validate_every": "500ms", "window": "1h", "catch_up": "30s"},
              "slo": {"decision": "5s", "dns_shift": "10s", "dns_verified": "10s", "consistency": "20s",
                      "rto": "60s", "failback": "120s"},
              "synthetic": {"sites": sites, "requests": [{"path": "/health"}], "repeat": 10, "timeout": "2s"}}
    return "    drills: " + json.dumps(drills)


@pytest.fixture
async def cluster(tmp_path: Path, replicated: ReplicatedDb) -> AsyncIterator[Cluster]:
    holder: dict[str, Cluster] = {}
    c = Cluster(tmp_path, extra_service=lambda _vid: database_yaml(replicated) + "\n" + drills_yaml(holder["c"]),
                api_tokens=[("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)])
    holder["c"] = c
    await c.start()
    try:
        await c.wait_sites_up()
        await c.wait_for("engine-gcp", lambda s: s["services"]["shop"]["lag_s"] is not None
                         and (s["services"]["shop"]["replication"] or {}).get("state") == "up", what="replication up")
        await c.wait_for("engine-gcp", lambda s: s["quorum"] is True, what="quorum")
        yield c
    finally:
        await c.stop()


async def wait_drill(cluster: Cluster, vid: str, drill_id: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, drill = await cluster.call(vid, "GET", f"/v1/drills/{drill_id}", VIEWER)
        assert status == 200, drill
        if drill["state"] != "running":
            return drill  # type: ignore[no-any-return]
        assert asyncio.get_running_loop().time() < deadline, json.dumps(drill, indent=1)[:3000]
        await asyncio.sleep(0.2)


async def cli(cluster: Cluster, vid: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: the sites, proxies and BIND relays of the cluster live on this test's loop."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAILOVER_ENGINE_TOKEN": OPERATOR,
           "FAILOVER_ENGINE_URL": cluster.voters[vid].url}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "engine", *args], capture_output=True,
                                   text=True, env=env, cwd=ROOT, timeout=180)


async def test_shadow_drill_checks_everything_and_changes_nothing(cluster: Cluster,
                                                                  replicated: ReplicatedDb) -> None:
    epoch_before = cluster.dns_epoch()
    done = await cli(cluster, "engine-gcp", "drill", "run", "--kind", "shadow", "shop", "--reason", "monthly check",
               "--wait", "--poll", "0.2")
    assert done.returncode == 0, done.stdout + done.stderr
    drills = (await cluster.get("engine-gcp", "/v1/drills?service=shop&kind=shadow"))["drills"]
    drill = await wait_drill(cluster, "engine-gcp", drills[0]["id"])
    checks = {c["check"]: c for c in drill["checks"]}
    assert drill["state"] == "passed", json.dumps(checks, indent=1)
    assert set(checks) == {"standby_probes", "standby_healthy", "lag_within_rpo", "reconciliation",
                           "promotion_ready", "dns_change_valid", "synthetic"}
    assert "accepted TSIG key" in checks["dns_change_valid"]["detail"]
    assert "apply worker running" in checks["promotion_ready"]["detail"]
    assert checks["synthetic"]["data"]["standby"]["requests"] == 10
    # nothing changed: same epoch, gcp still primary and writable, azure still subscribed
    assert cluster.dns_epoch() == epoch_before and cluster.dns_site() == "gcp"
    replicated.on_primary("INSERT INTO orders(account, amount) VALUES (1, 1)")
    assert replicated.on_standby(f"SELECT subenabled FROM pg_subscription WHERE subname = "
                                 f"'{replicated.subscription}'") == [(True,)]
    assert await cluster.operations("engine-gcp") == []
    metrics = (await cluster.call("engine-gcp", "GET", "/metrics", VIEWER))[1]
    assert 'failover_engine_drill_last_result{kind="shadow",service="shop"} 1.0' in metrics


async def test_refusals_carry_reasons(cluster: Cluster) -> None:
    status, body = await cluster.call("engine-gcp", "POST", "/v1/drills", VIEWER,
                                      {"service": "shop", "kind": "shadow", "reason": "viewer tries"})
    assert status == 403, body
    status, body = await cluster.call("engine-gcp", "POST", "/v1/drills", OPERATOR,
                                      {"service": "nope", "kind": "shadow", "reason": "typo"})
    assert status == 404 and body["error"] == "unknown_service", body
    status, body = await cluster.call("engine-gcp", "POST", "/v1/drills", OPERATOR,
                                      {"service": "shop", "kind": "chaos", "reason": "bad kind"})
    assert status == 422, body
    await cluster.call("engine-gcp", "POST", "/v1/services/shop/pause", OPERATOR, {"reason": "maintenance"})
    status, body = await cluster.call("engine-gcp", "POST", "/v1/drills", OPERATOR,
                                      {"service": "shop", "kind": "full", "reason": "while paused"})
    assert status == 409 and [r["code"] for r in body["reasons"]] == ["paused"], body
    await cluster.call("engine-gcp", "POST", "/v1/services/shop/resume", OPERATOR, {"reason": "done"})
    status, first = await cluster.call("engine-gcp", "POST", "/v1/drills", OPERATOR,
                                       {"service": "shop", "kind": "shadow", "reason": "first"})
    assert status == 202, first
    status, body = await cluster.call("engine-gcp", "POST", "/v1/drills", OPERATOR,
                                      {"service": "shop", "kind": "shadow", "reason": "second"})
    assert status == 409 and "drill_in_progress" in [r["code"] for r in body["reasons"]], body
    await wait_drill(cluster, "engine-gcp", first["drill"])
    refused = await cli(cluster, "engine-gcp", "drill", "run", "--kind", "full", "shop", "--reason", "can it run",
                        "--dry-run")
    assert refused.returncode == 0 and "would start" in refused.stdout, refused.stdout + refused.stderr


async def test_full_drill_moves_holds_fails_back_and_reports(cluster: Cluster, replicated: ReplicatedDb,
                                                             tmp_path: Path) -> None:
    epoch_before = int(cluster.dns_epoch().split()[0].split("=")[1])
    status, body = await post(cluster, "engine-gcp", "/v1/drills",
                              {"service": "shop", "kind": "full", "reason": "quarterly test"})
    assert status == 202, body
    drill = await wait_drill(cluster, "engine-gcp", body["drill"], timeout=150)
    assert drill["state"] == "passed", drill["sentence"] + "\n" + json.dumps(drill, indent=1)[:4000]
    assert [p["phase"] for p in drill["phases"]] == ["decision", "dns_shift", "dns_verified", "consistency", "rto",
                                                     "failback"]
    assert all(p["met"] for p in drill["phases"]), drill["phases"]
    assert len(drill["operations"]) == 2
    ops = {o["id"]: o for o in await cluster.operations("engine-gcp")}
    assert [(ops[i]["kind"], ops[i]["target"]) for i in drill["operations"]] == [("switchover", "azure"),
                                                                              ("failback", "gcp")]
    assert any(c["check"].startswith("hold:") and c["check"].endswith(":synthetic") for c in drill["checks"])
    assert drill["rto_estimate"]["total_s"] > 0
    # home again at epoch + 2, writable; azure a subscriber again (re-protected)
    assert cluster.dns_site() == "gcp"
    assert cluster.dns_epoch().strip('"').startswith(f"epoch={epoch_before + 2} ")
    for vid in ("engine-gcp", "engine-azure"):
        await cluster.wait_for(vid, lambda s: s["services"]["shop"]["active"] == "gcp", what="home")
    replicated.on_primary("INSERT INTO orders(account, amount) VALUES (3, 3333)")
    deadline = asyncio.get_running_loop().time() + 15
    while replicated.on_standby("SELECT count(*) FROM orders WHERE amount = 3333")[0][0] != 1:
        assert asyncio.get_running_loop().time() < deadline, "gcp's write did not reach azure after the drill"
        await asyncio.sleep(0.1)
    # the report, through the CLI, in a real browser
    html = tmp_path / "report.html"
    done = await cli(cluster, "engine-gcp", "drill", "report", drill["id"], "--html", str(html))
    assert done.returncode == 0, done.stderr
    text = dom_text(await dump_dom(html.as_uri()))
    assert "full drill of shop: passed" in text and "failback" in text and "SLO" in text
    listing = await cli(cluster, "engine-gcp", "drill", "list")
    assert drill["id"] in listing.stdout and "passed" in listing.stdout

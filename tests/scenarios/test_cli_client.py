"""The CLI client against real engine processes: status and events tables, dry run with gates, a refused
failover with its reasons, a real failover followed step by step, pause/resume, a viewer refused, an
unreachable engine; exit codes 0/1/2/3 and the token never printed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, running

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
OPERATOR, VIEWER = "op-secret-token-0123456789", "viewer-secret-token-0123456789"
SECRETS = (OPERATOR, VIEWER)


def _cli(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_ENGINE_")}
    result = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                            check=False, env={**clean, "PYTHONPATH": str(ROOT), **env}, timeout=60)
    for secret in SECRETS:  # whatever happened, the token is never printed
        assert secret not in result.stdout and secret not in result.stderr, args
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, args, env)


def up(s: dict[str, Any], site: str) -> bool:
    return bool(s["services"]["shop"]["sites"][site]["health"] == "up")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    tokens = [("alice", "operator", OPERATOR), ("victor", "viewer", VIEWER)]
    async with running(Cluster(tmp_path, api_tokens=tokens)) as c:
        yield c


async def test_cli_client_against_a_cluster(cluster: Cluster, tmp_path: Path) -> None:
    url = cluster.voters["engine-azure"].url
    token_file = tmp_path / "operator.token"
    token_file.write_text(OPERATOR + "\n")
    viewer = {"FAILOVER_ENGINE_URL": url, "FAILOVER_ENGINE_TOKEN": VIEWER}
    op = ("--url", url, "--token-file", str(token_file))

    # status: the service, both sites with their signals, the peers
    r = await cli("status", **viewer)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("engine-azure (engine in azure") and "quorum yes" in lines[0]
    assert any(line.split()[:4] == ["shop", "gcp", "1", "no"] for line in lines), r.stdout
    assert any(line.split()[:4] == ["gcp", "active", "up", "health"] for line in lines), r.stdout
    assert any(line.split()[:4] == ["azure", "standby", "up", "health"] for line in lines), r.stdout
    assert any(line.startswith("engine-gcp ") for line in lines) and any(line.startswith("witness ") for line in lines)
    r = await cli("status", "nope", **viewer)
    assert r.returncode == 2 and "no service named 'nope'" in r.stderr

    # a viewer may read but not act: exit 1 with the engine's reason
    r = await cli("pause", "shop", "--reason", "maintenance", **viewer)
    assert r.returncode == 1
    assert "forbidden (403)" in r.stderr and "viewer" in r.stderr and "operator" in r.stderr
    r = await cli("status", "--url", url, "--token", "wrong-token")
    assert r.returncode == 1 and "unauthorized (401): unknown token" in r.stderr

    # pause and resume, recorded with who and why
    r = await cli("pause", "shop", "--reason", "maintenance window", *op)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("shop paused")
    r = await cli("status", "shop", **viewer)
    assert any(line.split()[:4] == ["shop", "gcp", "1", "yes"] for line in r.stdout.splitlines()), r.stdout
    r = await cli("resume", "shop", "--reason", "window over", *op)
    assert r.returncode == 0 and r.stdout.startswith("shop resumed"), r.stderr

    # events: a table, newest first, filtered by kind
    r = await cli("events", "--kind", "operator", **viewer)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "TIME", "(UTC)", "SERVICE", "KIND", "ACTOR", "MESSAGE"]
    assert "alice resumed shop: window over" in lines[1] and "alice paused shop: maintenance window" in lines[2]
    assert lines[1].split()[3:6] == ["shop", "operator", "alice"]
    r = await cli("events", "--since", "10m", "--limit", "1", **viewer)
    assert r.returncode == 0 and "older events: add --before-id" in r.stdout
    r = await cli("events", "--kind", "bogus", **viewer)
    assert r.returncode == 2 and "bogus" in r.stderr and "runbook" in r.stderr, r.stderr

    # a second pause replaces the first only with --replace; resume and arm with nothing to do say so
    r = await cli("pause", "shop", "--reason", "first window", "--ttl", "10m", *op)
    assert r.returncode == 0 and "until" in r.stdout, r.stderr
    r = await cli("pause", "shop", "--reason", "second window", *op)
    assert r.returncode == 1 and "already paused until" in r.stderr and "--replace" in r.stderr, r.stderr
    r = await cli("pause", "shop", "--reason", "second window", "--ttl", "1h", "--replace", *op)
    assert r.returncode == 0, r.stderr
    r = await cli("resume", "shop", "--reason", "done", *op)
    assert r.returncode == 0, r.stderr
    r = await cli("resume", "shop", "--reason", "again", *op)
    assert r.returncode == 1 and "nothing to do: shop is not paused" in r.stderr, r.stderr
    r = await cli("arm", "shop", "--reason", "just in case", *op)
    assert r.returncode == 1 and "nothing to do: the circuit breaker of shop is closed" in r.stderr, r.stderr
    assert "POST" not in r.stderr

    # dry run: the gates table and the plan, nothing changed
    r = await cli("failover", "shop", "--reason", "planned drill", "--dry-run", "--fence-first", *op)
    assert r.returncode == 0, r.stderr
    assert "would START (epoch 1 -> 2); nothing was changed" in r.stdout
    gates = {line.split()[0]: line.split()[1:3] for line in r.stdout.splitlines()
             if line.split() and line.split()[0] in ("target_healthy", "quorum", "paused")}
    assert gates == {"target_healthy": ["yes", "yes"], "quorum": ["yes", "no"], "paused": ["yes", "no"]}
    assert "plan: precheck -> fence -> promote -> shift_dns -> verify_dns" in r.stdout
    assert await cluster.operations("engine-azure") == [] and cluster.dns_site() == "gcp"

    # refused: azure is down as engine-azure sees it; exit 1 with the reason; dry run says so too
    await cluster.cut("engine-azure", "azure", "reset")
    await cluster.wait_for("engine-azure", lambda s: not up(s, "azure") and
                           s["services"]["shop"]["sites"]["azure"]["health"] == "down", what="azure down")
    r = await cli("failover", "shop", "--reason", "planned drill", *op)
    assert r.returncode == 1
    assert "refused (409)" in r.stderr and "target_healthy: azure is down" in r.stderr
    r = await cli("failover", "shop", "--reason", "planned drill", "--dry-run", *op)
    assert r.returncode == 1 and "would REFUSE" in r.stdout and "target_healthy: azure is down" in r.stdout
    assert cluster.dns_site() == "gcp"

    # a real failover, followed to the end
    await cluster.cut("engine-azure", "azure", "pass")
    await cluster.wait_for("engine-azure", lambda s: up(s, "azure"), what="azure back up")
    r = await cli("failover", "shop", "--reason", "planned drill", "--wait", "--fence-first", *op)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = r.stdout.splitlines()
    assert out[0].startswith("failover of shop gcp -> azure started: operation ")
    steps = [line.split()[0] for line in out[1:-1]]
    assert steps[:1] == ["precheck"] and "shift_dns" in steps and "verify_dns" in steps and steps[-1] == "report"
    assert all(line.split()[1] in ("done", "skipped") for line in out[1:-1]), out
    assert out[-1].startswith("operation ") and " done" in out[-1]
    assert cluster.dns_site() == "azure"
    op_id = out[0].rsplit(" ", 1)[1]

    # the operation: listed, and shown with its steps
    r = await cli("operation", **viewer)
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[:7] == [
        op_id, "shop", "failover", "gcp", "->", "azure", "done"], r.stdout
    r = await cli("operation", op_id, **viewer)
    assert r.returncode == 0 and f"operation {op_id}: failover of shop gcp -> azure" in r.stdout
    assert "trigger manual by alice: planned drill" in r.stdout
    assert any(line.split()[:3] == ["shift_dns", "done", "1"] for line in r.stdout.splitlines()), r.stdout
    r = await cli("operation", op_id, "--abort", "--reason", "too late", *op)
    assert r.returncode == 1 and "not halted" in r.stderr
    r = await cli("operation", "op-nope", **viewer)
    assert r.returncode == 2 and "no operation 'op-nope'" in r.stderr

    # failback (the harness asks gcp to be healthy for 1 s): dry run, then followed to the end
    r = await cli("failback", "shop", "--reason", "gcp is fine again", "--dry-run", *op)
    assert r.returncode == 0 and "failback of shop azure -> gcp would START" in r.stdout, (r.stdout, r.stderr)
    assert any(line.split()[:3] == ["home_healthy", "yes", "yes"] for line in r.stdout.splitlines()), r.stdout
    r = await cli("failback", "shop", "--reason", "gcp is fine again", "--wait", *op)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.startswith("failback of shop azure -> gcp started") and " done" in r.stdout.splitlines()[-1]
    assert cluster.dns_site() == "gcp"


async def test_cli_client_unreachable_and_bad_arguments(tmp_path: Path) -> None:
    """No engine: exit 3 with one line; bad arguments: exit 2 before anything is sent."""
    r = await cli("status", "--url", "http://127.0.0.1:9", "--token", OPERATOR, "--timeout", "2")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == ["failover-engine: cannot reach the engine at http://127.0.0.1:9: "
                                             "connection refused"]
    assert r.stdout == ""
    r = await cli("failover", "shop", "--reason", "drill", "--wait", FAILOVER_ENGINE_URL="http://127.0.0.1:9",
                  FAILOVER_ENGINE_TOKEN=OPERATOR)
    assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1
    r = await cli("failover", "shop", FAILOVER_ENGINE_TOKEN=OPERATOR)
    assert r.returncode == 2 and "--reason" in r.stderr
    r = await cli("pause", "shop", "--reason", "x", FAILOVER_ENGINE_TOKEN=OPERATOR)
    assert r.returncode == 2 and "3 to 500 characters" in r.stderr
    r = await cli("status", "--url", "ftp://example.test", FAILOVER_ENGINE_TOKEN=OPERATOR)
    assert r.returncode == 2 and "http://host:port" in r.stderr
    r = await cli("status", "--token-file", str(tmp_path / "missing"))
    assert r.returncode == 2 and "cannot read the token file" in r.stderr
    r = await cli("status", "--token", OPERATOR + " extra")
    assert r.returncode == 2 and "whitespace" in r.stderr
    r = await cli("operation", "op-1", "--retry", FAILOVER_ENGINE_TOKEN=OPERATOR)
    assert r.returncode == 2 and "--reason" in r.stderr


async def test_cli_client_over_https(tmp_path: Path) -> None:
    """HTTPS: verified with --ca-file, refused (exit 3, one line) without it, allowed with --insecure."""
    import shutil
    import ssl

    from aiohttp import web

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    seen: list[str | None] = []

    async def status(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"instance": {"id": "tls-engine", "site": "gcp", "role": "engine",
                                               "version": "x"}, "time": 0, "healthy": True, "quorum": None,
                                  "peers": [], "services": {}})

    app = web.Application()
    app.router.add_get("/v1/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        r = await cli("status", "--url", url, "--ca-file", str(cert), FAILOVER_ENGINE_TOKEN=VIEWER)
        assert r.returncode == 0 and r.stdout.startswith("tls-engine (engine in gcp"), r.stderr
        assert seen == [f"Bearer {VIEWER}"]
        r = await cli("status", "--json", "--url", url, "--ca-file", str(cert), FAILOVER_ENGINE_TOKEN=VIEWER)
        assert r.returncode == 0 and '"id": "tls-engine"' in r.stdout
        r = await cli("status", "--url", url, FAILOVER_ENGINE_TOKEN=VIEWER)
        assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1
        assert "certificate not trusted" in r.stderr and "--ca-file" in r.stderr
        r = await cli("status", "--url", url, "--insecure", FAILOVER_ENGINE_TOKEN=VIEWER)
        assert r.returncode == 0, r.stderr
    finally:
        await runner.cleanup()


async def test_cli_client_failback_and_halted_wait_against_a_fake_api() -> None:
    """Failback is sent like failover (dry run, refusal with reasons, acknowledge_reconciliation); --wait
    exits 1 when the runbook halts and says how to retry (the API here is a stand-in with the engine's shapes)."""
    from aiohttp import web

    bodies: list[dict[str, Any]] = []
    polls = {"n": 0}

    async def failback(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        if body.get("dry_run"):
            return web.json_response({"dry_run": True, "service": "shop", "source": "azure", "target": "gcp",
                                      "would": "start", "plan": ["precheck", "shift_dns"], "reasons": [],
                                      "gates": [{"gate": "home_healthy_for", "ok": True, "blocking": True,
                                                 "detail": "gcp up for 12m (needs 10m)"}]})
        if not body.get("acknowledge_reconciliation"):
            return web.json_response({"error": "refused", "detail": "failback of shop to gcp refused",
                                      "reasons": ["reconciliation: 3 rows differ (acknowledge them)"]}, status=409)
        return web.json_response({"operation": "op-7", "service": "shop", "source": "azure", "target": "gcp"},
                                 status=202)

    async def operation(request: web.Request) -> web.Response:
        polls["n"] += 1
        steps: dict[str, Any] = {"precheck": {"state": "done", "attempts": 1, "started_at": 1.0, "duration_s": 0.01,
                                              "summary": "DNS at epoch 2, azure"}}
        state = "running"
        if polls["n"] > 1:
            steps["shift_dns"] = {"state": "failed", "attempts": 3, "started_at": 2.0, "duration_s": 0.2,
                                  "error": "update refused"}
            state = "halted"
        return web.json_response({"id": "op-7", "service": "shop", "kind": "failback", "source": "azure",
                                  "target": "gcp", "state": state, "steps": steps,
                                  "message": "failback of shop stuck at shift_dns: update refused"
                                  if state == "halted" else ""})

    app = web.Application()
    app.router.add_post("/v1/services/{name}/failback", failback)
    app.router.add_get("/v1/operations/{id}", operation)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    env = {"FAILOVER_ENGINE_URL": f"http://127.0.0.1:{runner.addresses[0][1]}", "FAILOVER_ENGINE_TOKEN": OPERATOR}
    try:
        r = await cli("failback", "shop", "--reason", "gcp is back", "--dry-run", **env)
        assert r.returncode == 0 and "would START" in r.stdout and "home_healthy_for" in r.stdout, r.stderr
        r = await cli("failback", "shop", "--reason", "gcp is back", **env)
        assert r.returncode == 1 and "refused (409)" in r.stderr and "3 rows differ" in r.stderr
        r = await cli("failback", "shop", "--reason", "gcp is back", "--acknowledge-reconciliation", "--wait",
                      "--poll", "0.05", **env)
        assert r.returncode == 1, r.stderr
        assert [line.split()[:2] for line in r.stdout.splitlines()[1:3]] == [["precheck", "done"],
                                                                            ["shift_dns", "failed"]]
        assert "halted: failback of shop stuck at shift_dns" in r.stdout
        assert "operation op-7 --retry" in r.stderr
    finally:
        await runner.cleanup()
    assert bodies == [{"reason": "gcp is back", "dry_run": True}, {"reason": "gcp is back"},
                      {"reason": "gcp is back", "acknowledge_reconciliation": True}]

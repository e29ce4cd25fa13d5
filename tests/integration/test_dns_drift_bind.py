"""DNS drift against a real BIND, with `nsupdate` as the foreign client and an engine in this process.

A change someone else makes to the service's records shows, within a verification cycle, as a
``dns_drift`` event, an alert to the webhook, ``failover_engine_dns_drift{service} 1`` and a status
line; `dns show` exits 1 naming it; a manual failover is refused with ``dns_drift: ...`` until an
operator acknowledges exactly that drift, and even then the runbook never overwrites the foreign
records. A different drift blocks again; records put back clear it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.cli import main
from engine.config.loader import parse_config
from engine.http.auth import hash_token
from engine.runtime.daemon import Engine
from tests.support import free_port, require_binary
from tests.support.bind import BASELINE, NamedServer

pytestmark = pytest.mark.real
TOKEN = "operator-secret-token"
CHECK = 1.0  # seconds: dns.check_interval of the engine under test (the smallest allowed)


def config_text(server: NamedServer, tmp_path: Path, *, listen: int, site_port: int, hook: str) -> str:
    return f"""
instance: {{id: e1, site: azure, listen: "127.0.0.1:{listen}", tick: 200ms}}
journal: {{path: "{tmp_path / 'journal.db'}"}}
api: {{tokens: [{{name: alice, role: operator, sha256: {hash_token(TOKEN)}}}]}}
notifications: {{webhooks: [{{url: "{hook}", attempts: 1, timeout: 1s}}]}}
services:
  app:
    active: gcp
    policy: {{auto_failover: false}}
    sites:
      gcp: {{probes: [{{type: tcp, name: port, host: 127.0.0.1, port: {site_port}, interval: 200ms, timeout: 100ms}}]}}
      azure: {{probes: [{{type: tcp, name: port, host: 127.0.0.1, port: {site_port}, interval: 200ms,
                         timeout: 100ms}}]}}
    dns:
      provider: {{type: rfc2136, servers: ["{server.address}"], zone: {server.zone}, timeout: 1s, attempts: 2,
                  backoff: 10ms, tsig: {{name: {server.key_name}, algorithm: {server.algorithm},
                  secret: "{server.secret}"}}}}
      records: [{{name: app, type: A, ttl: 60s, targets: {{gcp: ["192.0.2.10"], azure: ["198.51.100.10"]}}}}]
      epoch_record: _failover-epoch.app
      verify: {{nameservers: ["{server.address}"], deadline: 1s, interval: 20ms, query_timeout: 300ms}}
      check_interval: {CHECK}s
"""


def nsupdate(server: NamedServer, *lines: str) -> None:
    """A foreign client changes the zone with BIND's own `nsupdate` (signed with the zone's key)."""
    binary = require_binary("nsupdate", hint="apt-get install -y bind9-dnsutils")
    script = "\n".join([f"server {server.host} {server.port}", f"zone {server.zone}", *lines, "send", ""])
    subprocess.run([binary, "-y", f"{server.algorithm}:{server.key_name}:{server.secret}"], input=script.encode(),
                   check=True, timeout=10)


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 10 * CHECK + 5) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"not seen within {timeout:g}s: {what}")


@pytest.fixture
async def running(bind_zone: NamedServer, tmp_path: Path) -> AsyncIterator[tuple[Engine, list[dict[str, Any]], str]]:
    notes: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        notes.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    site = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    site_port = site.sockets[0].getsockname()[1]
    text = config_text(bind_zone, tmp_path, listen=free_port(), site_port=site_port,
                       hook=f"http://127.0.0.1:{hook_port}/hook")
    path = tmp_path / "engine.yaml"
    path.write_text(text)
    engine = Engine(parse_config(text, env={}))
    await engine.start()
    try:
        yield engine, notes, str(path)
    finally:
        await engine.stop()
        site.close()
        await site.wait_closed()
        await runner.cleanup()


async def call(engine: Engine, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(
            method, f"{engine.api_url}{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, json.loads(await r.text())


def drift_gauge(engine: Engine) -> str:
    return next((line for line in engine.view.metrics_text().decode().splitlines()
                 if line.startswith('failover_engine_dns_drift{service="app"}')), "")


async def test_a_foreign_change_is_seen_blocks_moves_until_acknowledged_and_is_never_overwritten(
        running: tuple[Engine, list[dict[str, Any]], str], bind_zone: NamedServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """nsupdate points app elsewhere: event, alert, metric, status and `dns show` 1; failover refused until
    acknowledged; a different drift refuses again; the runbook halts rather than overwrite; restoring clears."""
    engine, notes, config_path = running
    await until(lambda: call_ok(engine), "both sites up")
    assert engine.status()["services"]["app"]["dns_drift"] is None
    assert drift_gauge(engine).endswith(" 0.0")

    nsupdate(bind_zone, "update delete app.example.test A", "update add app.example.test 60 A 203.0.113.99")
    line = await until(lambda: status_drift(engine), "the dns_drift status line")
    assert line["summary"] == "app.example.test A answers 203.0.113.99: matches no site"
    assert line["acknowledged"] is False
    assert drift_gauge(engine).endswith(" 1.0")
    _, events = await call(engine, "GET", "/v1/events?kind=dns_drift")
    assert [e["message"] for e in events["events"]] == [
        "dns_drift: the records of app differ from epoch 1 in gcp: " + line["summary"]
        + "; moves are refused until an operator acknowledges it"]
    await until(lambda: as_true(any(n["kind"] == "alert" and n["message"].startswith("dns_drift:") for n in notes)),
                "the alert notification")

    status, refused = await call(engine, "POST", "/v1/services/app/failover", {"reason": "test move"})
    assert status == 409 and refused["error"] == "dns_drift"
    assert refused["detail"].startswith("dns_drift: " + line["summary"])
    assert await asyncio.to_thread(main, ["dns", "show", "--config", config_path, "app"]) == 1
    shown = capsys.readouterr().out
    assert "DRIFT against the engine's journal (active gcp, epoch 1):\n" \
           "  - app.example.test A answers 203.0.113.99: matches no site" in shown

    status, acked = await call(engine, "POST", "/v1/services/app/acknowledge-drift", {"reason": "ours, checked"})
    assert status == 200 and acked["acknowledged"]["key"] == line["key"]
    status, plan = await call(engine, "POST", "/v1/services/app/failover",
                              {"reason": "test move", "dry_run": True, "fence_first": True})
    assert status == 200 and plan["would"] == "start", plan

    nsupdate(bind_zone, "update delete app.example.test A", "update add app.example.test 60 A 203.0.113.98")
    await until(lambda: as_true((d := engine.status()["services"]["app"]["dns_drift"]) is not None
                                and "203.0.113.98" in d["summary"]), "the new drift")
    status, refused = await call(engine, "POST", "/v1/services/app/failover", {"reason": "test move"})
    assert status == 409 and refused["error"] == "dns_drift" and "203.0.113.98" in refused["detail"]

    token_file = Path(config_path).with_name("token")
    token_file.write_text(TOKEN)
    cli = ["--url", str(engine.api_url), "--token-file", str(token_file)]
    assert await asyncio.to_thread(main, ["status", "app", *cli]) == 0
    assert "DNS DRIFT since" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["acknowledge-drift", "app", "--reason", "checked again", *cli]) == 0
    assert capsys.readouterr().out.startswith("app: DNS drift acknowledged (app.example.test A answers 203.0.113.98")
    status, started = await call(engine, "POST", "/v1/services/app/failover",
                                 {"reason": "test move", "fence_first": True})
    assert status == 202, started
    op = await until(lambda: halted(engine, started["operation"]), "the runbook halting at precheck")
    assert op["state"] == "halted"
    assert op["steps"]["precheck"]["error"] == ("DNS points to unknown, not gcp: epoch 1, unknown "
                                                "(app.example.test A 203.0.113.98)")
    assert bind_zone.query("app", "A") == ["203.0.113.98"]  # never overwritten

    bind_zone.write(tuple(r for r in BASELINE if r[0] == "app"))
    await until(lambda: as_true(engine.status()["services"]["app"]["dns_drift"] is None), "the drift clearing")
    assert drift_gauge(engine).endswith(" 0.0")
    _, events = await call(engine, "GET", "/v1/events?kind=dns_drift")
    assert events["events"][0]["message"].startswith("dns_drift cleared: the records of app are as expected again")
    assert await asyncio.to_thread(main, ["dns", "show", "--config", config_path, "app"]) == 0


async def test_a_foreign_epoch_record_at_the_same_epoch_is_drift(
        running: tuple[Engine, list[dict[str, Any]], str], bind_zone: NamedServer) -> None:
    """The epoch TXT rewritten by someone else at the engine's epoch is a drift too, and moves are refused."""
    engine, _notes, _path = running
    await until(lambda: as_true(engine.status()["services"]["app"]["epoch"] == 1), "epoch 1 read from DNS")
    await until(lambda: as_true(engine.journal is not None
                                and engine.journal.get_state("app", "dns_epoch_seen") is not None), "the seen text")
    nsupdate(bind_zone, "update delete _failover-epoch.app.example.test TXT",
             'update add _failover-epoch.app.example.test 60 TXT "epoch=1 site=gcp op=intruder"')
    line = await until(lambda: status_drift(engine), "the dns_drift status line")
    assert line["summary"] == ("epoch record _failover-epoch.app.example.test rewritten at epoch 1: "
                               "'epoch=1 site=gcp op=intruder', the engine saw 'epoch=1 site=gcp'")
    status, refused = await call(engine, "POST", "/v1/services/app/failover", {"reason": "test move"})
    assert status == 409 and refused["error"] == "dns_drift"


async def as_true(value: bool) -> bool:
    return value


async def call_ok(engine: Engine) -> bool:
    sites = engine.status()["services"]["app"]["sites"]
    return all(s["health"] == "up" for s in sites.values())


async def status_drift(engine: Engine) -> dict[str, Any] | None:
    found: dict[str, Any] | None = engine.status()["services"]["app"]["dns_drift"]
    return found


async def halted(engine: Engine, op_id: str) -> dict[str, Any] | None:
    _, op = await call(engine, "GET", f"/v1/operations/{op_id}")
    return op if op.get("state") in ("halted", "done", "stood_down") else None


async def test_an_unreadable_epoch_record_is_drift(
        running: tuple[Engine, list[dict[str, Any]], str], bind_zone: NamedServer) -> None:
    """An epoch TXT someone overwrote with text that is not ``epoch=N ...`` is a drift naming it."""
    engine, _notes, _path = running
    await until(lambda: as_true(engine.status()["services"]["app"]["epoch"] == 1), "epoch 1 read from DNS")
    nsupdate(bind_zone, "update delete _failover-epoch.app.example.test TXT",
             'update add _failover-epoch.app.example.test 60 TXT "hello"')
    line = await until(lambda: status_drift(engine), "the dns_drift status line")
    assert line["summary"].startswith("records unreadable: epoch record _failover-epoch.app.example.test holds "
                                      "'hello'"), line
    status, refused = await call(engine, "POST", "/v1/services/app/failover", {"reason": "test move"})
    assert status == 409 and refused["error"] == "dns_drift"

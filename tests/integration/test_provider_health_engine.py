"""The provider's own health checks inside a running engine: a provider_health probe (Cloudflare LB pool health
through the cloudflare SDK against the local v4 fake) with counts_as info is shown and compared but never
changes the site's health; with counts_as vote it counts like any probe; status and the status page say
where provider and engine disagree."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.config.loader import parse_config
from engine.http.auth import hash_token
from engine.runtime.daemon import Engine
from tests.support import free_port
from tests.support.cloudflare_lb_fake import CloudflareLbFake

TOKEN = "operator-secret-token"


def config_text(server: CloudflareLbFake, pools: dict[str, str], tmp_path: Path, *, listen: int, port: int) -> str:
    provider = (f"{{type: cloudflare_lb, zone: example.com, account_id: '{server.account}', "
                f"api_token: {server.token}, base_url: '{server.base_url}', "
                f"pools: {{gcp: '{pools['gcp']}', azure: '{pools['azure']}'}}}}")
    tcp = f"{{type: tcp, name: port, host: 127.0.0.1, port: {port}, interval: 200ms, timeout: 100ms}}"
    return f"""
instance: {{id: e1, site: azure, listen: "127.0.0.1:{listen}", tick: 200ms}}
journal: {{path: "{tmp_path / 'journal.db'}"}}
api: {{tokens: [{{name: alice, role: operator, sha256: {hash_token(TOKEN)}}}]}}
services:
  app:
    active: gcp
    policy: {{auto_failover: false, failure_threshold: 1, success_threshold: 1}}
    sites:
      gcp:
        probes:
          - {tcp}
          - {{type: provider_health, name: cf, counts_as: info, site: gcp, interval: 300ms, timeout: 250ms,
              provider: {provider}}}
      azure:
        probes:
          - {tcp}
          - {{type: provider_health, name: cf, counts_as: vote, site: azure, interval: 300ms, timeout: 250ms,
              provider: {provider}}}
"""


@pytest.fixture
async def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  ) -> AsyncIterator[tuple[Engine, CloudflareLbFake, dict[str, str]]]:
    for variable in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL", "CLOUDFLARE_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    server = CloudflareLbFake()
    pools = {"gcp": server.add_pool("gcp", ["192.0.2.10"]), "azure": server.add_pool("azure", ["198.51.100.10"])}
    server.healthy[pools["gcp"]] = False  # Cloudflare's monitors see home down; the engine's own probe does not
    await server.start()
    site = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    text = config_text(server, pools, tmp_path, listen=free_port(), port=site.sockets[0].getsockname()[1])
    engine = Engine(parse_config(text, env={}))
    await engine.start()
    try:
        yield engine, server, pools
    finally:
        await engine.stop()
        site.close()
        await site.wait_closed()
        await server.stop()


async def get(engine: Engine, path: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{engine.api_url}{path}", headers={
            "Authorization": f"Bearer {TOKEN}"}, timeout=aiohttp.ClientTimeout(total=5)) as r:
        assert r.status == 200, path
        return await r.text()


async def until(check: Callable[[dict[str, Any]], bool], engine: Engine, what: str) -> dict[str, Any]:
    for _ in range(100):
        app = json.loads(await get(engine, "/v1/status"))["services"]["app"]
        if check(app):
            return app
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def test_info_is_shown_never_voted_and_a_vote_counts(
        running: tuple[Engine, CloudflareLbFake, dict[str, str]]) -> None:
    """Cloudflare sees gcp down (info): gcp stays up, the disagreement is shown; azure's vote down makes it down."""
    engine, server, pools = running
    app = await until(lambda a: any(v["provider_health"] == "down" and v["engine_health"] == "up"
                                    for v in a.get("provider_vantage") or []), engine, "gcp's vantage disagrees")
    assert app["sites"]["gcp"]["health"] == "up"
    gcp = next(v for v in app["provider_vantage"] if v["site"] == "gcp")
    assert gcp["counts_as"] == "info"
    assert gcp["disagreement"] == "cloudflare_lb sees gcp unhealthy while the engine sees it UP"
    page = await get(engine, "/")
    assert "provider&#x27;s own health checks" in page or "provider's own health checks" in page
    assert "cloudflare_lb sees gcp unhealthy while the engine sees it UP" in page
    server.healthy[pools["azure"]] = False
    app = await until(lambda a: a["sites"]["azure"]["health"] == "down", engine, "azure down by the provider's vote")
    azure = next(v for v in app["provider_vantage"] if v["site"] == "azure")
    assert azure["counts_as"] == "vote" and azure["engine_health"] == "up" and azure["disagreement"]

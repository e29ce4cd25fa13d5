"""HTTP and TCP probes against real aiohttp servers: every failure is an observation with a reason."""

from __future__ import annotations

import asyncio
import resource

import pytest

from engine.config.probes import HttpProbeConfig, TcpProbeConfig
from probes.http import HttpProbe, check_json
from probes.tcp import TcpProbe
from tests.support import free_port
from tests.support.sites import SiteFactory


def http(url: str, **kw: object) -> HttpProbe:
    cfg = HttpProbeConfig.model_validate({"type": "http", "url": url, "interval": 5, "timeout": 1, **kw})
    return HttpProbe(cfg)


async def observe(probe: HttpProbe | TcpProbe) -> tuple[bool, str]:
    try:
        obs = await probe.observe()
    finally:
        await probe.aclose()
    return obs.ok, obs.reason


async def test_healthy_site(sample_site: SiteFactory) -> None:
    """A 200 with the expected JSON passes and reports its latency."""
    site = await sample_site("gcp")
    ok, reason = await observe(http(f"{site.url}/health", json={"path": "status", "equals": "ok"},
                                    body_contains="gcp"))
    assert ok, reason
    assert reason.startswith("200 in ")


async def test_bad_status(sample_site: SiteFactory) -> None:
    """A 503 is a failure naming the status and the accepted set."""
    site = await sample_site(mode="fail")
    assert await observe(http(f"{site.url}/health")) == (False, "status 503 not in [200]")


async def test_expected_status_set(sample_site: SiteFactory) -> None:
    """A status in the configured set passes."""
    site = await sample_site(mode="fail")
    ok, _ = await observe(http(f"{site.url}/health", expect_status=[200, 503]))
    assert ok


async def test_connect_refused() -> None:
    """Nothing listening gives 'connect refused'."""
    assert await observe(http(f"http://127.0.0.1:{free_port()}/health")) == (False, "connect refused")


async def test_hanging_target_times_out(sample_site: SiteFactory) -> None:
    """A target that never answers fails at the timeout, not later."""
    site = await sample_site(mode="hang")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await observe(http(f"{site.url}/health", timeout=0.3)) == (False, "timeout after 0.3s")
    assert loop.time() - started < 1.0


async def test_reset_connection(sample_site: SiteFactory) -> None:
    """A connection dropped mid-request is a failure with a human reason."""
    site = await sample_site(mode="reset")
    ok, reason = await observe(http(f"{site.url}/health"))
    assert not ok
    assert reason in {"server closed the connection", "connection reset"}


async def test_garbage_response(sample_site: SiteFactory) -> None:
    """A reply that is not HTTP is a malformed-response failure."""
    site = await sample_site(mode="garbage")
    ok, reason = await observe(http(f"{site.url}/health"))
    assert not ok
    assert reason.startswith(("malformed response", "server closed the connection"))


async def test_ten_megabyte_body_is_bounded(sample_site: SiteFactory) -> None:
    """A 10 MB body needed for a check fails after reading at most max_body_bytes; memory stays flat."""
    site = await sample_site(mode="big")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(5):
        ok, reason = await observe(http(f"{site.url}/health", body_contains="ok", max_body_bytes=65536))
        assert (ok, reason) == (False, "body larger than 65536 bytes")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 20


async def test_body_and_json_conditions(sample_site: SiteFactory) -> None:
    """Missing substrings and JSON fields that differ are failures naming what was expected."""
    site = await sample_site("gcp")
    url = f"{site.url}/health"
    assert await observe(http(url, body_contains="healthy")) == (False, 'body lacks "healthy"')
    assert await observe(http(url, json={"path": "status", "equals": "green"})) == (
        False, "status is 'ok', expected 'green'")
    assert await observe(http(url, json={"path": "db.lag", "less_than": 5})) == (False, "JSON lacks db.lag")


async def test_max_latency(sample_site: SiteFactory) -> None:
    """An answer slower than max_latency fails as slow."""
    site = await sample_site(mode="slow", delay=0.2)
    ok, reason = await observe(http(f"{site.url}/health", max_latency=0.05))
    assert not ok and reason.startswith("slow: ") and reason.endswith("> 50 ms")


def test_check_json_numbers() -> None:
    """Numeric conditions compare numbers and refuse non-numbers."""
    cond = HttpProbeConfig.model_validate(
        {"type": "http", "url": "http://x", "json": {"path": "a.0.lag", "less_than": 5}}).json_condition
    assert cond is not None
    assert check_json(b'{"a": [{"lag": 3}]}', cond) is None
    assert check_json(b'{"a": [{"lag": 9}]}', cond) == "a.0.lag is 9, expected < 5"
    assert check_json(b'{"a": [{"lag": "x"}]}', cond) == "a.0.lag is 'x', not a number"
    assert check_json(b"<html>", cond) == "body is not JSON"


async def test_tcp_probe(sample_site: SiteFactory) -> None:
    """TCP connect succeeds against a listener and is refused on a closed port."""
    site = await sample_site()
    cfg = TcpProbeConfig(type="tcp", host="127.0.0.1", port=site.port, interval=5, timeout=1)
    ok, reason = await observe(TcpProbe(cfg))
    assert ok and reason.startswith("connected in ")
    closed = TcpProbeConfig(type="tcp", host="127.0.0.1", port=free_port(), interval=5, timeout=1)
    assert await observe(TcpProbe(closed)) == (False, "connect refused")


@pytest.mark.parametrize("new_connection", [True, False])
async def test_shared_session_connection_policy(sample_site: SiteFactory, new_connection: bool) -> None:
    """With new_connection the site sees a new connection per check; without it one is reused."""
    from probes.http import new_session

    site = await sample_site()
    cfg = HttpProbeConfig(type="http", url=f"{site.url}/health", interval=5, timeout=1,
                          new_connection=new_connection)
    session = new_session(keep_alive=not new_connection)
    try:
        probe = HttpProbe(cfg, session=session)
        for _ in range(3):
            assert (await probe.observe()).ok
        connector = session.connector
        assert connector is not None
        pooled = sum(len(v) for v in getattr(connector, "_conns", {}).values())
        assert pooled == (0 if new_connection else 1)
    finally:
        await session.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 made with openssl."""
    import shutil
    import subprocess

    from tests.support import require_part

    require_part("openssl", shutil.which("openssl") is not None, "apt-get install openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


async def test_tls_verification(tls_files: tuple[str, str]) -> None:
    """A self-signed target fails verification, passes with its CA file, and passes with verify off."""
    import ssl

    from aiohttp import web

    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    url = f"https://127.0.0.1:{port}/health"
    try:
        assert await observe(http(url)) == (False, "TLS certificate rejected")
        ok, reason = await observe(http(url, ca_file=cert))
        assert ok, reason
        ok, reason = await observe(http(url, tls_verify=False))
        assert ok, reason
    finally:
        await runner.cleanup()


async def test_a_broken_error_description_still_yields_an_observation() -> None:
    """Even when describing an error fails, observe() returns a failed observation instead of raising."""
    from probes.base import BaseProbe

    class Broken(BaseProbe):
        async def _check(self) -> tuple[bool, str, float | None, dict[str, object]]:
            raise ValueError("boom")

        def describe_error(self, exc: BaseException) -> str:
            raise AttributeError("bug in describe_error")

    obs = await Broken(timeout=1.0).observe()
    assert (obs.ok, obs.reason) == (False, "ValueError")

"""Hostile HTTP against a real engine over loopback: malformed headers, deep or big bodies, slow clients and
empty numbers are 4xx refusals (never a 500 or a held connection), and a port in use leaks nothing."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from engine.config.loader import parse_config
from engine.core.peer_auth import SENDER_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from engine.http.auth import hash_token
from engine.http.guards import BODY_TIMEOUT, HEAD_TIMEOUT, MAX_JSON_DEPTH
from engine.runtime.daemon import Engine
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "operator-token-0123456789"
PEER_KEY = "hostile-test-key-0123456789abcdef"


def config_text(port: int, journal: Path) -> str:
    return f"""
instance: {{id: engine-gcp, site: gcp, listen: "127.0.0.1:{port}", tick: 1s}}
peers: [{{id: engine-azure, site: azure, url: "http://127.0.0.1:9", key: "{PEER_KEY}"}}]
journal: {{path: "{journal}"}}
api: {{tokens: [{{name: alice, role: operator, sha256: {hash_token(OPERATOR)}}}]}}
services:
  shop:
    active: gcp
    sites:
      gcp: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}
      azure: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    e = Engine(parse_config(config_text(free_port(), tmp_path / "j.db"), env={}))
    await e.start()
    yield e
    await e.stop()


async def raw(engine: Engine, request: bytes, wait: float = 5.0) -> tuple[int, bytes]:
    """Send ``request`` as raw bytes on a new connection; (status, body) of the answer."""
    address = urlsplit(engine.api_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(wait):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(path: str, *headers: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"".join(
        h + b"\r\n" for h in headers) + b"\r\n"


@pytest.mark.parametrize("value", [b"Bearer \xff\xfe\xfd", "Bearer jalapeño".encode(), b"Bearer \x01\x02",
                                   b"Basic \xc3\x28", b"\xe2\x82\xac"])
async def test_malformed_authorization_is_401_never_500(engine: Engine, value: bytes) -> None:
    """Invalid UTF-8 or non-ASCII in Authorization is a 401 with a JSON reason (control characters: aiohttp's
    own 400 before any handler)."""
    status, body = await raw(engine, get("/v1/status", b"Authorization: " + value))
    assert status in (400, 401)
    if status == 401:
        assert json.loads(body)["error"] == "unauthorized"


async def test_a_flood_of_unparsable_requests_logs_a_few_lines(engine: Engine,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Fifty requests aiohttp cannot parse cost the log at most five tracebacks, not fifty."""
    for _ in range(50):
        assert (await raw(engine, get("/v1/status", b"Authorization: Bearer \x01")))[0] == 400
    errors = [r for r in caplog.records if r.name == "aiohttp.server" and r.levelno >= 30]
    assert 1 <= len(errors) <= 5


@pytest.mark.parametrize("signature", [b"v2=\xff\xfe", "v2=é".encode() + b"0" * 63, b"v2=" + b"0" * 64])
async def test_malformed_peer_signature_is_401_never_500(engine: Engine, signature: bytes) -> None:
    """A peer verdict with a non-ASCII, invalid UTF-8 or simply wrong signature is refused with 401."""
    body = b'{"sender": "engine-azure"}'
    request = (b"POST /v1/peer/verdict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
               + SENDER_HEADER.encode() + b": engine-azure\r\n" + TIMESTAMP_HEADER.encode()
               + f": {time.time():.6f}\r\n".encode() + SIGNATURE_HEADER.encode() + b": " + signature
               + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    status, answer = await raw(engine, request)
    assert status == 401 and json.loads(answer)["error"] == "rejected"


async def test_a_peer_signing_as_another_is_refused(engine: Engine) -> None:
    """A verdict naming engine-azure but signed with any key but the link's is refused over HTTP too."""
    at = round(time.time(), 6)
    body = json.dumps({"sender": "engine-azure", "site": "azure", "role": "engine", "boot": "b", "seq": 1,
                       "at": at, "interval": 1.0, "services": {}}).encode()
    async with aiohttp.ClientSession() as s:
        for key, expected in ((b"x" * 32, 401), (PEER_KEY.encode(), 200)):
            headers = {"Content-Type": "application/json", **sign(key, "engine-azure", at, body)}
            async with s.post(engine.api_url + "/v1/peer/verdict", data=body, headers=headers) as r:
                assert r.status == expected, await r.text()


async def test_deep_json_is_400_and_big_bodies_413(engine: Engine) -> None:
    """1,000-deep JSON is a 400 on operator and peer endpoints, a body over the cap a 413, NaN or 1e999 a 400."""
    deep = b"[" * 1000 + b"]" * 1000
    auth = {"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        for path in ("/v1/services/shop/pause", "/v1/peer/verdict", "/v1/drills"):
            async with s.post(engine.api_url + path, data=deep, headers=auth) as r:
                assert r.status == 400, (path, await r.text())
                assert f"deeper than {MAX_JSON_DEPTH}" in (await r.json())["detail"]
        async with s.post(engine.api_url + "/v1/services/shop/pause", data=b"{" + b" " * 100_000 + b"}",
                          headers=auth) as r:
            assert r.status == 413
        for number in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
            async with s.post(engine.api_url + "/v1/services/shop/pause", headers=auth,
                              data=b'{"reason": "x", "until": ' + number + b"}") as r:
                assert r.status == 400 and "finite" in (await r.json())["detail"]


@pytest.mark.parametrize("path", ["/v1/events?limit=", "/v1/events?before_id=", "/v1/events?since=",
                                  "/v1/operations?limit=", "/v1/drills?limit="])
async def test_empty_numbers_in_the_query_are_refused(engine: Engine, path: str) -> None:
    """``?limit=`` is not "no limit": an empty number is a 400."""
    async with aiohttp.ClientSession() as s, s.get(engine.api_url + path,
                                                   headers={"Authorization": f"Bearer {OPERATOR}"}) as r:
        assert r.status == 400, await r.text()


async def test_slow_clients_are_cut_off(engine: Engine) -> None:
    """A request head or body trickling in is not waited for forever: the head is cut, the body gets 408."""
    address = urlsplit(engine.api_url)

    async def slow_head() -> float:
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        started = time.monotonic()
        writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        try:
            async with asyncio.timeout(HEAD_TIMEOUT + 10):
                while True:  # a header line now and then, never the blank line that ends the head
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
                    if reader.at_eof() or await _closed(reader):
                        return time.monotonic() - started
        except (ConnectionError, OSError):
            return time.monotonic() - started
        finally:
            writer.close()

    async def slow_body() -> int:
        request = (b"POST /v1/services/shop/pause HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   + f"Authorization: Bearer {OPERATOR}\r\nContent-Length: 100\r\n\r\n".encode() + b'{"reason"')
        status, _ = await raw(engine, request, wait=BODY_TIMEOUT + 10)
        return status

    head_cut_after, body_status = await asyncio.gather(slow_head(), slow_body())
    assert head_cut_after < HEAD_TIMEOUT + 5
    assert body_status == 408


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(1.0):
            return await reader.read(1) == b""
    except TimeoutError:
        return False


def test_a_port_in_use_leaves_no_unclosed_session(tmp_path: Path) -> None:
    """`run` on a taken port exits 2 with one line and closes every client session it had opened."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "engine.yaml"
        path.write_text(config_text(port, tmp_path / "j.db").replace(
            "{type: tcp, host: 127.0.0.1, port: 9}", '{type: http, url: "http://127.0.0.1:9/h"}', 1))
        result = subprocess.run([sys.executable, "-m", "engine", "run", "--config", str(path)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=False,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert "address already in use" in result.stderr
    assert "Unclosed" not in result.stderr + result.stdout and "Traceback" not in result.stderr

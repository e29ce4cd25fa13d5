"""Peer verdicts over mTLS: an engine serving HTTPS accepts a verdict only with a client certificate
whose CN is the sender, on top of the HMAC signature."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.config.loader import parse_config
from engine.core.peer_auth import sign
from engine.runtime.daemon import Engine
from tests.support import free_port, require_part

KEY = "mtls-test-key-0123456789abcdef"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and certificates for 127.0.0.1 (server), engine-azure and mallory (clients)."""
    require_part("openssl", shutil.which("openssl") is not None, "apt-get install openssl")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("engine-azure", None), ("mallory", None),
                      ("engine-gcp", None)):
        cn = "127.0.0.1" if name == "server" else name
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", str(d / f"{name}.key"),
                "-out", str(d / f"{name}.csr"))
        extra = ["-extfile", str(d / f"{name}.ext")] if ext else []
        if ext:
            (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey",
                str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(d / f"{name}.pem"), *extra)
    return d


@pytest.fixture
async def engine(pki: Path, tmp_path: Path) -> AsyncIterator[Engine]:
    port = free_port()
    text = f"""
instance: {{id: engine-gcp, site: gcp, listen: "127.0.0.1:{port}", tick: 1s,
            tls: {{cert_file: "{pki / 'server.pem'}", key_file: "{pki / 'server.key'}",
                   client_ca_file: "{pki / 'ca.pem'}"}}}}
peers: [{{id: engine-azure, site: azure, url: "https://127.0.0.1:1", key: "{KEY}"}}]
peering: {{tls: {{ca_file: "{pki / 'ca.pem'}", require_client_cert: true}}}}
journal: {{path: "{tmp_path / 'j.db'}"}}
services:
  shop:
    active: gcp
    sites: {{gcp: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}},
            azure: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}}}
"""
    e = Engine(parse_config(text, env={}))
    await e.start()
    yield e
    await e.stop()


def verdict_body(seq: int) -> tuple[bytes, dict[str, str]]:
    at = round(time.time(), 6)
    body = json.dumps({"sender": "engine-azure", "site": "azure", "role": "engine", "boot": "b", "seq": seq,
                       "at": at, "interval": 1.0, "services": {}}).encode()
    return body, {"Content-Type": "application/json", **sign(KEY.encode(), "engine-azure", at, body)}


async def post(engine: Engine, pki: Path, client: str | None, seq: int) -> tuple[int, dict[str, str]]:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client:
        context.load_cert_chain(str(pki / f"{client}.pem"), str(pki / f"{client}.key"))
    body, headers = verdict_body(seq)
    async with aiohttp.ClientSession() as s, s.post(f"{engine.api_url}/v1/peer/verdict", data=body,
                                                    headers=headers, ssl=context) as r:
        return r.status, await r.json()


async def test_verdict_needs_the_senders_certificate(engine: Engine, pki: Path) -> None:
    """With the sender's certificate it is accepted; without one, or with another's, it is refused."""
    assert engine.api_url is not None and engine.api_url.startswith("https://")
    status, body = await post(engine, pki, "engine-azure", 1)
    assert status == 200, body
    status, body = await post(engine, pki, None, 2)
    assert (status, body["detail"]) == (401, "a client certificate is required from peers")
    status, body = await post(engine, pki, "mallory", 3)
    assert (status, body["detail"]) == (401, "client certificate 'mallory' does not belong to sender 'engine-azure'")


async def test_operators_reach_the_api_without_a_client_certificate(engine: Engine, pki: Path) -> None:
    """Client certificates are optional for everything but peer verdicts."""
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    async with aiohttp.ClientSession() as s, s.get(f"{engine.api_url}/v1/status", ssl=context) as r:
        assert r.status == 200


def test_require_client_cert_needs_a_client_ca(pki: Path) -> None:
    """Requiring peer certificates without a CA to check them against is a config error."""
    from engine.config.loader import ConfigError

    base = 'instance: {id: a, site: gcp}\npeers: [{id: b, site: azure, url: "https://x:1", key: kkkkkkkkkkkkkkkk}]\n'
    with pytest.raises(ConfigError) as info:
        parse_config(base + "peering: {tls: {require_client_cert: true}}\n", env={})
    assert [str(p) for p in info.value.problems] == [
        "line 3: peering.tls.require_client_cert: needs instance.tls.client_ca_file to verify peers"]
    with pytest.raises(ConfigError) as info:
        parse_config(base + f"peering: {{tls: {{cert_file: '{pki / 'ca.pem'}'}}}}\n", env={})
    assert [str(p) for p in info.value.problems] == ["line 3: peering.tls.key_file: cert_file and key_file go together"]
    with pytest.raises(ConfigError) as info:
        parse_config(base + "peering: {tls: {ca_file: /nonexistent/ca.pem}}\n", env={})
    assert [str(p) for p in info.value.problems] == [
        "line 3: peering.tls.ca_file: no such file: /nonexistent/ca.pem"]


async def test_two_engines_exchange_verdicts_over_mtls(pki: Path, tmp_path: Path) -> None:
    """Two engines, each serving HTTPS and presenting its own client certificate, hear each other."""
    ports = {"engine-gcp": free_port(), "engine-azure": free_port()}

    def config(me: str, other: str, site: str, other_site: str) -> str:
        return f"""
instance: {{id: {me}, site: {site}, listen: "127.0.0.1:{ports[me]}", tick: 200ms,
            tls: {{cert_file: "{pki / 'server.pem'}", key_file: "{pki / 'server.key'}",
                   client_ca_file: "{pki / 'ca.pem'}"}}}}
peers: [{{id: {other}, site: {other_site}, url: "https://127.0.0.1:{ports[other]}", key: "{KEY}"}}]
peering: {{tls: {{ca_file: "{pki / 'ca.pem'}", cert_file: "{pki / (me + '.pem')}",
                                     key_file: "{pki / (me + '.key')}", require_client_cert: true}}}}
journal: {{path: "{tmp_path / (me + '.db')}"}}
services:
  shop:
    active: gcp
    sites: {{gcp: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}},
            azure: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}}}
"""

    engines = [Engine(parse_config(config("engine-gcp", "engine-azure", "gcp", "azure"), env={})),
               Engine(parse_config(config("engine-azure", "engine-gcp", "azure", "gcp"), env={}))]
    for e in engines:
        await e.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(e.peering.status()[0]["heard_age_s"] is not None for e in engines):
                break
            await asyncio.sleep(0.05)
        for e in engines:
            peer = e.peering.status()[0]
            assert peer["heard_age_s"] is not None and peer["last_error"] is None, peer
            assert e.peering.rejections == 0
    finally:
        for e in engines:
            await e.stop()

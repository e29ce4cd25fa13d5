"""The demo's built-in DNS server (engine/demo/dns_server.py) with the engine's unchanged RFC 2136 provider
and verifier: reads, conditional shifts, a conflict on a stale read, TSIG refusals, every prerequisite kind,
and what dig-like clients see (UDP, TCP, NXDOMAIN, NODATA, truncation)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataset
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

from actions.dns.errors import DnsAuthError, DnsConflict
from actions.dns.provider import build_verifier
from actions.dns.rfc2136 import Rfc2136Provider
from engine.config.dns import DnsConfig
from engine.demo.dns_server import BuiltinDns, Zone

ZONE = "example.test"
KEY = "demo-key"
ALGORITHM = "hmac-sha256"
GCP, AZURE = "192.0.2.10", "198.51.100.10"
RECORDS = (
    ("app", "A", 30, (GCP,)),
    ("api", "AAAA", 30, ("2001:db8::10",)),
    ("web", "CNAME", 30, ("gcp.example.net.",)),
    ("alias", "CNAME", 30, ("app",)),
    ("_failover-epoch.app", "TXT", 30, ('"epoch=1 site=gcp op=initial"',)),
)


def secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
async def server() -> AsyncIterator[BuiltinDns]:
    dns_server = await BuiltinDns(Zone(ZONE, RECORDS), key_name=KEY, algorithm=ALGORITHM, secret=secret()).start()
    try:
        yield dns_server
    finally:
        await dns_server.stop()


def config(server: BuiltinDns, *, key: str = KEY, key_secret: str | None = None,
           nameservers: list[str] | None = None) -> DnsConfig:
    return DnsConfig.model_validate({
        "provider": {"type": "rfc2136", "servers": [server.address], "zone": ZONE,
                     "tsig": {"name": key, "algorithm": ALGORITHM, "secret": key_secret or server.secret},
                     "timeout": "1s", "attempts": 2, "backoff": "10ms"},
        "records": [
            {"name": "app", "type": "A", "targets": {"gcp": [GCP], "azure": [AZURE]}},
            {"name": "api", "type": "AAAA", "targets": {"gcp": ["2001:db8::10"], "azure": ["2001:db8:1::10"]}},
            {"name": "web", "type": "CNAME", "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}},
        ],
        "epoch_record": "_failover-epoch.app",
        "verify": {"nameservers": [server.address] if nameservers is None else nameservers, "deadline": "2s",
                   "interval": "20ms", "query_timeout": "500ms"},
    })


def provider(server: BuiltinDns, **kw: Any) -> Rfc2136Provider:
    return Rfc2136Provider(config(server, **kw), "shop")


async def ask(server: BuiltinDns, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(query, server.host, port=server.port, timeout=2)
    return await dns.asyncquery.udp(query, server.host, port=server.port, timeout=2)


def values(response: dns.message.Message) -> list[str]:
    return sorted(rdata.to_text() for rrset in response.answer for rdata in rrset)


def keyring(server: BuiltinDns) -> dict[dns.name.Name, dns.tsig.Key]:
    return dns.tsigkeyring.from_text({KEY: (ALGORITHM, server.secret)})


async def send_update(server: BuiltinDns, update: dns.update.UpdateMessage) -> dns.rcode.Rcode:
    response = await dns.asyncquery.tcp(update, server.host, port=server.port, timeout=2)
    return response.rcode()


def signed_update(server: BuiltinDns) -> dns.update.UpdateMessage:
    return dns.update.UpdateMessage(ZONE + ".", keyring=keyring(server), keyname=dns.name.from_text(KEY),
                                    keyalgorithm=ALGORITHM)


# -- the engine's provider and verifier ----------------------------------------------------------------
async def test_read_returns_records_epoch_and_site(server: BuiltinDns) -> None:
    """A signed read returns every record with its TTL, the epoch beside them and the site they match."""
    state = await provider(server).read()
    assert [(r.name, r.rtype, r.values, r.ttl, r.site) for r in state.records] == [
        ("app.example.test.", "A", (GCP,), 30, "gcp"),
        ("api.example.test.", "AAAA", ("2001:db8::10",), 30, "gcp"),
        ("web.example.test.", "CNAME", ("gcp.example.net.",), 30, "gcp"),
    ]
    assert (state.epoch.number, state.epoch.site, state.epoch.op, state.site) == (1, "gcp", "initial", "gcp")


async def test_shift_with_prerequisites_then_verified(server: BuiltinDns) -> None:
    """The conditional shift is applied in one update, the serial grows, and the verifier sees azure everywhere."""
    serial = server.authority.zone.serial
    p = provider(server)
    state = await p.read()
    new = await p.shift(state, "azure", 2, op="op-1")
    assert new.site == "azure"
    again = await p.read()
    assert (again.site, again.epoch.number, again.epoch.op) == ("azure", 2, "op-1")
    assert server.authority.zone.serial == serial + 1
    assert values(await ask(server, "app.example.test", "A")) == [AZURE]
    result = await build_verifier(config(server)).verify(again)
    assert result.ok, result.message
    assert result.message.startswith("all 1 servers answer azure")
    # retrying the same operation from the state it read finds its own write: success, nothing changes
    assert (await p.shift(state, "azure", 2, op="op-1")).site == "azure"
    assert server.authority.zone.serial == serial + 1


async def test_verifier_discovers_the_nameservers_through_ns_and_glue(server: BuiltinDns) -> None:
    """Without configured nameservers the verifier asks the update server for NS and glue, on its port."""
    state = await provider(server).read()
    verifier = build_verifier(config(server, nameservers=[]))
    servers = await verifier.servers()
    assert [(s.host, s.port) for s in servers] == [("127.0.0.1", server.port)], servers
    assert (await verifier.verify(state)).ok


async def test_stale_read_conflicts_and_changes_nothing(server: BuiltinDns) -> None:
    """Two executors read epoch 1; the first shifts; the second's prerequisites fail: DnsConflict, zone intact."""
    first, second = provider(server), provider(server)
    stale = await second.read()
    await first.shift(await first.read(), "azure", 2, op="winner")
    serial = server.authority.zone.serial
    with pytest.raises(DnsConflict) as info:
        await second.shift(stale, "azure", 2, op="loser")
    assert info.value.op == "winner"
    assert server.authority.zone.serial == serial
    assert server.authority.updates[-1][1] == "NXRRSET"
    # the records changed under a reader too (not only the epoch): also a conflict
    with pytest.raises(DnsConflict):
        await second.retime(stale, {"app.example.test.": 5})


async def test_wrong_key_secret_or_name_is_refused(server: BuiltinDns) -> None:
    """A bad signature or an unknown key: NOTAUTH with the TSIG error; the provider raises DnsAuthError."""
    serial = server.authority.zone.serial
    state = await provider(server).read()
    for bad in (provider(server, key_secret=secret()), provider(server, key="other-key")):
        with pytest.raises(DnsAuthError, match="rejected TSIG key"):
            await bad.read()
        with pytest.raises(DnsAuthError):
            await bad.shift(state, "azure", 2)
    assert server.authority.zone.serial == serial
    assert values(await ask(server, "app.example.test", "A")) == [GCP]


async def test_unsigned_update_is_refused(server: BuiltinDns) -> None:
    update = dns.update.UpdateMessage(ZONE + ".")
    update.replace("app", 30, "A", AZURE)
    assert await send_update(server, update) == dns.rcode.REFUSED
    assert values(await ask(server, "app.example.test", "A")) == [GCP]


async def test_update_outside_the_zone_is_notauth_and_names_outside_notzone(server: BuiltinDns) -> None:
    other = dns.update.UpdateMessage("other.test.", keyring=keyring(server), keyname=dns.name.from_text(KEY),
                                     keyalgorithm=ALGORITHM)
    other.replace("app", 30, "A", AZURE)
    assert await send_update(server, other) == dns.rcode.NOTAUTH
    update = signed_update(server)
    update.add(dns.name.from_text("app.other.test."), 30, "A", AZURE)
    assert await send_update(server, update) == dns.rcode.NOTZONE


async def test_every_prerequisite_kind(server: BuiltinDns) -> None:
    """exists (value independent/dependent), does not exist, name in use / not in use: each with its rcode."""
    cases: list[tuple[Any, dns.rcode.Rcode]] = [
        (lambda u: u.present("app"), dns.rcode.NOERROR),
        (lambda u: u.present("nothing"), dns.rcode.NXDOMAIN),
        (lambda u: u.present("app", "A"), dns.rcode.NOERROR),
        (lambda u: u.present("app", "AAAA"), dns.rcode.NXRRSET),
        (lambda u: u.present("app", dns.rdataset.from_text("IN", "A", 0, GCP)), dns.rcode.NOERROR),
        (lambda u: u.present("app", dns.rdataset.from_text("IN", "A", 0, AZURE)), dns.rcode.NXRRSET),
        (lambda u: u.present("app", dns.rdataset.from_text("IN", "A", 0, GCP, AZURE)), dns.rcode.NXRRSET),
        (lambda u: u.absent("app", "AAAA"), dns.rcode.NOERROR),
        (lambda u: u.absent("app", "A"), dns.rcode.YXRRSET),
        (lambda u: u.absent("nothing"), dns.rcode.NOERROR),
        (lambda u: u.absent("app"), dns.rcode.YXDOMAIN),
    ]
    for build, expected in cases:
        update = signed_update(server)
        build(update)
        update.add("marker", 30, "TXT", '"changed"')
        got = await send_update(server, update)
        assert got == expected, (update.to_text(), dns.rcode.to_text(got))
        marker = values(await ask(server, "marker.example.test", "TXT"))
        assert marker == (['"changed"'] if expected == dns.rcode.NOERROR else []), update.to_text()
        cleanup = signed_update(server)
        cleanup.delete("marker")
        assert await send_update(server, cleanup) == dns.rcode.NOERROR


async def test_updates_add_delete_and_replace(server: BuiltinDns) -> None:
    """Add to an RRset, delete one RR, delete an RRset, delete a name; apex SOA/NS survive; CNAME rules."""
    update = signed_update(server)
    update.add("multi", 60, "A", "192.0.2.21")
    update.add("multi", 60, "A", "192.0.2.22")
    assert await send_update(server, update) == dns.rcode.NOERROR
    assert values(await ask(server, "multi.example.test", "A")) == ["192.0.2.21", "192.0.2.22"]
    update = signed_update(server)
    update.delete("multi", "A", "192.0.2.21")
    assert await send_update(server, update) == dns.rcode.NOERROR
    assert values(await ask(server, "multi.example.test", "A")) == ["192.0.2.22"]
    update = signed_update(server)
    update.replace("multi", 10, "A", "192.0.2.23")
    assert await send_update(server, update) == dns.rcode.NOERROR
    answer = await ask(server, "multi.example.test", "A")
    assert values(answer) == ["192.0.2.23"] and answer.answer[0].ttl == 10
    update = signed_update(server)
    update.add("alias", 60, "A", "192.0.2.99")  # alias is a CNAME: other data is ignored
    update.delete("multi")
    update.delete(ZONE + ".")  # the apex keeps its SOA and NS
    assert await send_update(server, update) == dns.rcode.NOERROR
    assert (await ask(server, "multi.example.test", "A")).rcode() == dns.rcode.NXDOMAIN
    assert values(await ask(server, ZONE, "NS")) == ["ns1.example.test."]
    assert (await ask(server, ZONE, "SOA")).answer
    alias = await ask(server, "alias.example.test", "A")
    assert values(alias) == [GCP, "app.example.test."]  # the CNAME, followed inside the zone


async def test_queries_like_dig(server: BuiltinDns) -> None:
    """Authoritative answers over UDP and TCP, NXDOMAIN and NODATA with the SOA, REFUSED outside the zone."""
    for tcp in (False, True):
        response = await ask(server, "app.example.test", "A", tcp=tcp)
        assert response.flags & dns.flags.AA and values(response) == [GCP]
    missing = await ask(server, "nothing.example.test", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.authority[0].rdtype == dns.rdatatype.SOA
    nodata = await ask(server, "app.example.test", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    update = signed_update(server)
    update.add("leaf.branch", 30, "TXT", '"deep"')
    assert await send_update(server, update) == dns.rcode.NOERROR
    empty_non_terminal = await ask(server, "branch.example.test", "TXT")
    assert empty_non_terminal.rcode() == dns.rcode.NOERROR and not empty_non_terminal.answer
    assert (await ask(server, "example.org", "A")).rcode() == dns.rcode.REFUSED


async def test_dig_shows_the_records(server: BuiltinDns) -> None:
    """The command the demo prints works: dig against the built-in server answers the A record."""
    dig = shutil.which("dig")
    if dig is None:
        pytest.skip("dig is not installed (bind9-dnsutils)")
    command = [dig, "@127.0.0.1", "-p", str(server.port), "app.example.test", "A", "+short"]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=10, check=False)
    assert (result.returncode, result.stdout.split()) == (0, [GCP]), result.stderr


async def test_large_udp_answer_is_truncated(server: BuiltinDns) -> None:
    """An answer above 512 bytes (no EDNS) comes back with TC set; over TCP it arrives whole."""
    update = signed_update(server)
    update.add("big", 60, "TXT", *(f'"{i:03d}{"x" * 60}"' for i in range(20)))
    assert await send_update(server, update) == dns.rcode.NOERROR
    udp = await ask(server, "big.example.test", "TXT")
    assert udp.flags & dns.flags.TC and not udp.answer
    assert len(values(await ask(server, "big.example.test", "TXT", tcp=True))) == 20


async def test_garbage_gets_formerr_or_silence(server: BuiltinDns) -> None:
    authority = server.authority
    assert authority.handle(b"\x00") is None
    reply = authority.handle(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff")
    assert reply is not None and reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR

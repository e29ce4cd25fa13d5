"""Verification at the authoritative servers: a real BIND primary with a real secondary fed by NOTIFY."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dns.message
import dns.query
import pytest

from actions.dns.errors import DnsUnavailable
from actions.dns.provider import build_verifier
from actions.dns.rfc2136 import Rfc2136Provider
from actions.dns.verify import Verifier
from tests.support.bind import (
    BASELINE,
    NamedServer,
    dns_config_for,
    free_udp_tcp_port,
    start_named,
    start_resolver,
)

pytestmark = pytest.mark.real

NAMESERVERS = (("ns1", "127.0.0.1"), ("ns2", "::1"))  # ns2 has only an AAAA record


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[NamedServer, NamedServer]]:
    """A primary on 127.0.0.1 that NOTIFYs a secondary on ::1, both on the same port: two distinct servers.

    The zone's NS records name both (ns2 by AAAA only). named listens only on addresses configured
    on an interface, and ::1 is the one other loopback address there is.
    """
    port = free_udp_tcp_port(("127.0.0.1", "::1"))
    primary = start_named(port=port, nameservers=NAMESERVERS, notify=(("::1", port),))
    try:
        secondary = start_named(host="::1", port=port, nameservers=NAMESERVERS, primary=primary,
                                secret=primary.secret)
    except BaseException:
        primary.stop()
        raise
    try:
        yield primary, secondary
    finally:
        secondary.stop()
        primary.stop()


@pytest.fixture
def fresh_pair(pair: tuple[NamedServer, NamedServer]) -> tuple[NamedServer, NamedServer]:
    """The pair with the baseline records restored on the primary."""
    pair[0].write(BASELINE)
    return pair


def discovering(primary: NamedServer, **verify: object) -> tuple[Rfc2136Provider, Verifier]:
    """A provider and a verifier that discovers the nameservers through the primary (verify.port left at 53)."""
    config = dns_config_for(primary, verify={"nameservers": [], **verify})
    return Rfc2136Provider(config, "app"), build_verifier(config)


async def test_discovers_every_nameserver_of_the_zone(fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """With no nameservers configured, the zone's NS records and their A and AAAA addresses are used."""
    primary, secondary = fresh_pair
    dns_provider, verifier = discovering(primary, deadline="5s", interval="20ms")
    servers = await verifier.servers()
    assert [s.label for s in servers] == [f"ns1.example.test (127.0.0.1:{primary.port})",
                                          f"ns2.example.test ([::1]:{primary.port})"]
    assert [(s.host, s.port) for s in servers] == [(primary.host, primary.port), (secondary.host, secondary.port)]
    after = await dns_provider.shift(await dns_provider.read(), "azure", 2)
    result = await verifier.verify(after)
    assert result.ok, result.message
    assert [c.answer for c in result.checks] == ["azure", "azure"]


async def test_nameserver_outside_the_zone_is_resolved_through_the_resolvers(
        fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """An out-of-zone NS name is resolved by the configured resolver (A/AAAA) and asked on port 53."""
    primary, _secondary = fresh_pair
    primary.write((("@", "NS", 60, ("ns.provider.net.",)),))  # added beside ns1 and ns2
    resolver = start_resolver(primary, zones={"provider.net": "ns IN AAAA 2001:db8::53"})
    try:
        _provider, verifier = discovering(primary, resolvers=[resolver.address])
        found = await verifier.servers()
        labels = [s.label for s in found]
    finally:
        resolver.stop()
        primary.delete_values("@", "NS", "ns.provider.net.")
    assert labels == ["ns.provider.net ([2001:db8::53]:53)", f"ns1.example.test (127.0.0.1:{primary.port})",
                      f"ns2.example.test ([::1]:{primary.port})", f"resolver {resolver.address}"], found


async def test_nameserver_without_an_address_fails_the_verification(
        fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """An NS name that cannot be resolved is never dropped: the result is not ok and names it."""
    primary, _secondary = fresh_pair
    primary.write((("@", "NS", 60, ("ns.nowhere.invalid.",)),))  # added beside ns1 and ns2
    resolver = start_resolver(primary)  # knows example.test only: ns.nowhere.invalid does not resolve
    try:
        dns_provider, verifier = discovering(primary, resolvers=[resolver.address], deadline="3s")
        result = await verifier.verify(await dns_provider.read())
    finally:
        resolver.stop()
        primary.delete_values("@", "NS", "ns.nowhere.invalid.")
    assert not result.ok
    assert [c.server.label for c in result.lagging] == ["ns.nowhere.invalid (no address)"]
    assert result.message.startswith("ns.nowhere.invalid (no address): address unknown: the configured "
                                     "resolvers gave none")
    assert "all" not in result.message and result.elapsed < 2.0


async def test_shift_is_verified_at_primary_and_secondary(
        fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """After a shift both authoritative servers (and a watched resolver) answer the target, each timed."""
    primary, secondary = fresh_pair
    resolver = start_resolver(primary)  # a real recursive BIND forwarding the zone, not the primary itself
    try:
        config = dns_config_for(primary, verify={"nameservers": [primary.address, secondary.address],
                                                 "resolvers": [resolver.address],
                                                 "deadline": "5s", "interval": "10ms"})
        dns_provider, verifier = Rfc2136Provider(config, "app"), Verifier(config)
        await verifier.verify(await dns_provider.read())  # the secondary has caught up with the baseline
        after = await dns_provider.shift(await dns_provider.read(), "azure", 2)
        result = await verifier.verify(after)
    finally:
        resolver.stop()
    assert result.ok, result.message
    assert [c.answer for c in result.checks] == ["azure", "azure", "azure"]
    assert [c.server.kind for c in result.checks] == ["authoritative", "authoritative", "resolver"]
    assert result.checks[2].server.label == f"resolver {resolver.address}"
    assert resolver.address not in (primary.address, secondary.address)
    assert all(c.seconds is not None and c.seconds < 5 for c in result.checks)
    assert result.message.startswith("all 3 servers answer azure; slowest ")


async def test_deadline_miss_names_the_servers_still_on_the_old_site(
        fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """A server that never gets the change makes a result that says who still answers the old site."""
    primary, _secondary = fresh_pair
    frozen = start_named(nameservers=NAMESERVERS, allow_update=False)
    try:
        config = dns_config_for(primary, verify={
            "nameservers": [primary.address, frozen.address], "deadline": "300ms", "interval": "50ms",
            "query_timeout": "100ms"})
        dns_provider = Rfc2136Provider(config, "app")
        after = await dns_provider.shift(await dns_provider.read(), "azure", 2)
        result = await Verifier(config).verify(after)
    finally:
        frozen.stop()
    assert not result.ok
    assert [c.server.label for c in result.lagging] == [frozen.address]
    assert result.checks[0].ok and result.checks[0].answer == "azure"
    assert result.message == f"{frozen.address} still answers gcp after 300ms"
    assert 0.3 <= result.elapsed < 1.0


async def test_silent_server_is_reported_as_no_answer_within_the_deadline(
        fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """A nameserver that never replies is a lagging server with answer 'no answer', not a hang."""
    primary, _secondary = fresh_pair
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    silent = "127.0.0.1:{}".format(transport.get_extra_info("sockname")[1])
    try:
        config = dns_config_for(primary, verify={"nameservers": [silent], "deadline": "400ms",
                                                 "interval": "100ms", "query_timeout": "100ms"})
        dns_provider = Rfc2136Provider(config, "app")
        result = await Verifier(config).verify(await dns_provider.read())
    finally:
        transport.close()
    assert not result.ok and result.checks[0].answer == "no answer"
    assert result.elapsed < 1.5


async def test_each_server_is_timed_by_its_own_answer(fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """A fast server's time is its own answer's, not the end of a round that waits for a slow one."""
    primary, _secondary = fresh_pair
    loop = asyncio.get_running_loop()

    class Slow(asyncio.DatagramProtocol):  # answers like the primary, 300 ms late
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            query = dns.message.from_wire(data)
            answer = dns.query.udp(query, primary.host, port=primary.port, timeout=1)
            loop.call_later(0.3, self.transport.sendto, answer.to_wire(), addr)  # type: ignore[attr-defined]

    transport, _ = await loop.create_datagram_endpoint(Slow, local_addr=("127.0.0.1", 0))
    slow = "127.0.0.1:{}".format(transport.get_extra_info("sockname")[1])
    try:
        config = dns_config_for(primary, verify={"nameservers": [primary.address, slow], "deadline": "3s",
                                                 "interval": "10ms", "query_timeout": "1s"})
        result = await Verifier(config).verify(await Rfc2136Provider(config, "app").read())
    finally:
        transport.close()
    assert result.ok, result.message
    fast_seconds, slow_seconds = (c.seconds for c in result.checks)
    assert fast_seconds is not None and slow_seconds is not None
    assert fast_seconds < 0.1 and slow_seconds >= 0.3


async def test_discovery_failure_is_a_dns_error(fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """NS discovery against a server that is down raises DnsUnavailable (a DnsError), not LookupError."""
    primary, _secondary = fresh_pair
    down = free_udp_tcp_port(("127.0.0.1",))
    config = dns_config_for(primary, verify={"nameservers": []})
    verifier = Verifier(config, discover_from=("127.0.0.1", down))
    with pytest.raises(DnsUnavailable, match=r"cannot discover the nameservers of example.test"):
        await verifier.servers()

"""Verification at the authoritative servers: a real BIND primary with a real secondary fed by NOTIFY."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from actions.dns.provider import build_verifier
from actions.dns.rfc2136 import Rfc2136Provider
from actions.dns.verify import Verifier
from tests.support.bind import BASELINE, NamedServer, dns_config_for, free_udp_tcp_port, start_named

pytestmark = pytest.mark.real

NAMESERVERS = (("ns1", "127.0.0.1"), ("ns2", "127.0.0.1"))


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[NamedServer, NamedServer]]:
    """A primary that NOTIFYs a secondary (both on loopback, two ports); the zone's NS lists two servers.

    named listens only on addresses configured on an interface, so both use 127.0.0.1.
    """
    secondary_port = free_udp_tcp_port(("127.0.0.1",))
    primary = start_named(nameservers=NAMESERVERS, notify=(("127.0.0.1", secondary_port),))
    try:
        secondary = start_named(port=secondary_port, nameservers=NAMESERVERS, primary=primary,
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
    """A provider and a verifier that discovers the nameservers through the primary."""
    config = dns_config_for(primary, verify={"nameservers": [], "port": primary.port, **verify})
    return Rfc2136Provider(config, "app"), build_verifier(config)


async def test_discovers_every_nameserver_of_the_zone(fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """With no nameservers configured, the zone's NS records and their addresses are used."""
    primary, _secondary = fresh_pair
    _provider, verifier = discovering(primary)
    labels = [s.label for s in await verifier.servers()]
    assert labels == [f"ns1.example.test (127.0.0.1:{primary.port})",
                      f"ns2.example.test (127.0.0.1:{primary.port})"]


async def test_shift_is_verified_at_primary_and_secondary(
        fresh_pair: tuple[NamedServer, NamedServer]) -> None:
    """After a shift both authoritative servers (and a watched resolver) answer the target, each timed."""
    primary, secondary = fresh_pair
    config = dns_config_for(primary, verify={"nameservers": [primary.address, secondary.address],
                                             "resolvers": [primary.address],
                                             "deadline": "5s", "interval": "10ms"})
    dns_provider, verifier = Rfc2136Provider(config, "app"), Verifier(config)
    await verifier.verify(await dns_provider.read())  # the secondary has caught up with the baseline
    after = await dns_provider.shift(await dns_provider.read(), "azure", 2)
    result = await verifier.verify(after)
    assert result.ok, result.message
    assert [c.answer for c in result.checks] == ["azure", "azure", "azure"]
    assert [c.server.kind for c in result.checks] == ["authoritative", "authoritative", "resolver"]
    assert result.checks[2].server.label == f"resolver {primary.address}"
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

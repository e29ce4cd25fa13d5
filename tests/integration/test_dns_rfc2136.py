"""RFC 2136 provider against a real BIND: conditional shifts, races, stale epochs and bad input."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsUnavailable
from actions.dns.rfc2136 import Rfc2136Provider
from tests.support.bind import NamedServer, dns_config_for, start_named

pytestmark = pytest.mark.real

AZURE = {"app/A": ["198.51.100.10"], "api/AAAA": ["2001:db8:1::10"], "web/CNAME": ["azure.example.net."]}


def provider(server: NamedServer, **overrides: object) -> Rfc2136Provider:
    return Rfc2136Provider(dns_config_for(server, **overrides), "app")


async def test_read_returns_records_epoch_and_site(bind_zone: NamedServer) -> None:
    """A read returns every configured record with its TTL, the epoch beside them and the site they match."""
    state = await provider(bind_zone).read()
    assert [(r.name, r.rtype, r.values, r.ttl) for r in state.records] == [
        ("app.example.test.", "A", ("192.0.2.10",), 60),
        ("api.example.test.", "AAAA", ("2001:db8::10",), 60),
        ("web.example.test.", "CNAME", ("gcp.example.net.",), 60),
    ]
    assert (state.epoch.number, state.epoch.site, state.site) == (1, "gcp", "gcp")


async def test_shift_moves_every_record_and_the_epoch_together(bind_zone: NamedServer) -> None:
    """A shift replaces all records with the target's values and TTLs and writes epoch N+1 beside them."""
    dns_provider = provider(bind_zone)
    before = await dns_provider.read()
    after = await dns_provider.shift(before, "azure", 2)
    assert after.site == "azure" and after.epoch.number == 2
    snapshot = bind_zone.snapshot()
    assert {k: snapshot[k] for k in AZURE} == AZURE
    assert snapshot["_failover-epoch.app/TXT"] == [f'"epoch=2 site=azure op={after.epoch.op}"']
    reread = await dns_provider.read()
    assert reread == after
    assert [r.ttl for r in reread.records] == [60, 30, 60]


async def test_two_racing_shifts_exactly_one_wins(bind_zone: NamedServer) -> None:
    """Two shifts at once from one state: one wins, the other gets Conflict with the winner's state."""
    first, second = provider(bind_zone), provider(bind_zone)
    expected = await first.read()
    results = await asyncio.gather(first.shift(expected, "azure", 2), second.shift(expected, "azure", 2),
                                   return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, DnsConflict)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].current == winners[0]
    assert losers[0].current.epoch.op == winners[0].epoch.op
    assert "changed since it was read" in str(losers[0])


async def test_stale_epoch_is_refused_and_changes_nothing(bind_zone: NamedServer) -> None:
    """A shift from a state read before someone else's shift is refused and leaves the zone as it was."""
    dns_provider = provider(bind_zone)
    stale = await dns_provider.read()
    await dns_provider.shift(stale, "azure", 2)
    before = bind_zone.snapshot()
    with pytest.raises(DnsConflict) as info:
        await dns_provider.shift(stale, "gcp", 2)
    assert info.value.current.epoch.number == 2 and info.value.current.site == "azure"
    assert bind_zone.snapshot() == before


async def test_one_record_changed_by_hand_blocks_the_whole_shift(bind_zone: NamedServer) -> None:
    """When one record no longer matches what was read, no record and no epoch is changed."""
    dns_provider = provider(bind_zone)
    expected = await dns_provider.read()
    bind_zone.write((("api", "AAAA", 60, ("2001:db8::99",)),))
    before = bind_zone.snapshot()
    with pytest.raises(DnsConflict) as info:
        await dns_provider.shift(expected, "azure", 2)
    assert info.value.current.site == "mixed"
    assert bind_zone.snapshot() == before


async def test_multi_value_rrset_is_compared_whole(bind_zone: NamedServer) -> None:
    """A record with several values is read and shifted as one RRset."""
    records = [{"name": "multi", "type": "A",
                "targets": {"gcp": ["192.0.2.22", "192.0.2.21"], "azure": ["198.51.100.31"]}}]
    dns_provider = provider(bind_zone, records=records)
    state = await dns_provider.read()
    assert state.records[0].values == ("192.0.2.21", "192.0.2.22") and state.site == "gcp"
    await dns_provider.shift(state, "azure", 2)
    assert bind_zone.query("multi", "A") == ["198.51.100.31"]


async def test_first_shift_creates_the_epoch_record_once(bind_zone: NamedServer) -> None:
    """Without an epoch record the read says epoch 0; of two racing first shifts only one creates it."""
    first = provider(bind_zone, epoch_record="_failover-epoch.fresh")
    second = provider(bind_zone, epoch_record="_failover-epoch.fresh")
    state = await first.read()
    assert state.epoch.number == 0 and state.epoch.text is None
    results = await asyncio.gather(first.shift(state, "azure", 1), second.shift(state, "azure", 1),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["DnsConflict", "DnsState"]
    assert len(bind_zone.query("_failover-epoch.fresh", "TXT")) == 1
    bind_zone.remove("_failover-epoch.fresh")


async def test_epoch_that_does_not_grow_is_a_caller_error(bind_zone: NamedServer) -> None:
    """Asking for a new epoch that is not above the one read raises ValueError before anything is sent."""
    dns_provider = provider(bind_zone)
    state = await dns_provider.read()
    before = bind_zone.snapshot()
    with pytest.raises(ValueError, match=r"must be greater"):
        await dns_provider.shift(state, "azure", 1)
    assert bind_zone.snapshot() == before


async def test_wrong_tsig_secret_is_an_auth_error_naming_key_and_zone(bind_zone: NamedServer) -> None:
    """An update signed with the wrong secret raises DnsAuthError naming key and zone, never the secret."""
    state = await provider(bind_zone).read()
    before = bind_zone.snapshot()
    wrong = base64.b64encode(b"w" * 32).decode()
    bad = provider(bind_zone, provider={"tsig": {"name": "failover-key", "secret": wrong}})
    with pytest.raises(DnsAuthError) as info:
        await bad.shift(state, "azure", 2)
    message = str(info.value)
    assert "failover-key" in message and "example.test" in message
    assert wrong not in message and bind_zone.secret not in message and wrong not in repr(bad)
    assert bind_zone.snapshot() == before


async def test_unknown_key_name_is_an_auth_error(bind_zone: NamedServer) -> None:
    """A key name the server does not know gives DnsAuthError on the read already."""
    bad = provider(bind_zone, provider={"tsig": {"name": "nobody", "secret": bind_zone.secret}})
    with pytest.raises(DnsAuthError, match=r"'nobody'"):
        await bad.read()


async def test_unknown_zone_is_a_config_error(bind_zone: NamedServer) -> None:
    """A zone the server does not serve is reported as a DnsConfigError naming the zone."""
    before = bind_zone.snapshot()
    bad = provider(bind_zone, provider={"zone": "other.test"}, epoch_record=None)
    with pytest.raises(DnsConfigError, match=r"does not serve zone other.test"):
        await bad.read()
    assert bind_zone.snapshot() == before


async def test_missing_record_is_a_config_error(bind_zone: NamedServer) -> None:
    """A configured record that is not in the zone gives DnsConfigError 'record missing'."""
    before = bind_zone.snapshot()
    records = [{"name": "gone", "type": "A", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}}]
    with pytest.raises(DnsConfigError, match=r"record missing: no A record at gone.example.test"):
        await provider(bind_zone, records=records).read()
    assert bind_zone.snapshot() == before and bind_zone.query("gone", "A") == []


async def test_cname_where_a_was_expected_is_a_config_error(bind_zone: NamedServer) -> None:
    """A name configured as A that holds a CNAME is refused with a message naming both types."""
    before = bind_zone.snapshot()
    records = [{"name": "alias", "type": "A", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}}]
    with pytest.raises(DnsConfigError, match=r"alias.example.test is a CNAME .* expected A"):
        await provider(bind_zone, records=records).read()
    assert bind_zone.snapshot() == before


async def test_unreadable_epoch_record_is_a_config_error(bind_zone: NamedServer) -> None:
    """An epoch TXT that does not say 'epoch=N' is refused rather than guessed."""
    bind_zone.write((("_failover-epoch.app", "TXT", 60, ('"hello"',)),))
    with pytest.raises(DnsConfigError, match=r"not 'epoch=N site=S'"):
        await provider(bind_zone).read()


@contextlib.asynccontextmanager
async def tcp_server(handler: object) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_hanging_server_gives_unavailable_after_bounded_retries(bind_zone: NamedServer) -> None:
    """A server that accepts and never answers costs attempts x timeout, then DnsUnavailable; no change."""
    state = await provider(bind_zone).read()
    before = bind_zone.snapshot()
    held: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    async with tcp_server(hang) as address:
        hung = provider(bind_zone, provider={"servers": [address], "timeout": "200ms", "attempts": 3})
        started = time.monotonic()
        with pytest.raises(DnsUnavailable, match=r"no answer after 3 tries .*timeout after 0.2s"):
            await hung.shift(state, "azure", 2)
        assert time.monotonic() - started < 2.0
        for writer in held:
            writer.close()
    assert bind_zone.snapshot() == before


async def test_lost_reply_is_retried_and_recognised_as_our_own_write(bind_zone: NamedServer) -> None:
    """When the server applied the update but the reply was lost, the retry finds our own op and succeeds."""
    dns_provider = provider(bind_zone)
    state = await dns_provider.read()
    connections = 0

    async def drop_first_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(bind_zone.host, bind_zone.port)
        size = await reader.readexactly(2)
        upstream_writer.write(size + await reader.readexactly(int.from_bytes(size, "big")))
        reply_size = await upstream_reader.readexactly(2)
        reply = await upstream_reader.readexactly(int.from_bytes(reply_size, "big"))
        if connections > 1:
            writer.write(reply_size + reply)
            await writer.drain()
        upstream_writer.close()
        writer.close()

    async with tcp_server(drop_first_reply) as address:
        flaky = provider(bind_zone, provider={"servers": [address]})
        after = await flaky.shift(state, "azure", 2)
    assert connections >= 3  # the lost update, its retry, then the read-back
    assert after.site == "azure" and after.epoch.number == 2
    assert (await dns_provider.read()).epoch.op == after.epoch.op


@pytest.mark.parametrize("algorithm", ["hmac-sha512", "hmac-sha1"])
async def test_other_tsig_algorithms_work(algorithm: str) -> None:
    """Keys of other common HMAC algorithms sign reads and updates that BIND accepts."""
    server = start_named(algorithm=algorithm)
    try:
        dns_provider = provider(server)
        after = await dns_provider.shift(await dns_provider.read(), "azure", 2)
        assert after.site == "azure" and server.query("app", "A") == ["198.51.100.10"]
    finally:
        server.stop()

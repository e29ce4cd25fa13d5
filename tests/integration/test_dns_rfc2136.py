"""RFC 2136 provider against a real BIND: conditional shifts, races, stale epochs and bad input."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsError, DnsUnavailable
from actions.dns.rfc2136 import Rfc2136Provider
from actions.dns.state import DnsState, Epoch, RecordState
from tests.support.bind import NamedServer, dns_config_for, free_udp_tcp_port, start_named

pytestmark = pytest.mark.real

AZURE = {"app/A": ["198.51.100.10"], "api/AAAA": ["2001:db8:1::10"], "web/CNAME": ["azure.example.net."]}


def provider(server: NamedServer, **overrides: object) -> Rfc2136Provider:
    return Rfc2136Provider(dns_config_for(server, **overrides), "app")


def opcode_is_update(wire: bytes) -> bool:
    return len(wire) > 2 and (wire[2] >> 3) & 0x0F == 5


@contextlib.asynccontextmanager
async def reply_proxy(upstream: NamedServer, deliver: Callable[[bytes], bool]) -> AsyncIterator[str]:
    """A TCP proxy to ``upstream`` that forwards every request but returns a reply only if ``deliver(request)``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(upstream.host, upstream.port)
        try:
            size = await reader.readexactly(2)
            request = await reader.readexactly(int.from_bytes(size, "big"))
            upstream_writer.write(size + request)
            reply_size = await upstream_reader.readexactly(2)
            reply = await upstream_reader.readexactly(int.from_bytes(reply_size, "big"))
            if deliver(request):
                writer.write(reply_size + reply)
                await writer.drain()
        finally:
            upstream_writer.close()
            writer.close()

    async with tcp_server(handle) as address:
        yield address


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
    assert losers[0].found == winners[0].describe()
    assert losers[0].op == winners[0].epoch.op
    assert "changed since it was read" in str(losers[0])


async def test_stale_epoch_is_refused_and_changes_nothing(bind_zone: NamedServer) -> None:
    """A shift from a state read before someone else's shift is refused and leaves the zone as it was."""
    dns_provider = provider(bind_zone)
    stale = await dns_provider.read()
    await dns_provider.shift(stale, "azure", 2)
    before = bind_zone.snapshot()
    with pytest.raises(DnsConflict) as info:
        await dns_provider.shift(stale, "gcp", 2)
    assert info.value.epoch == 2 and info.value.site == "azure"
    assert bind_zone.snapshot() == before


async def test_one_record_changed_by_hand_blocks_the_whole_shift(bind_zone: NamedServer) -> None:
    """When one record no longer matches what was read, no record and no epoch is changed."""
    dns_provider = provider(bind_zone)
    expected = await dns_provider.read()
    bind_zone.write((("api", "AAAA", 60, ("2001:db8::99",)),))
    before = bind_zone.snapshot()
    with pytest.raises(DnsConflict) as info:
        await dns_provider.shift(expected, "azure", 2)
    assert info.value.site == "mixed"
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


async def test_epoch_that_is_not_the_next_one_is_a_caller_error(bind_zone: NamedServer) -> None:
    """Asking for a new epoch that is not above the one read raises ValueError before anything is sent."""
    dns_provider = provider(bind_zone)
    state = await dns_provider.read()
    before = bind_zone.snapshot()
    with pytest.raises(ValueError, match=r"must be exactly one more than the epoch read \(1\)"):
        await dns_provider.shift(state, "azure", 1)
    with pytest.raises(ValueError, match=r"must be exactly one more"):
        await dns_provider.shift(state, "azure", 3)
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
    """A key name the server does not know gives DnsAuthError on the read and the shift; nothing changes."""
    state = await provider(bind_zone).read()
    before = bind_zone.snapshot()
    bad = provider(bind_zone, provider={"tsig": {"name": "nobody", "secret": bind_zone.secret}})
    with pytest.raises(DnsAuthError, match=r"'nobody'"):
        await bad.read()
    with pytest.raises(DnsAuthError, match=rf"{bind_zone.address} rejected TSIG key 'nobody'"):
        await bad.shift(state, "azure", 2)
    assert bind_zone.snapshot() == before


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
    before = bind_zone.snapshot()
    with pytest.raises(DnsConfigError, match=r"not 'epoch=N site=S'"):
        await provider(bind_zone).read()
    assert bind_zone.snapshot() == before and before["_failover-epoch.app/TXT"] == ['"hello"']


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


async def test_lost_update_replies_are_read_back_as_success(bind_zone: NamedServer) -> None:
    """Every reply to the update is lost (it was applied): after the retries one read-back finds our op."""
    state = await provider(bind_zone).read()
    async with reply_proxy(bind_zone, lambda request: not opcode_is_update(request)) as address:
        after = await provider(bind_zone, provider={"servers": [address]}).shift(state, "azure", 2)
    assert after.site == "azure" and after.epoch.number == 2
    assert bind_zone.query("_failover-epoch.app", "TXT") == [f'"{after.epoch.text}"']


async def test_caller_retry_after_unavailable_recognises_its_own_write(bind_zone: NamedServer) -> None:
    """All replies lost: DnsUnavailable although applied; the caller's retry of the same shift succeeds."""
    state = await provider(bind_zone).read()
    delivering = False
    async with reply_proxy(bind_zone, lambda _request: delivering) as address:
        flaky = provider(bind_zone, provider={"servers": [address]})
        with pytest.raises(DnsUnavailable, match=rf"update of zone example.test at {address}: no answer"):
            await flaky.shift(state, "azure", 2)
        assert bind_zone.query("app", "A") == ["198.51.100.10"]  # it was applied
        delivering = True
        after = await flaky.shift(state, "azure", 2)  # same provider, same expected state and epoch
    assert after.site == "azure" and after.epoch.number == 2
    assert after.epoch.op == (await provider(bind_zone).read()).epoch.op
    with pytest.raises(DnsConflict):  # a different executor with the same plan did not write it
        await provider(bind_zone).shift(state, "azure", 2)


async def test_explicit_op_and_already_applied_state_are_success(bind_zone: NamedServer) -> None:
    """A caller's op makes a new provider recognise the write; shifting from a read showing it is a no-op."""
    state = await provider(bind_zone).read()
    async with reply_proxy(bind_zone, lambda _request: False) as address:
        with pytest.raises(DnsUnavailable):
            await provider(bind_zone, provider={"servers": [address]}).shift(state, "azure", 2, op="run-7")
    fresh = provider(bind_zone)
    after = await fresh.shift(state, "azure", 2, op="run-7")
    assert after.epoch.op == "run-7" and after.site == "azure"
    current = await fresh.read()
    before = bind_zone.snapshot()
    assert await fresh.shift(current, "azure", 2, op="run-7") == current  # already in place: success
    assert bind_zone.snapshot() == before
    with pytest.raises(ValueError, match=r"exactly one more"):  # someone else's epoch 2 is not ours
        await fresh.shift(current, "azure", 2, op="run-8")


@pytest.fixture(scope="module")
def secondary(bind_server: NamedServer) -> Iterator[NamedServer]:
    """A secondary of the module's primary (zone transferred at start, same key): it refuses updates."""
    server = start_named(port=free_udp_tcp_port(("127.0.0.1",)), primary=bind_server, secret=bind_server.secret)
    try:
        yield server
    finally:
        server.stop()


async def test_updates_go_only_to_the_primary(bind_zone: NamedServer, secondary: NamedServer) -> None:
    """With the primary silent, the update is not retried at the secondary: DnsUnavailable names the primary."""
    state = await provider(bind_zone).read()
    before = bind_zone.snapshot()
    async with reply_proxy(bind_zone, opcode_is_update) as silent_primary:  # reads lost, updates answered
        pass
    # the proxy is closed now: connections to it are refused, like a primary that is down
    dns_provider = provider(bind_zone, provider={"servers": [silent_primary, secondary.address], "attempts": 3})
    with pytest.raises(DnsUnavailable) as info:
        await dns_provider.shift(state, "azure", 2)
    message = str(info.value)
    assert silent_primary in message and secondary.address not in message
    assert bind_zone.snapshot() == before


async def test_reads_fall_back_to_a_secondary_only_when_the_primary_is_down(
        bind_zone: NamedServer, secondary: NamedServer) -> None:
    """A read goes to the primary; with the primary unreachable the next server (one try) answers it."""
    async with reply_proxy(bind_zone, lambda _request: True) as down:
        pass
    state = await provider(bind_zone, provider={"servers": [down, secondary.address]}).read()
    assert list(state.records[0].values) == secondary.query("app", "A")  # the secondary's (maybe stale) copy
    assert state.epoch.text is not None and [f'"{state.epoch.text}"'] == secondary.query("_failover-epoch.app", "TXT")
    dead = f"127.0.0.1:{free_udp_tcp_port(('127.0.0.1',))}"
    with pytest.raises(DnsUnavailable, match=rf"no server could be read: {down}: .*; {dead}: .*no answer after 1 try"):
        await provider(bind_zone, provider={"servers": [down, dead]}).read()


async def test_errors_name_the_server_that_answered(bind_zone: NamedServer, secondary: NamedServer) -> None:
    """A refusal is reported with the address of the server that refused, not the first configured one."""
    async with reply_proxy(bind_zone, lambda _request: True) as down:
        pass
    other_zone = provider(bind_zone, provider={"servers": [down, bind_zone.address], "zone": "other.test"},
                          epoch_record=None)
    with pytest.raises(DnsUnavailable, match=rf"{bind_zone.address} does not serve zone other.test"):
        await other_zone.read()


async def test_update_refused_is_an_auth_error(bind_zone: NamedServer) -> None:
    """A server that refuses updates for this key answers REFUSED: DnsAuthError naming server, key and zone."""
    frozen = start_named(allow_update=False)
    try:
        dns_provider = provider(frozen)
        state = await dns_provider.read()
        before = frozen.snapshot()
        with pytest.raises(DnsAuthError, match=rf"{frozen.address} refused the update signed with TSIG key "
                                               r"'failover-key' \(hmac-sha256\) for zone example.test \(REFUSED\)"):
            await dns_provider.shift(state, "azure", 2)
        assert frozen.snapshot() == before
    finally:
        frozen.stop()


async def test_update_notauth_is_an_auth_error(bind_zone: NamedServer) -> None:
    """An update for a zone the server is not authoritative for (NOTAUTH) is a DnsAuthError; nothing changes."""
    records = [{"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}}]
    dns_provider = provider(bind_zone, provider={"zone": "other.test"}, records=records, epoch_record=None)
    expected = DnsState("other.test", (RecordState("app.other.test.", "A", 60, ("192.0.2.10",), "gcp"),),
                        Epoch(1, "gcp", None, "epoch=1 site=gcp"), "_failover-epoch.app.other.test.")
    before = bind_zone.snapshot()
    refusal = rf"{bind_zone.address} refused the update .* for zone other.test \(NOTAUTH\)"
    with pytest.raises(DnsAuthError, match=refusal):
        await dns_provider.shift(expected, "azure", 2)
    assert bind_zone.snapshot() == before


async def test_backoff_doubles_and_is_capped(bind_zone: NamedServer) -> None:
    """Retries wait backoff, then twice that, and so on, never more than 2 s; the last try is not followed by a wait."""
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    state = await provider(bind_zone).read()
    down = f"127.0.0.1:{free_udp_tcp_port(('127.0.0.1',))}"
    config = dns_config_for(bind_zone, provider={"servers": [down], "attempts": 6, "backoff": "500ms"})
    with pytest.raises(DnsUnavailable, match=r"no answer after 6 tries \(connect refused by"):
        await Rfc2136Provider(config, "app", sleep=record).shift(state, "azure", 2)
    assert pauses == [0.5, 1.0, 2.0, 2.0, 2.0]  # the one read-back after it is a single try: no pause


async def test_tsig_secret_is_in_no_repr_of_the_provider(bind_zone: NamedServer) -> None:
    """Neither the provider nor any of its attributes shows the TSIG secret when printed."""
    dns_provider = provider(bind_zone)
    await dns_provider.read()
    assert bind_zone.secret not in repr(dns_provider) and bind_zone.secret not in repr(vars(dns_provider))
    assert bind_zone.secret not in repr(bind_zone)
    assert isinstance(DnsError("x"), Exception)


async def test_validate_proves_key_and_conditions_and_changes_nothing(bind_zone: NamedServer) -> None:
    """A shadow drill's validation: the signed conditional update is accepted up to its sentinel
    prerequisite; the zone is untouched; a moved zone is a conflict; a wrong secret an auth error."""
    dns_provider = provider(bind_zone)
    state = await dns_provider.read()
    before = bind_zone.snapshot()
    sentence = await dns_provider.validate(state, "azure", 2)
    assert "accepted" in sentence and "nothing changed" in sentence
    assert bind_zone.snapshot() == before
    moved = await provider(bind_zone).shift(state, "azure", 2)
    with pytest.raises(DnsConflict) as info:
        await dns_provider.validate(state, "azure", 2)
    assert info.value.epoch == 2
    assert "accepted" in await dns_provider.validate(moved, "gcp", 3)
    wrong = base64.b64encode(b"v" * 32).decode()
    with pytest.raises(DnsAuthError):
        await provider(bind_zone, provider={"tsig": {"name": "failover-key", "secret": wrong}}).validate(
            moved, "gcp", 3)


async def test_retime_changes_only_ttls_conditionally(bind_zone: NamedServer) -> None:
    """A switchover lowers the TTL ahead of the move: values and epoch stay, a moved zone is a conflict."""
    dns_provider = provider(bind_zone)
    state = await dns_provider.read()
    lowered = await dns_provider.retime(state, {r.name: 5 for r in state.records})
    reread = await dns_provider.read()
    assert [r.ttl for r in reread.records] == [5, 5, 5] == [r.ttl for r in lowered.records]
    assert [r.values for r in reread.records] == [r.values for r in state.records]
    assert reread.epoch == state.epoch
    await provider(bind_zone).shift(reread, "azure", 2)  # the zone moves on: the old read no longer holds
    with pytest.raises(DnsConflict):
        await dns_provider.retime(state, {r.name: 7 for r in state.records})

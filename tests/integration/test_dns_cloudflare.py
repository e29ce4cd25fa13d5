"""Cloudflare provider through the real SDK against a local v4 fake: CAS by batch, faults, env vars."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cloudflare import AsyncCloudflare

from actions.dns import cloudflare as cloudflare_provider
from actions.dns.cloudflare import CloudflareProvider
from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsError, DnsUnavailable
from actions.dns.provider import build_provider
from engine.config.dns import DnsConfig
from tests.support.cloudflare_fake import CloudflareFake

ZONE = "example.com"
APP, API, WWW = "app.example.com", "api.example.com", "www.example.com"
EPOCH = "_failover-epoch.app.example.com"


@pytest.fixture
async def fake() -> AsyncIterator[CloudflareFake]:
    """A fresh fake with the zone, three gcp records, the epoch record and 150 unrelated records."""
    server = CloudflareFake(token="cf-test-token-123")
    server.add_zone("other.org")
    server.add_zone(ZONE)
    server.add_record(ZONE, APP, "A", "192.0.2.10", proxied=True, comment="front door")
    server.add_record(ZONE, API, "AAAA", "2001:db8::10")
    server.add_record(ZONE, WWW, "CNAME", "gcp.example.net")
    server.add_record(ZONE, EPOCH, "TXT", '"epoch=1 site=gcp"')
    server.add_record(ZONE, "alias.example.com", "CNAME", "app.example.com")
    for index in range(150):
        server.add_record(ZONE, f"host{index}.example.com", "A", f"10.0.{index // 200}.{index % 200 + 1}")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def config(fake: CloudflareFake, **overrides: Any) -> DnsConfig:
    provider = {"type": "cloudflare", "zone": ZONE, "api_token": fake.token, "base_url": fake.base_url,
                "timeout": "2s", "attempts": 1, **overrides.pop("provider", {})}
    data: dict[str, Any] = {
        "provider": provider,
        "records": [
            {"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}},
            {"name": "api", "type": "AAAA", "ttl": "30s",
             "targets": {"gcp": ["2001:db8::10"], "azure": ["2001:db8:1::10"]}},
            {"name": "www", "type": "CNAME",
             "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}},
        ],
        "epoch_record": "_failover-epoch.app",
        **overrides,
    }
    return DnsConfig.model_validate(data)


@pytest.fixture
async def providers(fake: CloudflareFake) -> AsyncIterator[list[CloudflareProvider]]:
    """A list the test fills with providers; each is closed at teardown."""
    made: list[CloudflareProvider] = []
    yield made
    for provider in made:
        await provider.aclose()


def make(providers: list[CloudflareProvider], fake: CloudflareFake, **overrides: Any) -> CloudflareProvider:
    provider = CloudflareProvider(config(fake, **overrides), "app")
    providers.append(provider)
    return provider


async def test_read_lists_each_name_between_two_epoch_reads(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """A read finds the zone by name, reads the epoch, lists each record by exact name, reads the epoch again."""
    state = await make(providers, fake).read()
    assert [(r.name, r.rtype, r.values, r.ttl) for r in state.records] == [
        ("app.example.com.", "A", ("192.0.2.10",), 60),
        ("api.example.com.", "AAAA", ("2001:db8::10",), 60),
        ("www.example.com.", "CNAME", ("gcp.example.net.",), 60)]
    assert (state.epoch.number, state.epoch.site, state.site) == (1, "gcp", "gcp")
    lists = fake.requests("GET", "/dns_records")
    assert len(lists) == 5
    assert all(s.query.get("per_page") == "100" and "name.exact" in s.query for s in lists)
    assert lists[0].query["name.exact"] == lists[-1].query["name.exact"] == EPOCH
    assert fake.requests("GET", "/zones")[0].query["name"] == ZONE


async def test_shift_is_one_batch_that_moves_records_and_epoch(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """A shift sends one batch: records patched (comment and proxy kept), epoch N+1 written, ids returned."""
    provider = make(providers, fake)
    after = await provider.shift(await provider.read(), "azure", 2)
    assert len(fake.requests("POST", "/batch")) == 1
    assert fake.values(ZONE, APP) == [("A", "198.51.100.10")]
    assert fake.values(ZONE, API) == [("AAAA", "2001:db8:1::10")]
    assert fake.values(ZONE, WWW) == [("CNAME", "azure.example.net.")]
    assert fake.values(ZONE, EPOCH) == [("TXT", f'"epoch=2 site=azure op={after.epoch.op}"')]
    app = next(r for r in fake.records[fake.zone_id(ZONE)].values() if r["name"] == APP)
    assert (app["proxied"], app["comment"], app["ttl"]) == (True, "front door", 60)
    assert await provider.read() == after
    back = await provider.shift(after, "gcp", 3)  # the ids returned by the batch are the next token
    assert back.site == "gcp" and fake.values(ZONE, APP) == [("A", "192.0.2.10")]


async def test_a_name_with_more_than_one_page_is_read_whole(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """A name with 150 records is listed page by page (by result_info), not cut at the first 100."""
    many = [f"198.18.{i // 200}.{i % 200 + 1}" for i in range(150)]
    for value in many:
        fake.add_record(ZONE, "many.example.com", "A", value)
    records = [{"name": "many", "type": "A", "targets": {"gcp": many, "azure": ["198.51.100.77"]}}]
    state = await make(providers, fake, records=records).read()
    assert len(state.records[0].values) == 150 and state.site == "gcp"
    pages = [s.query["page"] for s in fake.requests("GET", "/dns_records")
             if s.query.get("name.exact") == "many.example.com"]
    assert pages == ["1", "2"]


async def test_read_repeats_when_a_shift_lands_in_the_middle(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """A shift committed while the records are listed changes the epoch id: the read starts over, never torn."""
    rival = make(providers, fake)
    won = await rival.shift(await rival.read(), "azure", 2)
    fired: list[bool] = []

    def shift_back_during_the_read(request: object) -> None:
        query = getattr(request, "query", {})
        if query.get("name.exact") == APP and not fired:
            fired.append(True)  # a rival's batch, as the fake applies it: records and a new epoch id
            for name, rtype, value in ((APP, "A", "192.0.2.10"), (API, "AAAA", "2001:db8::10"),
                                       (WWW, "CNAME", "gcp.example.net")):
                fake.records[fake.zone_id(ZONE)][fake.record_id(ZONE, name, rtype)]["content"] = value
            fake.remove_record(ZONE, fake.record_id(ZONE, EPOCH, "TXT"))
            fake.add_record(ZONE, EPOCH, "TXT", '"epoch=3 site=gcp op=rival"')

    fake.hooks.append(shift_back_during_the_read)
    state = await make(providers, fake).read()
    assert fired and won.site == "azure"
    assert (state.epoch.number, state.site) == (3, "gcp")
    assert len(fake.requests("GET", "/dns_records")) > 5 + 5  # the rival's shift, then more than one pass


async def test_record_changed_by_hand_after_the_read_is_a_conflict(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """An operator's edit between read and shift (same record id) is not overwritten: Conflict, no batch."""
    provider = make(providers, fake)
    state = await provider.read()
    fake.records[fake.zone_id(ZONE)][fake.record_id(ZONE, APP, "A")]["content"] = "203.0.113.99"
    before = fake.snapshot(ZONE)
    with pytest.raises(DnsConflict) as info:
        await provider.shift(state, "azure", 2)
    assert "app.example.com A 203.0.113.99" in info.value.found
    assert info.value.site == "mixed" and info.value.expected == state.describe()
    assert fake.snapshot(ZONE) == before and fake.requests("POST", "/batch") == []


async def test_torn_expected_state_is_a_conflict(fake: CloudflareFake,
                                                 providers: list[CloudflareProvider]) -> None:
    """Records of one moment with the epoch of another are not the zone: Conflict, nothing written."""
    first, second = make(providers, fake), make(providers, fake)
    old = await first.read()
    await second.shift(await second.read(), "azure", 2)
    torn = dataclasses.replace(old, epoch=(await first.read()).epoch)  # gcp records, epoch 2 (azure)
    before = fake.snapshot(ZONE)
    with pytest.raises(DnsConflict) as info:
        await first.shift(torn, "gcp", 3)
    assert info.value.site == "azure" and info.value.epoch == 2
    assert fake.snapshot(ZONE) == before and len(fake.requests("POST", "/batch")) == 1


async def test_record_sets_grow_and_shrink_between_sites(fake: CloudflareFake,
                                                         providers: list[CloudflareProvider]) -> None:
    """A name with two values at one site and one at the other is shifted both ways in single batches."""
    fake.add_record(ZONE, "multi.example.com", "A", "192.0.2.21")
    fake.add_record(ZONE, "multi.example.com", "A", "192.0.2.22")
    records = [{"name": "multi", "type": "A",
                "targets": {"gcp": ["192.0.2.21", "192.0.2.22"], "azure": ["198.51.100.31"]}}]
    provider = make(providers, fake, records=records)
    state = await provider.read()
    assert state.site == "gcp" and len(state.records[0].refs) == 2
    state = await provider.shift(state, "azure", 2)
    assert fake.values(ZONE, "multi.example.com") == [("A", "198.51.100.31")]
    state = await provider.shift(state, "gcp", 3)
    assert fake.values(ZONE, "multi.example.com") == [("A", "192.0.2.21"), ("A", "192.0.2.22")]
    assert await provider.read() == state and len(fake.requests("POST", "/batch")) == 2


async def test_two_racing_shifts_exactly_one_wins(fake: CloudflareFake,
                                                  providers: list[CloudflareProvider]) -> None:
    """Two shifts from the same read: one batch wins, the other gets Conflict with the winner's state."""
    first, second = make(providers, fake), make(providers, fake)
    expected = await first.read()
    results = await asyncio.gather(first.shift(expected, "azure", 2), second.shift(expected, "azure", 2),
                                   return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, DnsConflict)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].found == winners[0].describe() and losers[0].op == winners[0].epoch.op
    assert len(fake.values(ZONE, EPOCH)) == 1


async def test_stale_epoch_is_refused_and_changes_nothing(fake: CloudflareFake,
                                                          providers: list[CloudflareProvider]) -> None:
    """A shift from a state older than the last shift is refused and leaves every record alone."""
    provider = make(providers, fake)
    stale = await provider.read()
    await provider.shift(stale, "azure", 2)
    before = fake.snapshot(ZONE)
    with pytest.raises(DnsConflict) as info:
        await provider.shift(stale, "gcp", 2)
    assert info.value.epoch == 2 and info.value.site == "azure"
    assert fake.snapshot(ZONE) == before


async def test_first_shift_without_epoch_record_uses_record_ids_as_token(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """Without an epoch record, racing first shifts consume the records' ids: one wins, one conflicts."""
    first = make(providers, fake, epoch_record="_failover-epoch.fresh")
    second = make(providers, fake, epoch_record="_failover-epoch.fresh")
    state = await first.read()
    assert state.epoch.number == 0
    results = await asyncio.gather(first.shift(state, "azure", 1), second.shift(state, "azure", 1),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["DnsConflict", "DnsState"]
    assert len(fake.values(ZONE, "_failover-epoch.fresh.example.com")) == 1
    app = next(r for r in fake.records[fake.zone_id(ZONE)].values() if r["name"] == APP)
    assert (app["content"], app["proxied"], app["comment"]) == ("198.51.100.10", True, "front door")


async def test_429_with_retry_after_is_retried(fake: CloudflareFake,
                                               providers: list[CloudflareProvider]) -> None:
    """A 429 with Retry-After is waited out and retried by the SDK within the configured attempts."""
    provider = make(providers, fake, provider={"attempts": 2})
    state = await provider.read()
    fake.fail(429, method="POST", retry_after=0.05)
    after = await provider.shift(state, "azure", 2)
    assert after.site == "azure" and len(fake.requests("POST", "/batch")) == 2


async def test_persistent_5xx_is_unavailable_and_changes_nothing(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """Repeated 503s end in DnsUnavailable after the bounded tries, with the zone unchanged."""
    provider = make(providers, fake, provider={"attempts": 2})
    state = await provider.read()
    before = fake.snapshot(ZONE)
    fake.fail(503, method="POST", retry_after=0.01, times=5)
    with pytest.raises(DnsUnavailable, match=r"status 503 after 2 tries"):
        await provider.shift(state, "azure", 2)
    assert fake.snapshot(ZONE) == before and len(fake.requests("POST", "/batch")) == 2


async def test_lost_batch_reply_is_recognised_as_our_own_write(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """A batch applied whose reply was a 503: the SDK's retry is refused, the read-back shows our op."""
    provider = make(providers, fake, provider={"attempts": 2})
    state = await provider.read()
    fake.fail(503, method="POST", retry_after=0.01, apply_first=True)
    after = await provider.shift(state, "azure", 2)
    assert after.site == "azure" and after.epoch.number == 2
    assert len(fake.requests("POST", "/batch")) == 2


async def test_lost_reply_without_retries_is_read_back_as_success(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """With one try, a batch applied whose answer was a 503 is read back once: our op is there, success."""
    provider = make(providers, fake, provider={"attempts": 1})
    state = await provider.read()
    fake.fail(503, method="POST", apply_first=True)
    after = await provider.shift(state, "azure", 2)
    assert after.site == "azure" and after.epoch.number == 2
    assert fake.values(ZONE, EPOCH) == [("TXT", f'"{after.epoch.text}"')]
    assert len(fake.requests("POST", "/batch")) == 1


async def test_caller_retry_after_unavailable_recognises_its_own_write(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """Batch applied, answer and read-back lost: DnsUnavailable; the caller's retry (same state) succeeds."""
    provider = make(providers, fake)
    state = await provider.read()
    fake.fail(503, method="POST", apply_first=True,
              then=lambda: fake.fail(503, method="GET", times=100))
    with pytest.raises(DnsUnavailable, match=r"shift of zone example.com: Cloudflare status 503"):
        await provider.shift(state, "azure", 2)
    fake.faults.clear()
    after = await provider.shift(state, "azure", 2)  # same provider, same expected state and epoch
    assert after.site == "azure" and after.epoch.number == 2
    assert len(fake.requests("POST", "/batch")) == 1
    again = await provider.shift(await provider.read(), "azure", 2)  # it reads its own write: still ours
    assert again == after and len(fake.requests("POST", "/batch")) == 1
    rival = make(providers, fake)  # another provider (another executor) with the same plan: it lost
    with pytest.raises(DnsConflict):
        await rival.shift(state, "azure", 2)


async def test_explicit_op_lets_a_new_provider_recognise_the_write(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """A caller that passes its operation's op gets success from a fresh provider after a lost answer."""
    first = make(providers, fake)
    state = await first.read()
    fake.fail(503, method="POST", apply_first=True, then=lambda: fake.fail(503, method="GET", times=100))
    with pytest.raises(DnsUnavailable):
        await first.shift(state, "azure", 2, op="run-42")
    fake.faults.clear()
    after = await make(providers, fake).shift(state, "azure", 2, op="run-42")
    assert after.epoch.op == "run-42" and after.site == "azure"
    with pytest.raises(DnsConflict):
        await make(providers, fake).shift(state, "azure", 2, op="run-43")


async def test_retry_after_longer_than_the_budget_is_unavailable_at_once(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """A 429 asking for 30 s is not slept on: DnsUnavailable names the wait; nothing changes."""
    provider = make(providers, fake, provider={"attempts": 3})
    state = await provider.read()
    before = fake.snapshot(ZONE)
    fake.fail(429, method="POST", retry_after=30)
    started = time.monotonic()
    with pytest.raises(DnsUnavailable, match=r"rate limit \(429\) asks to retry after 30s, longer than the 8s"):
        await provider.shift(state, "azure", 2)
    assert time.monotonic() - started < 2.0
    assert fake.snapshot(ZONE) == before and len(fake.requests("POST", "/batch")) == 1


async def test_refusal_of_the_zone_lookup_is_a_dns_error(fake: CloudflareFake,
                                                         providers: list[CloudflareProvider]) -> None:
    """A 400 from /zones is a DnsError naming the zone and Cloudflare's error, not a stray exception."""
    fake.fail(400, method="GET", path_contains="/zones")
    with pytest.raises(DnsError, match=r"Cloudflare refused the lookup of zone example.com \(400 1400"):
        await make(providers, fake).read()


async def test_new_epoch_must_be_exactly_one_more(fake: CloudflareFake,
                                                  providers: list[CloudflareProvider]) -> None:
    """Skipping an epoch is a caller error, raised before anything is sent."""
    provider = make(providers, fake)
    state = await provider.read()
    with pytest.raises(ValueError, match=r"must be exactly one more than the epoch read \(1\)"):
        await provider.shift(state, "azure", 3)
    assert fake.requests("POST", "/batch") == []


async def test_success_false_is_not_taken_for_success(fake: CloudflareFake,
                                                      providers: list[CloudflareProvider]) -> None:
    """HTTP 200 with success: false (the SDK returns None) is an error on read and on shift."""
    provider = make(providers, fake)
    state = await provider.read()
    before = fake.snapshot(ZONE)
    fake.fail(method="POST", success_false=True)
    with pytest.raises(DnsUnavailable, match=r"success: false .*nothing changed"):
        await provider.shift(state, "azure", 2)
    assert fake.snapshot(ZONE) == before
    fake.fail(method="GET", path_contains="/dns_records", success_false=True)
    with pytest.raises(DnsUnavailable, match=r"success: false"):
        await provider.read()


async def test_bad_token_is_an_auth_error_without_the_token(fake: CloudflareFake,
                                                            providers: list[CloudflareProvider]) -> None:
    """A 401 or 403 becomes DnsAuthError naming the zone; the token is in no message or repr."""
    state = await make(providers, fake).read()
    before = fake.snapshot(ZONE)
    wrong = make(providers, fake, provider={"api_token": "not-the-token-456"})
    with pytest.raises(DnsAuthError, match=r"refused the API token for zone example.com \(401\)") as info:
        await wrong.read()
    assert "not-the-token-456" not in str(info.value) and "not-the-token-456" not in repr(wrong)
    with pytest.raises(DnsAuthError):
        await wrong.shift(state, "azure", 2)
    assert fake.snapshot(ZONE) == before
    fake.forbidden_tokens.add("read-only-789")
    limited = make(providers, fake, provider={"api_token": "read-only-789"})
    with pytest.raises(DnsAuthError, match=r"\(403\)"):
        await limited.read()


async def test_unknown_zone_missing_record_and_cname_are_config_errors(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """Unknown zone, a missing record and a CNAME where A was expected are DnsConfigErrors; nothing changes."""
    before = fake.snapshot(ZONE)
    with pytest.raises(DnsConfigError, match=r"unknown zone: Cloudflare has no zone nothing.example"):
        await make(providers, fake, provider={"zone": "nothing.example"}).read()
    missing = [{"name": "gone", "type": "A", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}}]
    with pytest.raises(DnsConfigError, match=r"record missing: no A record at gone.example.com"):
        await make(providers, fake, records=missing).read()
    alias = [{"name": "alias", "type": "A", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}}]
    with pytest.raises(DnsConfigError, match=r"alias.example.com is a CNAME .* expected A"):
        await make(providers, fake, records=alias).read()
    assert fake.snapshot(ZONE) == before and fake.requests("POST", "/batch") == []


async def test_hanging_api_times_out_and_changes_nothing(fake: CloudflareFake,
                                                         providers: list[CloudflareProvider]) -> None:
    """An API that never answers the batch costs one timeout, then DnsUnavailable; nothing changes."""
    provider = make(providers, fake, provider={"timeout": "300ms"})
    state = await provider.read()
    before = fake.snapshot(ZONE)
    fake.fail(method="POST", hang=True)
    started = time.monotonic()
    with pytest.raises(DnsUnavailable, match=r"timeout after 1 try"):
        await provider.shift(state, "azure", 2)
    assert time.monotonic() - started < 2.0
    assert fake.snapshot(ZONE) == before


async def test_environment_cannot_override_the_default_url(
        fake: CloudflareFake, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no base_url configured the provider uses DEFAULT_BASE_URL, never CLOUDFLARE_BASE_URL."""
    official = CloudflareFake(token=fake.token)  # stands in for api.cloudflare.com
    official.add_zone(ZONE)
    for name, rtype, value in ((APP, "A", "192.0.2.10"), (API, "AAAA", "2001:db8::10"),
                               (WWW, "CNAME", "gcp.example.net"), (EPOCH, "TXT", '"epoch=7 site=gcp"')):
        official.add_record(ZONE, name, rtype, value)
    await official.start()
    monkeypatch.setattr(cloudflare_provider, "DEFAULT_BASE_URL", official.base_url)
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", fake.base_url)
    provider = CloudflareProvider(config(fake, provider={"base_url": None}), "app")
    try:
        state = await provider.read()
    finally:
        await provider.aclose()
        await official.stop()
    assert state.epoch.number == 7 and fake.seen == [] and official.seen


async def test_environment_cannot_override_the_config(
        fake: CloudflareFake, providers: list[CloudflareProvider], monkeypatch: pytest.MonkeyPatch) -> None:
    """CLOUDFLARE_* variables change neither the URL nor the credentials the configured provider sends."""
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "env-token")
    monkeypatch.setenv("CLOUDFLARE_API_KEY", "env-key")
    monkeypatch.setenv("CLOUDFLARE_EMAIL", "env@example.com")
    monkeypatch.setenv("CLOUDFLARE_API_USER_SERVICE_KEY", "env-service-key")
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9/client/v4")
    monkeypatch.setenv("CLOUDFLARE_CUSTOM_HEADERS", "Authorization: Bearer env-token\nX-Auth-Key: env-key")
    state = await make(providers, fake).read()
    assert state.site == "gcp"
    assert {tuple(sorted(s.headers.items())) for s in fake.seen} == {
        (("Authorization", f"Bearer {fake.token}"),)}


async def test_fake_pages_until_an_empty_page(fake: CloudflareFake) -> None:
    """The fake honours page/per_page, so the SDK's auto-pager walks every record and stops."""
    client = AsyncCloudflare(api_token=fake.token, base_url=fake.base_url, max_retries=0)
    try:
        zone_id = fake.zone_id(ZONE)
        records = [r async for r in client.dns.records.list(zone_id=zone_id, per_page=40)]
    finally:
        await client.close()
    assert len(records) == 155
    assert len(fake.requests("GET", "/dns_records")) == 5  # 4 pages of records and the empty one


async def test_build_provider_picks_cloudflare(fake: CloudflareFake) -> None:
    """A cloudflare provider config builds a CloudflareProvider that reads through the SDK."""
    provider = build_provider(config(fake), "app")
    try:
        assert isinstance(provider, CloudflareProvider)
        assert (await provider.read()).site == "gcp"
    finally:
        await provider.aclose()


async def test_validate_checks_token_and_state_and_writes_nothing(
        fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    """A shadow drill's validation: token verified, zone read and compared; no batch is sent."""
    provider = make(providers, fake)
    state = await provider.read()
    sentence = await provider.validate(state, "azure", 2)
    assert "token active" in sentence and fake.requests("POST", "/batch") == []
    await make(providers, fake).shift(state, "azure", 2)
    with pytest.raises(DnsConflict):
        await provider.validate(state, "azure", 2)


async def test_retime_patches_only_ttls(fake: CloudflareFake, providers: list[CloudflareProvider]) -> None:
    provider = make(providers, fake)
    state = await provider.read()
    after = await provider.retime(state, {r.name: 5 for r in state.records})
    assert [r.ttl for r in after.records] == [5, 5, 5]
    assert [r.values for r in after.records] == [r.values for r in state.records] and after.epoch == state.epoch

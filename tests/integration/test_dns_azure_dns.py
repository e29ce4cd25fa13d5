"""Azure DNS provider through azure-mgmt-dns against a local ARM server: the epoch record claimed under
If-Match, each record set written under If-Match on its ETag, 412 on a concurrent change, undo on a
failed record write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from actions.dns.azure_dns import AzureDnsProvider
from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict
from engine.config.dns import DnsConfig
from tests.support.azure_arm_fake import AzureArmFake
from tests.support.azure_fake import FakeCredential
from tests.support.dns_steps import shift_step

ZONE = "example.com"
APP, WWW = "app.example.com.", "www.example.com."
EPOCH = "_failover-epoch.app"


@pytest.fixture
async def fake() -> AsyncIterator[AzureArmFake]:
    """A zone with two gcp record sets and the epoch record at 1."""
    server = AzureArmFake()
    server.put_record(ZONE, "app", "A", ["192.0.2.10"])
    server.put_record(ZONE, "www", "CNAME", ["gcp.example.net."], ttl=300)
    server.put_record(ZONE, EPOCH, "TXT", ["epoch=1 site=gcp op=seed"])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def section(fake: AzureArmFake, **provider: Any) -> dict[str, Any]:
    return {
        "provider": {"type": "azure_dns", "subscription_id": fake.subscription, "resource_group": fake.group,
                     "zone": ZONE, "base_url": fake.base_url, "timeout": "2s", "attempts": 1, **provider},
        "records": [
            {"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}},
            {"name": "www", "type": "CNAME", "ttl": "5m",
             "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}},
        ],
        "epoch_record": EPOCH,
    }


@pytest.fixture
async def make(fake: AzureArmFake) -> AsyncIterator[Any]:
    made: list[AzureDnsProvider] = []

    def build(token: str = "fake-token", **provider: Any) -> AzureDnsProvider:
        made.append(AzureDnsProvider(DnsConfig.model_validate(section(fake, **provider)), "app",
                                     credential=FakeCredential(token)))
        return made[-1]

    yield build
    for provider in made:
        await provider.aclose()


async def test_read_carries_etags(fake: AzureArmFake, make: Any) -> None:
    """A read gets each record set and the epoch record with their ETags, authenticated by bearer token."""
    state = await make().read()
    assert [(r.name, r.values, r.ttl) for r in state.records] == [
        (APP, ("192.0.2.10",), 60), (WWW, ("gcp.example.net.",), 300)]
    assert (state.epoch.number, state.site) == (1, "gcp")
    assert all(r.refs[0] for r in state.records) and state.epoch.ref
    assert {h.get("Authorization") for _m, _p, h in fake.seen} == {"Bearer fake-token"}


async def test_shift_writes_epoch_then_records_under_if_match(fake: AzureArmFake, make: Any) -> None:
    """A shift claims epoch 2 under If-Match, then writes each record set under If-Match on its ETag."""
    provider = make()
    state = await provider.read()
    after = await provider.shift(state, "azure", 2)
    puts = [(p.split("/")[-2], h.get("If-Match")) for m, p, h in fake.seen if m == "PUT"]
    assert puts == [("TXT", state.epoch.ref), ("A", state.records[0].refs[0]), ("CNAME", state.records[1].refs[0])]
    assert fake.values(ZONE, "app", "A") == ["198.51.100.10"]
    assert fake.values(ZONE, EPOCH, "TXT") == [f"epoch=2 site=azure op={after.epoch.op}"]
    assert after.site == "azure" and await provider.read() == after
    assert (await provider.shift(after, "gcp", 3)).site == "gcp"


async def test_a_rival_holding_the_epoch_gets_412_and_nothing_changes(fake: AzureArmFake, make: Any) -> None:
    """Two executors read epoch 1; the second's epoch write is 412 after the first's: DnsConflict, no record moved."""
    first, second = make(), make()
    stale = await second.read()
    await first.shift(await first.read(), "azure", 2, op="winner")
    fake.seen.clear()
    with pytest.raises(DnsConflict) as info:
        await second.shift(stale, "azure", 2, op="loser")
    assert info.value.op == "winner"
    assert [m for m, _p, _h in fake.seen if m == "PUT"] == ["PUT"]  # only the refused epoch claim


async def test_a_record_edited_during_the_shift_is_undone_whole(fake: AzureArmFake, make: Any) -> None:
    """A hand edit of the second record set after the read: its write is 412, the epoch and first record are
    put back, DnsConflict."""
    provider = make()
    state = await provider.read()

    def edit() -> None:
        fake.before_write.clear()
        fake.put_record(ZONE, "www", "CNAME", ["elsewhere.example.net."], ttl=300)

    fake.before_write.append(edit)
    with pytest.raises(DnsConflict) as info:
        await provider.shift(state, "azure", 2)
    assert info.value.epoch == 1
    assert fake.values(ZONE, "app", "A") == ["192.0.2.10"]
    assert fake.values(ZONE, EPOCH, "TXT") == ["epoch=1 site=gcp op=seed"]
    assert fake.values(ZONE, "www", "CNAME") == ["elsewhere.example.net."]


async def test_the_runbook_step_stands_down_on_a_concurrent_change(fake: AzureArmFake, make: Any) -> None:
    """A rival's epoch lands between the step's read and its first write: the step stands down, nothing partial."""
    provider = make()

    def rival() -> None:
        fake.before_write.clear()
        fake.put_record(ZONE, EPOCH, "TXT", ["epoch=2 site=azure op=rival"])

    fake.before_write.append(rival)
    outcome = await shift_step(provider, section(fake), service="app", source="gcp", target="azure", epoch_from=1)
    assert outcome.stand_down and "lost the race" in outcome.summary
    assert fake.values(ZONE, "app", "A") == ["192.0.2.10"]
    assert fake.values(ZONE, "www", "CNAME") == ["gcp.example.net."]


async def test_first_epoch_uses_if_none_match(fake: AzureArmFake, make: Any) -> None:
    """Without an epoch record the claim is If-None-Match: *; a rival's record first makes it a conflict."""
    del fake.records[(ZONE, "TXT", EPOCH)]
    provider = make()
    state = await provider.read()
    fake.before_write.append(lambda: (fake.before_write.clear(),
                                      fake.put_record(ZONE, EPOCH, "TXT", ["epoch=1 site=gcp op=rival"])))
    with pytest.raises(DnsConflict):
        await provider.shift(state, "azure", 1)
    assert [h.get("If-None-Match") for m, _p, h in fake.seen if m == "PUT"] == ["*"]
    assert fake.values(ZONE, "app", "A") == ["192.0.2.10"]


async def test_errors_map_onto_the_dns_tree(make: Any) -> None:
    """A refused token is an auth error; a missing record set a config error."""
    with pytest.raises(DnsAuthError):
        await make(token="wrong").read()
    with pytest.raises(DnsConfigError, match="record missing"):
        await make(zone="other.com").read()


async def test_retime_and_validate(make: Any) -> None:
    """A TTL change keeps values and epoch; validation reads the zone and changes nothing."""
    provider = make()
    state = await provider.read()
    assert "nothing changed" in await provider.validate(state, "azure", 2)
    after = await provider.retime(state, {APP: 30, WWW: 30})
    assert [r.ttl for r in after.records] == [30, 30] and after.epoch.number == state.epoch.number
    with pytest.raises(DnsConflict):
        await provider.validate(state, "azure", 2)

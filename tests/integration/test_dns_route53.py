"""Route 53 provider through boto3 against moto's server mode (behind a front that enforces Route 53's
exact-match DELETE and reports PENDING): one change batch DELETE exact + CREATE, polled until INSYNC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsRefused
from actions.dns.provider import build_provider
from actions.dns.route53 import Route53Provider
from engine.config.dns import DnsConfig
from tests.support.dns_steps import shift_step
from tests.support.route53_fake import Route53Fake

ZONE = "example.com"
APP, WWW, EPOCH = "app.example.com.", "www.example.com.", "_failover-epoch.app.example.com."


async def no_sleep(_seconds: float) -> None:
    return None


def upsert(fake: Route53Fake, zone_id: str, name: str, rtype: str, values: list[str], ttl: int = 60) -> None:
    """A change made straight at moto: the console, another tool, a rival."""
    client = fake.client()
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {"Name": name, "Type": rtype, "TTL": ttl,
                                                  "ResourceRecords": [{"Value": v} for v in values]}}]})
    client.close()


def values(fake: Route53Fake, zone_id: str, name: str, rtype: str) -> list[str]:
    client = fake.client()
    page = client.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=name, StartRecordType=rtype,
                                            MaxItems="1")
    client.close()
    sets = [s for s in page["ResourceRecordSets"] if s["Name"] == name and s["Type"] == rtype]
    return sorted(r["Value"] for s in sets for r in s["ResourceRecords"])


def client_sets(fake: Route53Fake, zone_id: str, name: str) -> list[dict[str, Any]]:
    client = fake.client()
    page = client.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=name)
    client.close()
    return [s for s in page["ResourceRecordSets"] if s["Name"] == name]


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Route53Fake, str]]:
    """moto with a hosted zone, two gcp records and the epoch record at 1."""
    server = Route53Fake()
    await server.start()
    try:
        client = server.client()
        zone_id = client.create_hosted_zone(Name=ZONE, CallerReference="t1")["HostedZone"]["Id"].split("/")[-1]
        client.close()
        upsert(server, zone_id, APP, "A", ["192.0.2.10"])
        upsert(server, zone_id, WWW, "CNAME", ["gcp.example.net."], ttl=300)
        upsert(server, zone_id, EPOCH, "TXT", ['"epoch=1 site=gcp op=seed"'])
        yield server, zone_id
    finally:
        await server.stop()


def section(fake: Route53Fake, zone_id: str, **provider: Any) -> dict[str, Any]:
    return {
        "provider": {"type": "route53", "hosted_zone_id": zone_id, "zone": ZONE, "endpoint_url": fake.base_url,
                     "access_key_id": "testing", "secret_access_key": "testing", "timeout": "5s", "attempts": 1,
                     **provider},
        "records": [
            {"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}},
            {"name": "www", "type": "CNAME", "ttl": "5m",
             "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}},
        ],
        "epoch_record": "_failover-epoch.app",
    }


@pytest.fixture
async def make(fake: tuple[Route53Fake, str]) -> AsyncIterator[Any]:
    made: list[Route53Provider] = []

    def build(**provider: Any) -> Route53Provider:
        made.append(Route53Provider(DnsConfig.model_validate(section(*fake, **provider)), "app", sleep=no_sleep))
        return made[-1]

    yield build
    for provider in made:
        await provider.aclose()


async def test_read_finds_records_and_epoch(make: Any) -> None:
    """A read lists each name exactly and parses the epoch TXT record."""
    state = await make().read()
    assert [(r.name, r.values, r.ttl) for r in state.records] == [
        (APP, ("192.0.2.10",), 60), (WWW, ("gcp.example.net.",), 300)]
    assert (state.epoch.number, state.epoch.site, state.site) == (1, "gcp", "gcp")


async def test_shift_is_one_batch_waited_until_insync(fake: tuple[Route53Fake, str], make: Any) -> None:
    """A shift sends one batch (DELETE exact, CREATE new, epoch 2) and polls GetChange through PENDING."""
    server, zone_id = fake
    provider = make()
    after = await provider.shift(await provider.read(), "azure", 2)
    assert len(server.batches) == 1 and server.polls[server.batches[0]] == server.pending_polls + 1
    assert values(server, zone_id, APP, "A") == ["198.51.100.10"]
    assert values(server, zone_id, EPOCH, "TXT") == [f'"epoch=2 site=azure op={after.epoch.op}"']
    assert after.site == "azure" and await provider.read() == after
    assert (await provider.shift(after, "gcp", 3)).site == "gcp"


async def test_foreign_change_makes_the_batch_fail_whole(fake: tuple[Route53Fake, str], make: Any) -> None:
    """A hand edit between read and batch: the exact DELETE fails, DnsConflict, no record changed."""
    server, zone_id = fake
    provider = make()
    state = await provider.read()
    server.before_change.append(lambda: upsert(server, zone_id, WWW, "CNAME", ["elsewhere.example.net."], 300))
    with pytest.raises(DnsConflict) as info:
        await provider.shift(state, "azure", 2)
    assert info.value.site == "mixed" and info.value.epoch == 1
    assert values(server, zone_id, APP, "A") == ["192.0.2.10"] and server.batches == []


async def test_the_runbook_step_stands_down_on_a_concurrent_change(fake: tuple[Route53Fake, str], make: Any) -> None:
    """A rival's shift lands between the step's read and its batch: the step stands down, nothing partial."""
    server, zone_id = fake
    provider = make()

    def rival() -> None:
        server.before_change.clear()
        upsert(server, zone_id, EPOCH, "TXT", ['"epoch=2 site=azure op=rival"'])

    server.before_change.append(rival)
    outcome = await shift_step(provider, section(*fake), service="app", source="gcp", target="azure", epoch_from=1)
    assert outcome.stand_down and "lost the race" in outcome.summary
    assert values(server, zone_id, APP, "A") == ["192.0.2.10"]
    assert values(server, zone_id, WWW, "CNAME") == ["gcp.example.net."]


async def test_first_epoch_record_created_by_a_rival_is_a_conflict(fake: tuple[Route53Fake, str], make: Any) -> None:
    """Without an epoch record the batch CREATEs it; a rival's epoch record first fails the batch: DnsConflict."""
    server, zone_id = fake
    client = server.client()
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{
        "Action": "DELETE", "ResourceRecordSet": {"Name": EPOCH, "Type": "TXT", "TTL": 60,
                                                  "ResourceRecords": [{"Value": '"epoch=1 site=gcp op=seed"'}]}}]})
    client.close()
    provider = make()
    state = await provider.read()
    assert state.epoch.number == 0
    server.before_change.append(lambda: upsert(server, zone_id, EPOCH, "TXT", ['"epoch=1 site=gcp op=rival"']))
    with pytest.raises(DnsConflict):
        await provider.shift(state, "azure", 1)
    assert values(server, zone_id, APP, "A") == ["192.0.2.10"]


async def test_errors_map_onto_the_dns_tree(make: Any) -> None:
    """An unknown hosted zone is a config error."""
    with pytest.raises((DnsConfigError, DnsRefused, DnsAuthError)):
        await make(hosted_zone_id="ZNOSUCHZONE1").read()


async def test_retime_and_validate(fake: tuple[Route53Fake, str], make: Any) -> None:
    """A TTL change keeps values and epoch in one batch; validation reads the zone and changes nothing."""
    provider = make()
    state = await provider.read()
    assert "nothing changed" in await provider.validate(state, "azure", 2)
    after = await provider.retime(state, {APP: 30, WWW: 30})
    assert [r.ttl for r in after.records] == [30, 30] and after.epoch == state.epoch
    with pytest.raises(DnsConflict):
        await provider.validate(state, "azure", 2)


async def test_build_provider_picks_route53(fake: tuple[Route53Fake, str]) -> None:
    """A route53 provider config builds a Route53Provider."""
    provider = build_provider(DnsConfig.model_validate(section(*fake)), "app")
    try:
        assert isinstance(provider, Route53Provider) and (await provider.read()).site == "gcp"
    finally:
        await provider.aclose()


async def test_weighted_sets_move_in_one_conditional_batch(fake: tuple[Route53Fake, str], make: Any) -> None:
    """Weighted sets (SetIdentifier = site) are read as shares (and by read() as the site they answer) and
    rewritten by DELETE exact + CREATE keeping their TTL; stale weights are a conflict; a failover set is refused."""
    server, zone_id = fake
    server.weigh(zone_id, APP, "A", {"gcp": (0, ["192.0.2.10"]), "azure": (100, ["198.51.100.10"])})
    server.weigh(zone_id, WWW, "CNAME", {"gcp": (0, ["gcp.example.net."]), "azure": (100, ["azure.example.net."])},
                 ttl=300)
    client = server.client()
    check = client.create_health_check(CallerReference="azure-app", HealthCheckConfig={
        "IPAddress": "198.51.100.10", "Port": 443, "Type": "HTTPS", "ResourcePath": "/health"})["HealthCheck"]["Id"]
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{"Action": "UPSERT",
        "ResourceRecordSet": {"Name": APP, "Type": "A", "TTL": 60, "SetIdentifier": "azure", "Weight": 100,
                              "HealthCheckId": check, "ResourceRecords": [{"Value": "198.51.100.10"}]}}]})
    client.close()
    provider = make()
    state = await provider.read()
    assert state.site == "azure" and [r.values for r in state.records] == [("198.51.100.10",), ("azure.example.net.",)]
    before = await provider.read_weights()
    assert before.as_dict() == {"gcp": 0, "azure": 100} and before.epoch == 1
    after = await provider.set_weights(before, {"gcp": 10, "azure": 90})
    assert after.as_dict() == {"gcp": 10, "azure": 90} and len(server.batches) == 1
    assert server.weights(zone_id, WWW, "CNAME") == {"gcp": 10, "azure": 90}
    assert (await provider.read()).records[1].ttl == 300  # the TTL as read, not the config's
    kept = client_sets(server, zone_id, APP)
    assert [s.get("HealthCheckId") for s in kept if s["SetIdentifier"] == "azure"] == [check]  # other fields kept
    with pytest.raises(DnsConflict):
        await provider.set_weights(before, {"gcp": 50, "azure": 50})
    assert (await provider.read_weights()).as_dict() == {"gcp": 10, "azure": 90}
    # a change between the provider's compare and its batch: Route 53's exact DELETE refuses the batch whole
    current = await provider.read_weights()

    def rival() -> None:
        server.before_change.clear()
        rival_client = server.client()
        rival_client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
            {"Action": "UPSERT", "ResourceRecordSet": {
                "Name": APP, "Type": "A", "TTL": 60, "SetIdentifier": "azure", "Weight": 70,
                "ResourceRecords": [{"Value": "198.51.100.10"}]}}]})
        rival_client.close()

    server.before_change.append(rival)
    with pytest.raises(DnsConflict, match="disagree"):  # only app was edited: the records disagree now
        await provider.set_weights(current, {"gcp": 50, "azure": 50})
    assert server.weights(zone_id, APP, "A") == {"gcp": 10, "azure": 70}  # nothing of ours
    assert server.weights(zone_id, WWW, "CNAME") == {"gcp": 10, "azure": 90}
    client = server.client()
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{"Action": "CREATE",
        "ResourceRecordSet": {"Name": "api.example.com.", "Type": "A", "TTL": 60, "SetIdentifier": "gcp",
                              "Failover": "PRIMARY", "ResourceRecords": [{"Value": "192.0.2.10"}]}}]})
    client.close()
    failover = Route53Provider(DnsConfig.model_validate({**section(server, zone_id), "records": [
        {"name": "api", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}}]}), "app")
    try:
        with pytest.raises(DnsConfigError, match="failover, latency"):
            await failover.read()
    finally:
        await failover.aclose()

"""Weighted failback on weighted record sets, for ``route53`` (boto3 against moto's server mode behind the strict
front) and ``cloud_dns`` (google-cloud-dns's connection against the local v1 server): the switchover's precheck
and TTL change read and keep the weighted sets, home gets 0 -> 25 -> 50 -> 100 % of both records with the zone
read back at every check, then shift_dns moves the epoch; an unhealthy home rolls back; a foreign weight edit
between two steps stands the failback down without being overwritten."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actions.dns.cloud_dns import CloudDnsProvider
from actions.dns.route53 import Route53Provider
from engine.config.model import ServiceConfig
from engine.core.decide import ServiceState
from engine.core.operations import Operation, StepFailed
from engine.runtime.service import ServiceRuntime
from engine.runtime.weighted_failback import weighted_failback
from tests.support.cloud_dns_fake import CloudDnsFake
from tests.support.cloud_dns_fake import wrr as fake_wrr
from tests.support.dns_steps import _StepsWith
from tests.support.gcp_fake import running_token_fake, service_account_file
from tests.support.health_script import Script
from tests.support.route53_fake import Route53Fake

ZONE = "example.com"
APP, WWW, EPOCH = "app.example.com.", "www.example.com.", "_failover-epoch.app.example.com."
VALUES = {APP: ("A", {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}),
          WWW: ("CNAME", {"gcp": ["gcp.example.net."], "azure": ["azure.example.net."]})}
TTLS = {APP: 60, WWW: 300}
WEIGHTED = {"steps": [25, 50, 100], "hold": "60s", "checks": 2, "check_interval": "20s"}
RECORDS = [{"name": "app", "type": "A", "ttl": "60s", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}},
           {"name": "www", "type": "CNAME", "ttl": "5m",
            "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}}]


async def no_sleep(_seconds: float) -> None:
    return None


@dataclass
class World:
    """A service at home gcp, failed over to azure at epoch 2 (both records weighted gcp 0 / azure 100)."""

    rt: ServiceRuntime
    provider: Any
    weights: Callable[[], dict[str, dict[str, float]]]  # record -> site -> weight, as the provider's API holds it
    ttl: Callable[[str], int]
    edit: Callable[[str, str, float], None]  # a console edit of one site's weight of one record
    epoch: Callable[[], str]


def service(provider: dict[str, Any]) -> ServiceConfig:
    return ServiceConfig.model_validate({
        "active": "gcp", "sites": {"gcp": {"probes": []}, "azure": {"probes": []}},
        "dns": {"provider": provider, "records": RECORDS, "epoch_record": "_failover-epoch.app",
                "weighted_failback": WEIGHTED}})


async def route53_world() -> AsyncIterator[World]:
    server = Route53Fake()
    await server.start()
    try:
        client = server.client()
        zone_id = client.create_hosted_zone(Name=ZONE, CallerReference="wf")["HostedZone"]["Id"].split("/")[-1]
        client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{
            "Action": "CREATE", "ResourceRecordSet": {"Name": EPOCH, "Type": "TXT", "TTL": 60, "ResourceRecords": [
                {"Value": '"epoch=2 site=azure op=failover"'}]}}]})
        client.close()
        for name, (rtype, targets) in VALUES.items():
            server.weigh(zone_id, name, rtype, {site: (100 if site == "azure" else 0, values)
                                                for site, values in targets.items()}, ttl=TTLS[name])
        config = service({"type": "route53", "hosted_zone_id": zone_id, "zone": ZONE, "endpoint_url": server.base_url,
                          "access_key_id": "testing", "secret_access_key": "testing", "timeout": "5s",
                          "attempts": 1})
        assert config.dns is not None
        provider = Route53Provider(config.dns, "app", sleep=no_sleep)

        def sets(name: str) -> list[dict[str, Any]]:
            reader = server.client()
            page = reader.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=name)
            reader.close()
            return [s for s in page["ResourceRecordSets"] if s["Name"] == name]

        def edit(name: str, site: str, weight: float) -> None:
            old = next(s for s in sets(name) if s.get("SetIdentifier") == site)
            editor = server.client()
            editor.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
                {"Action": "UPSERT", "ResourceRecordSet": {**old, "Weight": int(weight)}}]})
            editor.close()

        try:
            yield World(ServiceRuntime("app", config, ServiceState(active="azure", epoch=2)), provider,
                        lambda: {n: {k: float(v) for k, v in server.weights(zone_id, n, t).items()}
                                 for n, (t, _) in VALUES.items()},
                        lambda name: min(int(s["TTL"]) for s in sets(name)), edit,
                        lambda: sets(EPOCH)[0]["ResourceRecords"][0]["Value"].strip('"'))
        finally:
            await provider.aclose()
    finally:
        await server.stop()


async def cloud_dns_world(tmp_path: Path) -> AsyncIterator[World]:
    server = CloudDnsFake()
    server.add_zone("shop-zone", ZONE + ".")
    server.put("shop-zone", EPOCH, "TXT", ['"epoch=2 site=azure op=failover"'])
    for name, (rtype, targets) in VALUES.items():
        server.put("shop-zone", name, rtype, [], ttl=TTLS[name], routing_policy=fake_wrr(
            {site: (100.0 if site == "azure" else 0.0, values) for site, values in targets.items()}))
    await server.start()
    try:
        async with running_token_fake() as tokens:
            key = service_account_file(tmp_path, tokens.base_url, server.project)
            config = service({"type": "cloud_dns", "project": server.project, "managed_zone": "shop-zone",
                              "zone": ZONE, "api_endpoint": server.base_url, "timeout": "2s", "attempts": 1,
                              "poll_interval": "10ms", "credentials": {"type": "service_account_file",
                                                                       "path": str(key)}})
            assert config.dns is not None
            provider = CloudDnsProvider(config.dns, "app", sleep=no_sleep)

            def rrset(name: str) -> dict[str, Any]:
                found = server.get("shop-zone", name, VALUES[name][0] if name in VALUES else "TXT")
                assert found is not None
                return found

            def weights() -> dict[str, dict[str, float]]:
                out: dict[str, dict[str, float]] = {}
                for name, (_rtype, targets) in VALUES.items():
                    items = rrset(name)["routingPolicy"]["wrr"]["items"]
                    out[name] = {site: next((i["weight"] for i in items if i["rrdatas"] == values), 0.0)
                                 for site, values in targets.items()}
                return out

            def edit(name: str, site: str, weight: float) -> None:
                policy = rrset(name)["routingPolicy"]
                now = {s: (weights()[name][s], values) for s, values in VALUES[name][1].items()}
                server.put("shop-zone", name, VALUES[name][0], [], ttl=rrset(name)["ttl"],
                           routing_policy=fake_wrr({**now, site: (weight, VALUES[name][1][site])}))
                assert rrset(name)["routingPolicy"] != policy

            try:
                yield World(ServiceRuntime("app", config, ServiceState(active="azure", epoch=2)), provider, weights,
                            lambda name: int(rrset(name)["ttl"]), edit, lambda: rrset(EPOCH)["rrdatas"][0].strip('"'))
            finally:
                await provider.aclose()
    finally:
        await server.stop()


@pytest.fixture(params=["route53", "cloud_dns"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """The same service on each provider type with weighted record sets."""
    made = route53_world() if request.param == "route53" else cloud_dns_world(tmp_path)
    yield await anext(made)
    await made.aclose()


def failback() -> Operation:
    return Operation("op-fb", "app", "switchover", "azure", "gcp", 2, 3, "operator")


def both(gcp: float) -> dict[str, dict[str, float]]:
    return {name: {"gcp": gcp, "azure": 100.0 - gcp} for name in VALUES}


async def test_failback_in_steps_then_the_epoch_shift(world: World) -> None:
    """Precheck and a TTL change keep the weighted sets; 0 -> 25 -> 50 -> 100 % with the zone read back at every
    check; then shift_dns writes epoch 3 on sets that stay weighted, all on home."""
    op = failback()
    steps = _StepsWith(world.provider, world.rt.config, "app")
    checked = await steps.precheck(op)
    assert not checked.stand_down and "azure" in checked.summary
    state = await world.provider.read()
    assert state.site == "azure" and state.epoch.number == 2
    lowered = await world.provider.retime(state, {APP: 30})
    assert [r.ttl for r in lowered.records] == [30, 300] and world.weights() == both(0)
    seen: list[dict[str, dict[str, float]]] = []
    script = Script([True] * 30, hook=lambda _call: seen.append(world.weights()))
    outcome = await weighted_failback(world.rt, op, world.provider, clock=script.clock, health=script.health,
                                      sleep=script.sleep)
    assert not outcome.skipped and not outcome.stand_down, outcome.summary
    assert [s["weights"] for s in outcome.data["steps"] if s["weights"]] == [
        {"gcp": 25, "azure": 75}, {"gcp": 50, "azure": 50}, {"gcp": 100, "azure": 0}]
    shares = [w[APP]["gcp"] for w in seen]
    assert shares == sorted(shares) and {25.0, 50.0, 100.0} <= set(shares)  # each step read back, in order
    assert all(w[APP] == w[WWW] for w in seen)  # both records move together
    assert world.ttl(APP) == 30 and world.ttl(WWW) == 300  # the weights keep the TTL as read
    assert world.epoch().startswith("epoch=2 site=azure")  # the weights never move the epoch
    op.steps["weighted_failback"] = {"state": "done"}
    shifted = await steps.shift_dns(op)
    assert not shifted.stand_down and shifted.data["changed"], shifted.summary
    after = await world.provider.read()
    assert after.epoch.number == 3 and after.site == "gcp" and world.epoch().startswith("epoch=3 site=gcp")
    assert world.weights() == both(100)
    resumed = Operation("op-fb", "app", "switchover", "azure", "gcp", 3, 4, "operator")
    assert (await weighted_failback(world.rt, resumed, world.provider, clock=script.clock)).skipped


async def test_an_unhealthy_home_rolls_back_and_halts_the_failback(world: World) -> None:
    """A failed check after 25 % puts 100 % back on azure on both records and fails the step; the epoch stays 2."""
    seen: list[dict[str, dict[str, float]]] = []
    script = Script([True, True, True, False], hook=lambda _call: seen.append(world.weights()))
    with pytest.raises(StepFailed) as failed:
        await weighted_failback(world.rt, failback(), world.provider, clock=script.clock, health=script.health,
                                sleep=script.sleep)
    assert not failed.value.retry and "rolled back" in failed.value.reason and "503" in failed.value.reason
    assert seen[0] == both(25) and seen[-1][APP]["gcp"] > 0  # it was unhealthy while home had traffic
    assert world.weights() == both(0)
    assert world.epoch().startswith("epoch=2 site=azure")
    assert (await world.provider.read()).site == "azure"


async def test_a_foreign_weight_edit_between_steps_stands_the_failback_down(world: World) -> None:
    """Someone sets www's azure weight during the first hold: the next conditional write is refused, the step
    stands down, and neither the foreign weight nor anything else is overwritten."""

    def rival(call: int) -> None:
        if call == 1:
            world.edit(WWW, "azure", 60)

    script = Script([True] * 30, hook=rival)
    outcome = await weighted_failback(world.rt, failback(), world.provider, clock=script.clock, health=script.health,
                                      sleep=script.sleep)
    assert outcome.stand_down and "someone else" in outcome.summary, outcome.summary
    assert "www.example.com" in outcome.summary
    assert world.weights() == {APP: {"gcp": 25.0, "azure": 75.0}, WWW: {"gcp": 25.0, "azure": 60.0}}
    assert world.epoch().startswith("epoch=2 site=azure")


async def test_a_plain_shift_puts_all_weight_on_the_target_and_keeps_the_sets_weighted(world: World) -> None:
    """shift_dns without a weighted step (a failover): one conditional change moves every record's weight to the
    target with the epoch; the sets stay weighted and can be shifted back."""
    op = Operation("op-fo", "app", "failover", "azure", "gcp", 2, 3, "auto")
    outcome = await _StepsWith(world.provider, world.rt.config, "app").shift_dns(op)
    assert not outcome.stand_down and outcome.data["changed"], outcome.summary
    assert world.weights() == both(100) and world.epoch().startswith("epoch=3 site=gcp")
    state = await world.provider.read()
    assert state.site == "gcp" and [r.ttl for r in state.records] == [60, 300]
    assert (await world.provider.read_weights()).as_dict() == {"gcp": 100, "azure": 0}
    back = await world.provider.shift(state, "azure", 4)
    assert back.site == "azure" and back.epoch.number == 4 and world.weights() == both(0)

"""The weighted-move executor against real provider SDKs and local servers (Traffic Manager weighted profile,
Cloudflare LB random steering), on a manual clock: steps written by compare-and-set, roll back, halt."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actions.dns.errors import DnsConflict, DnsRefused
from actions.dns.traffic_manager import TAG, TrafficManagerProvider
from actions.dns.weights import Weights, weighted
from engine.config.dns import DnsConfig
from engine.core.clock import ManualClock
from engine.core.weighted import WeightedPlan
from engine.runtime.weighted_shift import run_weighted_shift
from tests.support.azure_arm_fake import AzureArmFake
from tests.support.azure_fake import FakeCredential
from tests.support.health_script import Script

PLAN = WeightedPlan("azure", "gcp", (10, 50, 100), hold_s=60.0, checks_needed=2)


@pytest.fixture
async def fake() -> AsyncIterator[AzureArmFake]:
    """A Weighted profile with all traffic on azure (gcp's endpoint disabled)."""
    server = AzureArmFake()
    server.put_profile("shop-tm", [
        {"name": "gcp-ep", "target": "gcp.example.net", "weight": 1, "endpointStatus": "Disabled"},
        {"name": "azure-ep", "target": "azure.example.net", "weight": 1000}],
        routing="Weighted", tags={TAG: "epoch=4 site=azure op=x"})
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def provider(fake: AzureArmFake) -> AsyncIterator[TrafficManagerProvider]:
    config = DnsConfig.model_validate({
        "provider": {"type": "traffic_manager", "subscription_id": fake.subscription, "resource_group": fake.group,
                     "profile": "shop-tm", "endpoints": {"gcp": "gcp-ep", "azure": "azure-ep"},
                     "base_url": fake.base_url, "attempts": 1},
        "records": [{"name": "shop-tm", "type": "CNAME",
                     "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}}]})
    made = TrafficManagerProvider(config, "shop", credential=FakeCredential())
    yield made
    await made.aclose()


async def test_a_healthy_failback_ends_with_all_traffic_on_the_target(
        fake: AzureArmFake, provider: TrafficManagerProvider) -> None:
    """10 -> 50 -> 100 % written as endpoint weights; azure's endpoint disabled at the end."""
    clock = ManualClock()
    script = Script([True] * 30, clock=clock, failure="HTTP 503 from gcp")
    report = await run_weighted_shift(provider, PLAN, script.health, clock=clock, check_interval=20, sleep=script.sleep)
    assert report.ok and report.outcome == "done"
    assert [w for _t, _m, w in report.steps if w] == [
        {"gcp": 10, "azure": 90}, {"gcp": 50, "azure": 50}, {"gcp": 100, "azure": 0}]
    assert fake.endpoint("shop-tm", "gcp-ep")["weight"] == 1000
    assert fake.endpoint("shop-tm", "azure-ep")["endpointStatus"] == "Disabled"
    assert (await provider.read_weights()).as_dict() == {"gcp": 100, "azure": 0}


async def test_an_unhealthy_check_rolls_back_to_the_source(
        fake: AzureArmFake, provider: TrafficManagerProvider) -> None:
    """A failed check at 50 % writes 100 % back to azure and reports the failure."""
    clock = ManualClock()
    script = Script([True, True, True, False], clock=clock, failure="HTTP 503 from gcp")
    report = await run_weighted_shift(provider, PLAN, script.health, clock=clock, check_interval=20, sleep=script.sleep)
    assert report.outcome == "rolled_back" and report.failed_checks == ["HTTP 503 from gcp"]
    assert (await provider.read_weights()).as_dict() == {"gcp": 0, "azure": 100}


async def test_a_rival_change_between_steps_halts_the_move(
        fake: AzureArmFake, provider: TrafficManagerProvider) -> None:
    """Someone moves the weights while a step is held: the next write is refused and the move halts."""
    clock = ManualClock()

    def rival(call: int) -> None:
        if call == 1:
            fake.touch_profile("shop-tm", gcp_ep={"weight": 500, "endpointStatus": "Enabled"})

    script = Script([True] * 30, hook=rival, clock=clock, failure="HTTP 503 from gcp")
    report = await run_weighted_shift(provider, PLAN, script.health, clock=clock, check_interval=20, sleep=script.sleep)
    assert report.outcome == "halted" and "moved by someone else" in report.message
    assert fake.endpoint("shop-tm", "gcp-ep")["weight"] == 500  # not overwritten


async def test_set_weights_is_conditional_and_providers_without_weights_refuse(
        provider: TrafficManagerProvider) -> None:
    """Stale expected weights are a conflict; a provider without weights is refused naming its type."""
    stale = Weights((("azure", 50), ("gcp", 50)), 4)
    with pytest.raises(DnsConflict):
        await provider.set_weights(stale, {"gcp": 50, "azure": 50})
    assert weighted(provider, "traffic_manager") is provider
    with pytest.raises(DnsRefused, match="provider type rfc2136 has no weights"):
        weighted(object(), "rfc2136")

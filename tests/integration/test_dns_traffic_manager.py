"""Traffic Manager provider through azure-mgmt-trafficmanager against a local ARM server: a priority swap
(or enable/disable) and the epoch tag in one profile write under If-Match; endpoint monitor status read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict
from actions.dns.provider import build_provider
from actions.dns.traffic_manager import TAG, TrafficManagerProvider
from engine.config.dns import DnsConfig
from tests.support.azure_arm_fake import AzureArmFake
from tests.support.azure_fake import FakeCredential
from tests.support.dns_steps import shift_step

PROFILE = "shop-tm"


@pytest.fixture
async def fake() -> AsyncIterator[AzureArmFake]:
    """A priority profile: gcp's endpoint at priority 1, azure's at 2, epoch tag at 1."""
    server = AzureArmFake()
    server.put_profile(PROFILE, [{"name": "gcp-ep", "target": "gcp.example.net", "priority": 1},
                                 {"name": "azure-ep", "target": "azure.example.net", "priority": 2}],
                       tags={TAG: "epoch=1 site=gcp op=seed", "team": "shop"})
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def section(fake: AzureArmFake, **provider: Any) -> dict[str, Any]:
    return {
        "provider": {"type": "traffic_manager", "subscription_id": fake.subscription, "resource_group": fake.group,
                     "profile": PROFILE, "endpoints": {"gcp": "gcp-ep", "azure": "azure-ep"},
                     "base_url": fake.base_url, "timeout": "2s", "attempts": 1, **provider},
        "records": [{"name": "shop-tm", "type": "CNAME",
                     "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}}],
    }


@pytest.fixture
async def make(fake: AzureArmFake) -> AsyncIterator[Any]:
    made: list[TrafficManagerProvider] = []

    def build(token: str = "fake-token", **provider: Any) -> TrafficManagerProvider:
        made.append(TrafficManagerProvider(DnsConfig.model_validate(section(fake, **provider)), "shop",
                                           credential=FakeCredential(token)))
        return made[-1]

    yield build
    for provider in made:
        await provider.aclose()


async def test_read_finds_the_preferred_endpoint_and_the_epoch_tag(make: Any) -> None:
    """The enabled endpoint with the lowest priority is where the profile's name points; the tag is the epoch."""
    state = await make().read()
    assert state.records[0].values == ("gcp.example.net.",) and state.site == "gcp"
    assert (state.epoch.number, state.epoch.site) == (1, "gcp") and state.epoch.ref


async def test_shift_swaps_priorities_and_tags_the_epoch_in_one_write(fake: AzureArmFake, make: Any) -> None:
    """A shift is one PUT under If-Match: azure's endpoint gets priority 1, the epoch tag 2, other tags kept."""
    provider = make()
    state = await provider.read()
    after = await provider.shift(state, "azure", 2)
    writes = [(m, h.get("If-Match")) for m, _p, h in fake.seen if m in ("PUT", "PATCH")]
    assert writes == [("PUT", state.epoch.ref)]
    assert (fake.endpoint(PROFILE, "azure-ep")["priority"], fake.endpoint(PROFILE, "gcp-ep")["priority"]) == (1, 2)
    assert fake.profiles[PROFILE]["tags"] == {TAG: f"epoch=2 site=azure op={after.epoch.op}", "team": "shop"}
    assert after.site == "azure" and await provider.read() == after
    assert (await provider.shift(after, "gcp", 3)).site == "gcp"


async def test_enable_mode_enables_the_target_and_disables_the_rest(fake: AzureArmFake, make: Any) -> None:
    """mode: enable turns the target's endpoint on and the others off; the monitor status follows."""
    fake.touch_profile(PROFILE, azure_ep={"endpointStatus": "Disabled", "endpointMonitorStatus": "Disabled"})
    provider = make(mode="enable")
    state = await provider.read()
    assert state.site == "gcp"
    await provider.shift(state, "azure", 2)
    assert fake.endpoint(PROFILE, "gcp-ep")["endpointStatus"] == "Disabled"
    assert fake.endpoint(PROFILE, "azure-ep")["endpointStatus"] == "Enabled"
    assert await provider.monitor_status() == {"gcp": "Disabled", "azure": "CheckingEndpoint"}


async def test_a_portal_edit_during_the_shift_is_412_and_changes_nothing(fake: AzureArmFake, make: Any) -> None:
    """The profile changed between the provider's last read and its write: 412, DnsConflict, profile as edited."""
    provider = make()
    state = await provider.read()

    def edit() -> None:
        fake.before_write.clear()
        fake.touch_profile(PROFILE, gcp_ep={"priority": 5})

    fake.before_write.append(edit)
    with pytest.raises(DnsConflict):
        await provider.shift(state, "azure", 2)
    assert fake.endpoint(PROFILE, "azure-ep")["priority"] == 2
    assert fake.profiles[PROFILE]["tags"][TAG] == "epoch=1 site=gcp op=seed"


async def test_the_runbook_step_stands_down_on_a_concurrent_change(fake: AzureArmFake, make: Any) -> None:
    """A rival's shift lands between the step's read and its write: the step stands down, nothing partial."""
    provider = make()

    def rival() -> None:
        fake.before_write.clear()
        fake.touch_profile(PROFILE, azure_ep={"priority": 1}, gcp_ep={"priority": 2})
        fake.profiles[PROFILE]["tags"][TAG] = "epoch=2 site=azure op=rival"

    fake.before_write.append(rival)
    outcome = await shift_step(provider, section(fake), service="shop", source="gcp", target="azure", epoch_from=1)
    assert outcome.stand_down and "lost the race" in outcome.summary
    assert fake.profiles[PROFILE]["tags"][TAG] == "epoch=2 site=azure op=rival"


async def test_monitor_status_is_read_back(fake: AzureArmFake, make: Any) -> None:
    """Each site's endpoint monitor status comes from the profile as Traffic Manager's monitor sees it."""
    fake.touch_profile(PROFILE, azure_ep={"endpointMonitorStatus": "Degraded"})
    provider = make()
    assert await provider.monitor_status() == {"gcp": "Online", "azure": "Degraded"}
    assert "azure Degraded" in await provider.validate(await provider.read(), "azure", 2)


async def test_errors_map_onto_the_dns_tree(make: Any) -> None:
    """A refused token is an auth error; an unknown profile or endpoint a config error."""
    with pytest.raises(DnsAuthError):
        await make(token="wrong").read()
    with pytest.raises(DnsConfigError, match="unknown profile"):
        await make(profile="nope").read()
    with pytest.raises(DnsConfigError, match="no endpoint"):
        await make(endpoints={"gcp": "gcp-ep", "azure": "missing-ep"}).read()


async def test_build_provider_and_config_rules(fake: AzureArmFake) -> None:
    """The config builds a TrafficManagerProvider; two records or a non-CNAME record are refused with a path."""
    provider = build_provider(DnsConfig.model_validate(section(fake)), "shop")
    assert isinstance(provider, TrafficManagerProvider)
    await provider.aclose()
    bad = section(fake)
    bad["records"] = [{**bad["records"][0], "type": "A", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}}]
    with pytest.raises(ValueError, match=r"records\[0\]\.type"):
        DnsConfig.model_validate(bad)

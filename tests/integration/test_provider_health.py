"""The provider_health probe reads each provider's own health check through its SDK against the local fakes:
Route 53 health checker observations (moto + front), Traffic Manager endpoint monitor status, Cloudflare LB
pool health; a failure to read is an observation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.config.probes import ProbeConfig
from probes.provider_health import ProviderHealthProbe, disagreement
from probes.registry import build_probe
from tests.support.azure_arm_fake import AzureArmFake
from tests.support.azure_fake import FakeCredential
from tests.support.cloudflare_lb_fake import CloudflareLbFake
from tests.support.route53_fake import Route53Fake


def probe_config(**data: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(ProbeConfig).validate_python({"type": "provider_health", "interval": "30s", "timeout": "5s",
                                                     **data})


@pytest.fixture
async def route53() -> AsyncIterator[Route53Fake]:
    server = Route53Fake()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_route53_health_check_follows_route53s_own_rule(route53: Route53Fake) -> None:
    """More than 18 % of checkers healthy is healthy, as Route 53 counts it; fewer is a failed observation."""
    client = route53.client()
    check = client.create_health_check(CallerReference="hc1", HealthCheckConfig={
        "Type": "HTTPS", "FullyQualifiedDomainName": "azure.example.net", "Port": 443, "ResourcePath": "/health"})
    client.close()
    check_id = check["HealthCheck"]["Id"]
    config = probe_config(health_check_id=check_id, counts_as="vote", provider={
        "type": "route53", "hosted_zone_id": "Z0123456789ABC", "zone": "example.com", "endpoint_url": route53.base_url,
        "access_key_id": "testing", "secret_access_key": "testing", "timeout": "5s"})
    probe = build_probe(config)
    try:
        route53.health[check_id] = ["Success: HTTP Status Code 200, OK"] * 3 + ["Failure: Connection timed out."]
        seen = await probe.observe()
        assert seen.ok and seen.reason == "Route 53: 3 of 4 checkers healthy" and seen.details["counts_as"] == "vote"
        route53.health[check_id] = ["Failure: Connection timed out."] * 4
        seen = await probe.observe()
        assert not seen.ok and seen.reason.startswith("Route 53: 0 of 4 checkers healthy (Failure: Connection")
        del route53.health[check_id]  # moto's own answer: one checker, Success
        assert (await probe.observe()).ok
    finally:
        await probe.aclose()


async def test_traffic_manager_endpoint_monitor_status() -> None:
    """Online is healthy; Degraded is a failed observation naming the status; a refused token is one too."""
    server = AzureArmFake()
    server.put_profile("shop-tm", [{"name": "gcp-ep", "target": "gcp.example.net", "priority": 1},
                                   {"name": "azure-ep", "target": "azure.example.net", "priority": 2}])
    await server.start()
    provider = {"type": "traffic_manager", "subscription_id": server.subscription, "resource_group": server.group,
                "profile": "shop-tm", "endpoints": {"gcp": "gcp-ep", "azure": "azure-ep"}, "base_url": server.base_url,
                "attempts": 1}
    probe = ProviderHealthProbe(probe_config(site="azure", provider=provider), azure_credential=FakeCredential())
    refused = ProviderHealthProbe(probe_config(site="azure", provider=provider),
                                  azure_credential=FakeCredential("wrong"))
    try:
        seen = await probe.observe()
        assert seen.ok and seen.reason == "Traffic Manager monitor: azure endpoint azure-ep Online"
        assert seen.details["counts_as"] == "info"
        server.touch_profile("shop-tm", azure_ep={"endpointMonitorStatus": "Degraded"})
        seen = await probe.observe()
        assert not seen.ok and seen.details["status"] == "Degraded"
        failed = await refused.observe()
        assert not failed.ok and failed.reason.startswith("traffic_manager health read failed")
    finally:
        await probe.aclose()
        await refused.aclose()
        await server.stop()


async def test_cloudflare_pool_health(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's health as Cloudflare's monitors report it."""
    for variable in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL", "CLOUDFLARE_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    server = CloudflareLbFake()
    pools = {"gcp": server.add_pool("gcp", ["192.0.2.10"]), "azure": server.add_pool("azure", ["198.51.100.10"])}
    await server.start()
    probe = build_probe(probe_config(site="azure", provider={
        "type": "cloudflare_lb", "zone": "example.com", "account_id": server.account, "api_token": server.token,
        "pools": pools, "base_url": server.base_url}))
    try:
        assert (await probe.observe()).ok
        server.healthy[pools["azure"]] = False
        seen = await probe.observe()
        assert not seen.ok and seen.reason == "Cloudflare LB monitor: azure pool unhealthy"
    finally:
        await probe.aclose()
        await server.stop()


def test_config_needs_the_selector_of_its_provider() -> None:
    """route53 needs health_check_id; Traffic Manager and Cloudflare LB need a site they know."""
    with pytest.raises(ValueError, match="health_check_id"):
        probe_config(provider={"type": "route53", "hosted_zone_id": "Z1", "zone": "example.com"})
    with pytest.raises(ValueError, match="has no endpoint"):
        probe_config(site="aws", provider={"type": "traffic_manager", "subscription_id": "s", "resource_group": "rg",
                                           "profile": "p", "endpoints": {"gcp": "a", "azure": "b"}})


def test_disagreement_is_one_sentence_or_none() -> None:
    """Provider and engine agreeing (or either unknown) is no sentence; disagreeing says who sees what."""
    assert disagreement("azure", "Route 53", True, True) is None
    assert disagreement("azure", "Route 53", None, False) is None
    assert disagreement("azure", "Route 53", True, False) == "Route 53 sees azure healthy while the engine sees it DOWN"

"""The cloud traffic providers' settings: each bad setting is one problem at its path, and a missing SDK is
refused with the install command."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.unit.test_dns_config import parse, problems

RECORD = {"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}}
CNAME = {"name": "shop-tm", "type": "CNAME", "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}}
PROVIDERS: dict[str, dict[str, Any]] = {
    "cloud_dns": {"type": "cloud_dns", "project": "p1", "managed_zone": "shop-zone", "zone": "example.com"},
    "azure_dns": {"type": "azure_dns", "subscription_id": "s", "resource_group": "rg", "zone": "example.com"},
    "traffic_manager": {"type": "traffic_manager", "subscription_id": "s", "resource_group": "rg", "profile": "tm",
                        "endpoints": {"gcp": "gcp-ep", "azure": "azure-ep"}},
    "route53": {"type": "route53", "hosted_zone_id": "Z0123456789ABC", "zone": "example.com"},
    "cloudflare_lb": {"type": "cloudflare_lb", "zone": "example.com", "account_id": "a" * 32, "api_token": "t",
                      "pools": {"gcp": "p1", "azure": "p2"}},
}


def dns(kind: str, **provider: Any) -> dict[str, Any]:
    record = CNAME if kind == "traffic_manager" else RECORD
    return {"provider": {**PROVIDERS[kind], **provider}, "records": [record]}


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_each_provider_parses_with_its_defaults(kind: str) -> None:
    """A minimal block of each type parses, with the defaults of the shared fields."""
    provider = parse(dns(kind)).provider
    assert provider.type == kind and provider.attempts == 3 and provider.timeout == 10.0


@pytest.mark.parametrize(("kind", "change", "path", "message"), [
    ("cloud_dns", {"managed_zone": "Shop_Zone"}, "provider.managed_zone", "not a managed zone name"),
    ("cloud_dns", {"api_endpoint": "dns.example"}, "provider.api_endpoint", "http:// or https://"),
    ("cloud_dns", {"poll_interval": "5m", "change_timeout": "1m"}, "provider.poll_interval",
     "less than change_timeout"),
    ("azure_dns", {"resource_group": "bad/group"}, "provider.resource_group", "not a resource group"),
    ("azure_dns", {"credentials": {"type": "client_secret", "tenant_id": "t", "client_id": "c"}},
     "provider.credentials.secret", "missing"),
    ("traffic_manager", {"endpoints": {"gcp": "same", "azure": "same"}}, "provider.endpoints",
     "its own endpoint"),
    ("route53", {"hosted_zone_id": "not a zone"}, "provider.hosted_zone_id", "pattern"),
    ("route53", {"access_key_id": "AKIA123"}, "provider.secret_access_key", "go together"),
    ("cloudflare_lb", {"account_id": "xyz"}, "provider.account_id", "pattern"),
    ("cloudflare_lb", {"pools": {"gcp": "p1"}}, "provider.pools", "at least two sites"),
])
def test_a_bad_setting_is_one_problem_at_its_path(kind: str, change: dict[str, Any], path: str, message: str) -> None:
    """Each bad setting is reported at its path under services.shop.dns."""
    found = problems(dns(kind, **change))
    assert any(p == f"services.shop.dns.{path}" and message in m for p, m in found), found


def test_routing_providers_route_one_name_and_know_every_site() -> None:
    """Traffic Manager and Cloudflare LB take one record; their endpoints/pools name the records' sites."""
    two = dns("cloudflare_lb")
    two["records"] = [RECORD, {**RECORD, "name": "api"}]
    assert any(p == "services.shop.dns.records" for p, _m in problems(two))
    found = problems(dns("traffic_manager", endpoints={"gcp": "gcp-ep", "aws": "aws-ep"}))
    assert any(p == "services.shop.dns.provider.endpoints" and "differ" in m for p, m in found), found
    found = problems({**dns("traffic_manager"), "epoch_record": "_epoch"})
    assert any(p == "services.shop.dns.epoch_record" and "profile (a tag)" in m for p, m in found), found


@pytest.mark.parametrize(("kind", "module"), [("cloud_dns", "google.cloud.dns"), ("azure_dns", "azure.mgmt.dns"),
                                              ("traffic_manager", "azure.mgmt.trafficmanager"), ("route53", "boto3")])
def test_a_missing_sdk_names_the_extra_to_install(kind: str, module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the provider's SDK the config is refused with the pip command of its extra."""
    monkeypatch.setitem(sys.modules, module, None)
    found = problems(dns(kind))
    assert any(p == "services.shop.dns.provider.type" and "pip install 'failover-engine[" in m
               for p, m in found), found

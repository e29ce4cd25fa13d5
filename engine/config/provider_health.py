"""The ``provider_health`` probe: the traffic provider's OWN health check of a site, read as a signal.

Where the provider runs its own checks from its own vantage points (Route 53 health checks, Traffic
Manager endpoint monitoring, Cloudflare LB pool monitors), the engine reads their verdict so it is not
the only judge. ``counts_as: info`` (default) shows it beside the engine's view, and where the two
disagree; ``counts_as: vote`` lets it count like any other probe of the site::

    probes:
      - type: provider_health
        name: route53
        counts_as: info
        interval: 30s
        health_check_id: 0b5e3c5e-1234-4d6f-9c1a-2b3c4d5e6f70
        provider: {type: route53, hosted_zone_id: Z0123456789ABC, zone: example.com}

``provider`` is the service's ``dns.provider`` block (a YAML anchor keeps them one): Traffic Manager reads
the endpoint of ``site`` (default: the site the probe belongs to is given as ``site``), Cloudflare LB the
pool of ``site``, Route 53 the health check ``health_check_id``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from engine.config.base import Duration, rule_error
from engine.config.dns_providers import CloudflareLbConfig, Route53Config, TrafficManagerConfig
from engine.config.probe_common import ProbeCommon

HealthProvider = Annotated[Route53Config | TrafficManagerConfig | CloudflareLbConfig, Field(discriminator="type")]


class ProviderHealthProbeConfig(ProbeCommon):
    """The provider's own health verdict on one site (see the module docstring)."""

    type: Literal["provider_health"]
    provider: HealthProvider
    counts_as: Literal["info", "vote"] = Field("info", description="info: shown, never decides; vote: a probe")
    site: str | None = Field(None, description="the site whose endpoint (Traffic Manager) or pool (Cloudflare)")
    health_check_id: str | None = Field(None, description="Route 53 health check id")
    interval: Duration = Field(30.0, description="time between two reads; the providers check every 10-60 s")
    timeout: Duration = Field(10.0, description="a read slower than this fails")

    @model_validator(mode="after")
    def _selector(self) -> Self:
        provider = self.provider
        if isinstance(provider, Route53Config):
            if not self.health_check_id:
                raise rule_error("health_check_id", "route53 reads one health check: give its id")
        elif self.site is None:
            raise rule_error("site", f"{provider.type} reads the endpoint or pool of one site: give the site")
        elif isinstance(provider, TrafficManagerConfig) and self.site not in provider.endpoints:
            raise rule_error("site", f"'{self.site}' has no endpoint in provider.endpoints "
                                     f"({sorted(provider.endpoints)})")
        elif isinstance(provider, CloudflareLbConfig) and self.site not in provider.pools:
            raise rule_error("site", f"'{self.site}' has no pool in provider.pools ({sorted(provider.pools)})")
        return self

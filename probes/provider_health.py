"""The ``provider_health`` probe: the traffic provider's own health verdict on one site.

- Route 53: ``GetHealthCheckStatus``; Route 53 itself counts an endpoint healthy when more than 18 %
  of its health checkers report it healthy (Route 53 Developer Guide, "How Amazon Route 53 determines
  whether a health check is healthy"); the probe applies the same rule to the observations it reads.
- Traffic Manager: the site's endpoint ``endpointMonitorStatus``: ``Online`` is healthy; ``Degraded``,
  ``Stopped``, ``Inactive`` and ``Disabled`` are not; ``CheckingEndpoint`` is not yet known (a failed
  observation saying so).
- Cloudflare LB: ``GET /accounts/{account}/load_balancers/pools/{pool}/health`` ``pop_health.healthy``.

The observation's ``details`` carry ``counts_as`` (``info`` or ``vote``), the provider and its own
words, so status can show where the provider and the engine disagree (:func:`disagreement`). Like
every probe, a failure to read is an observation, never an exception.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actions.dns.azure_common import call_options, client_options, credential
from actions.dns.route53 import build_client
from actions.dns.traffic_manager import with_etag
from engine.config.dns_providers import CloudflareLbConfig, Route53Config, TrafficManagerConfig
from engine.config.provider_health import ProviderHealthProbeConfig
from engine.core.clock import Clock
from probes.base import BaseProbe

ROUTE53_HEALTHY_SHARE = 0.18
TM_HEALTHY = {"Online"}


def disagreement(site: str, provider: str, provider_ok: bool | None, engine_up: bool | None) -> str | None:
    """The sentence status shows when the provider's vantage and the engine's disagree on ``site``, else None."""
    if provider_ok is None or engine_up is None or provider_ok == engine_up:
        return None
    return (f"{provider} sees {site} {'healthy' if provider_ok else 'unhealthy'} while the engine sees it "
            f"{'UP' if engine_up else 'DOWN'}")


class ProviderHealthProbe(BaseProbe):
    """Reads the provider's own health check of one site (see the module docstring)."""

    def __init__(self, config: ProviderHealthProbeConfig, *, clock: Clock | None = None,
                 azure_credential: Any = None) -> None:
        super().__init__(timeout=config.timeout, clock=clock)
        self.config = config
        self._client: Any = None
        self._credential = azure_credential
        self._own_credential = azure_credential is None

    def _details(self, **extra: object) -> dict[str, object]:
        return {"counts_as": self.config.counts_as, "provider": self.config.provider.type, **extra}

    async def _check(self) -> tuple[bool, str, float | None, dict[str, object]]:
        provider = self.config.provider
        if isinstance(provider, Route53Config):
            return await self._route53(provider)
        if isinstance(provider, TrafficManagerConfig):
            return await self._traffic_manager(provider)
        assert isinstance(provider, CloudflareLbConfig)
        return await self._cloudflare(provider)

    async def _route53(self, p: Route53Config) -> tuple[bool, str, float | None, dict[str, object]]:
        if self._client is None:
            self._client = await asyncio.to_thread(build_client, p)
        answer = await asyncio.to_thread(self._client.get_health_check_status,
                                         HealthCheckId=self.config.health_check_id)
        reports = [str(o.get("StatusReport", {}).get("Status", "")) for o in answer.get("HealthCheckObservations", [])]
        if not reports:
            return False, "Route 53 reports no health checker observations", None, self._details()
        healthy = sum(1 for r in reports if r.startswith("Success"))
        share = healthy / len(reports)
        ok = share > ROUTE53_HEALTHY_SHARE
        first_failure = next((r for r in reports if not r.startswith("Success")), "")
        reason = (f"Route 53: {healthy} of {len(reports)} checkers healthy"
                  + ("" if ok or not first_failure else f" ({first_failure[:120]})"))
        return ok, reason, share, self._details(healthy_checkers=healthy, checkers=len(reports))

    async def _traffic_manager(self, p: TrafficManagerConfig) -> tuple[bool, str, float | None, dict[str, object]]:
        if self._client is None:
            from azure.mgmt.trafficmanager.aio import TrafficManagerManagementClient

            if self._credential is None:
                self._credential = credential(p)
            self._client = TrafficManagerManagementClient(self._credential, p.subscription_id, **client_options(p))
        profile, _etag = await self._client.profiles.get(p.resource_group, p.profile, cls=with_etag,
                                                         **call_options(p))
        site = self.config.site or ""
        name = p.endpoints[site]
        endpoint = next((e for e in profile.get("properties", {}).get("endpoints", []) if e.get("name") == name), None)
        if endpoint is None:
            return False, f"Traffic Manager profile {p.profile} has no endpoint {name}", None, self._details()
        status = str(endpoint.get("properties", {}).get("endpointMonitorStatus") or "Unknown")
        ok = status in TM_HEALTHY
        return ok, f"Traffic Manager monitor: {site} endpoint {name} {status}", None, self._details(status=status)

    async def _cloudflare(self, p: CloudflareLbConfig) -> tuple[bool, str, float | None, dict[str, object]]:
        from actions.dns.cloudflare import DEFAULT_BASE_URL, _TokenOnlyClient

        if self._client is None:
            self._client = _TokenOnlyClient(token=p.api_token.get_secret_value(),
                                            base_url=p.base_url or DEFAULT_BASE_URL, max_retries=0,
                                            timeout=self.config.timeout)
        site = self.config.site or ""
        pool = p.pools[site]
        answer = await self._client.load_balancers.pools.health.get(pool, account_id=p.account_id)
        healthy = getattr(getattr(answer, "pop_health", None), "healthy", None) if answer is not None else None
        if healthy is None:
            return False, f"Cloudflare reports no health for pool {pool} ({site})", None, self._details()
        return bool(healthy), f"Cloudflare LB monitor: {site} pool {'healthy' if healthy else 'unhealthy'}", None, \
            self._details(pool=pool)

    def describe_error(self, exc: BaseException) -> str:
        status = getattr(exc, "status_code", None)  # azure-core and cloudflare errors carry it
        response = getattr(exc, "response", None)
        if status is None and isinstance(response, dict):  # botocore's ClientError
            status = response.get("Error", {}).get("Code")
        return f"{self.config.provider.type} health read failed: {type(exc).__name__}" + (
            f" ({status})" if status else "")

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            closing = client.close()
            if asyncio.iscoroutine(closing):
                await closing
        if self._own_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None

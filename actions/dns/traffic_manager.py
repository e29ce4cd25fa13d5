"""Azure Traffic Manager through azure-mgmt-trafficmanager (extra ``[traffic-manager]``), imported lazily.

The service's one record is the profile's DNS name (``<relativeName>.trafficmanager.net``), which
Traffic Manager answers with a CNAME to the target of the endpoint it routes to. A shift changes
the profile in ONE write, under ``If-Match`` on the ETag the profile was read with:

- ``mode: priority``: the target site's endpoint gets priority 1, the others follow in their old
  order (a priority swap); ``mode: enable``: the target's endpoint is enabled, the others disabled;
- the epoch travels in the same write, as the profile tag ``failover-epoch`` (``epoch=N site=S op=T``).

A profile changed since it was read (a portal edit, a rival's shift) answers 412 and nothing
changes: DnsConflict. The generated client (api-version 2026-09-01) has no ``if_match`` argument
and its ``Profile`` model no ``etag`` field, so the provider sends the header itself and reads the
``ETag`` response header. Whether the live service enforces ``If-Match`` on profiles is not shown
by its published REST reference; the provider also compares a fresh read with ``expected`` right
before writing, so a change made before that moment is refused in any case (see docs/providers.md).

Traffic Manager routes only to endpoints its own monitor sees healthy: :meth:`monitor_status` reads
each site's ``endpointMonitorStatus`` (``Online``, ``Degraded``, ``CheckingEndpoint``, ``Stopped``,
``Disabled``, ``Inactive``), the provider's own vantage on the sites.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from actions.dns.azure_common import NOT_FOUND, arm_call, call_options, client_options, credential
from actions.dns.cas import CasProvider, ConditionFailed
from actions.dns.errors import DnsConfigError, DnsRefused
from actions.dns.state import DnsState, Epoch, RecordState, parse_epoch, site_of
from actions.dns.weights import Weights, check_shares, weights_conflict, weights_of
from engine.config.dns import DnsConfig, RecordConfig, canonical_value
from engine.config.dns_providers import TrafficManagerConfig

TAG = "failover-epoch"


def with_etag(response: Any, _deserialized: Any, _headers: Any) -> tuple[dict[str, Any], str | None]:
    http = response.http_response
    return http.json(), http.headers.get("ETag")


class TrafficManagerProvider(CasProvider[TrafficManagerConfig]):
    """Reads and shifts the routing of one Traffic Manager profile."""

    kind = "Traffic Manager"

    def __init__(self, config: DnsConfig, service: str, *, credential: Any = None) -> None:
        super().__init__(config, service, TrafficManagerConfig)
        self._credential = credential
        self._own_credential = credential is None
        self.epoch_name = f"{self._p.profile} tag {TAG}"
        self._profile: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"TrafficManagerProvider(resource_group={self._p.resource_group!r}, profile={self._p.profile!r})"

    def _sdk(self) -> Any:
        if self._client is None:
            from azure.mgmt.trafficmanager.aio import TrafficManagerManagementClient

            if self._credential is None:
                self._credential = credential(self._p)
            self._client = TrafficManagerManagementClient(self._credential, self._p.subscription_id,
                                                          **client_options(self._p))
        return self._client

    async def _get(self) -> tuple[dict[str, Any], str | None]:
        profiles = self._sdk().profiles
        found: Any = await arm_call(self._p, f"read of profile {self._p.profile}", lambda: profiles.get(
            self._p.resource_group, self._p.profile, cls=with_etag, **call_options(self._p)))
        if found is NOT_FOUND:
            raise DnsConfigError(f"unknown profile: resource group {self._p.resource_group} has no Traffic Manager "
                                 f"profile {self._p.profile}")
        return found[0], found[1]

    def _endpoints(self, profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """site -> endpoint (as read); DnsConfigError when a configured endpoint is missing."""
        by_name = {e.get("name"): e for e in profile.get("properties", {}).get("endpoints", [])}
        missing = sorted(n for n in self._p.endpoints.values() if n not in by_name)
        if missing:
            raise DnsConfigError(f"profile {self._p.profile} has no endpoint {', '.join(missing)}")
        return {site: by_name[name] for site, name in self._p.endpoints.items()}

    def _active(self, endpoints: dict[str, dict[str, Any]]) -> list[str]:
        """The sites Traffic Manager is configured to route to, the preferred first."""
        enabled = {s: e["properties"] for s, e in endpoints.items()
                   if e["properties"].get("endpointStatus", "Enabled") == "Enabled"}
        if self._p.mode == "enable":
            return sorted(enabled)
        return sorted(enabled, key=lambda s: int(enabled[s].get("priority") or 1000))

    def _state(self, profile: dict[str, Any], etag: str | None, config: RecordConfig) -> DnsState:
        endpoints = self._endpoints(profile)
        active = self._active(endpoints)
        if self._p.mode == "enable" and len(active) != 1:
            values: tuple[str, ...] = tuple(sorted(canonical_value("CNAME", endpoints[s]["properties"]["target"])
                                                   for s in active))
        else:
            values = (canonical_value("CNAME", endpoints[active[0]]["properties"]["target"]),) if active else ()
        ttl = int(profile.get("properties", {}).get("dnsConfig", {}).get("ttl") or 0)
        fqdn = self._config.fqdn(config.name)
        record = RecordState(fqdn, "CNAME", ttl, values, site_of(values, config.targets))
        text = (profile.get("tags") or {}).get(TAG)
        epoch = parse_epoch(text, self.epoch_name)
        epoch = Epoch(epoch.number, epoch.site, epoch.op, epoch.text, ref=etag)
        return DnsState(self.zone, (record,), epoch, self.epoch_name)

    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        """The profile, its routing (the preferred enabled endpoint's target) and the epoch tag, with its ETag."""
        profile, etag = await self._get()
        self._profile = profile
        return self._state(profile, etag, self._config.records[0])

    def _planned_profile(self, profile: dict[str, Any], planned: DnsState) -> dict[str, Any]:
        body = copy.deepcopy(profile)
        body.pop("etag", None)
        endpoints = self._endpoints(body)
        target = planned.records[0].site
        if planned.epoch.site is not None and target in endpoints:
            if self._p.mode == "enable":
                for site, endpoint in endpoints.items():
                    endpoint["properties"]["endpointStatus"] = "Enabled" if site == target else "Disabled"
            else:
                order = [target] + [s for s in sorted(endpoints, key=lambda s: int(
                    endpoints[s]["properties"].get("priority") or 1000)) if s != target]
                for priority, site in enumerate(order, start=1):
                    endpoints[site]["properties"]["priority"] = priority
        for endpoint in body.get("properties", {}).get("endpoints", []):
            endpoint.get("properties", {}).pop("endpointMonitorStatus", None)  # read-only
        body.setdefault("properties", {}).setdefault("dnsConfig", {})["ttl"] = planned.records[0].ttl
        body["tags"] = {**(body.get("tags") or {}), TAG: planned.epoch.text or ""}
        return body

    async def _write(self, expected: DnsState, planned: DnsState) -> None:
        profile, etag = await self._get()
        current = self._state(profile, etag, self._config.records[0])
        if current != expected:  # changed before our write: refused whatever If-Match does
            raise ConditionFailed(f"profile {self._p.profile} changed since it was read")
        if_match = expected.epoch.ref or etag
        profiles = self._sdk().profiles
        body = self._planned_profile(profile, planned)
        headers = {"If-Match": if_match} if if_match else {}
        await arm_call(self._p, f"write of profile {self._p.profile}", lambda: profiles.create_or_update(
            self._p.resource_group, self._p.profile, body, headers=headers, **call_options(self._p)))

    # -- weights (a profile with trafficRoutingMethod Weighted) ------------------------------------
    def _weights(self, profile: dict[str, Any], etag: str | None) -> Weights:
        method = profile.get("properties", {}).get("trafficRoutingMethod")
        if method != "Weighted":
            raise DnsRefused(f"profile {self._p.profile} routes by {method}, not Weighted: it has no weights to move")
        raw = {site: 0 if e["properties"].get("endpointStatus") == "Disabled"
               else int(e["properties"].get("weight") or 1) for site, e in self._endpoints(profile).items()}
        return weights_of(raw, parse_epoch((profile.get("tags") or {}).get(TAG), self.epoch_name).number, etag)

    async def read_weights(self) -> Weights:
        """Each site's share of a Weighted profile (a disabled endpoint is 0 %)."""
        profile, etag = await self._get()
        return self._weights(profile, etag)

    async def set_weights(self, expected: Weights, shares: Mapping[str, int]) -> Weights:
        """Endpoint weights (percent x 10; 0 % disables the endpoint) in one write under If-Match."""
        check_shares(shares, set(self._p.endpoints))
        profile, etag = await self._get()
        current = self._weights(profile, etag)
        if current != expected:
            raise weights_conflict(f"profile {self._p.profile}", expected, current)
        body = copy.deepcopy(profile)
        body.pop("etag", None)
        for site, endpoint in self._endpoints(body).items():
            props = endpoint["properties"]
            props.pop("endpointMonitorStatus", None)
            props["endpointStatus"] = "Enabled" if shares[site] else "Disabled"
            props["weight"] = max(1, shares[site] * 10)
        profiles = self._sdk().profiles
        headers = {"If-Match": expected.ref or etag or "*"}
        try:
            await arm_call(self._p, f"weights of profile {self._p.profile}", lambda: profiles.create_or_update(
                self._p.resource_group, self._p.profile, body, headers=headers, **call_options(self._p)))
        except ConditionFailed:
            raise weights_conflict(f"profile {self._p.profile}", expected, await self.read_weights()) from None
        return await self.read_weights()

    async def monitor_status(self) -> dict[str, str]:
        """Each site's endpoint monitor status as Traffic Manager's own health checks see it."""
        profile, _etag = await self._get()
        return {site: str(e["properties"].get("endpointMonitorStatus") or "Unknown")
                for site, e in self._endpoints(profile).items()}

    async def _prove_access(self) -> str:
        status = await self.monitor_status()
        seen = ", ".join(f"{site} {value}" for site, value in sorted(status.items()))
        return f"credentials read profile {self._p.profile}; its monitor sees {seen}"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._own_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None

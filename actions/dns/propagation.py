"""How long each provider takes, at worst, from an accepted change to every authoritative server
answering it: the provider's share of the worst-case RTO (resolver caches add the record TTL on top).

Each figure says whether it is *documented* by the provider (with the source) or an *assumption* of
this project (no published bound was found; the figure is conservative and the runbook's verify step
measures the real time at the authoritative servers anyway). ``docs/providers.md`` shows the table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Propagation:
    """A provider type's worst-case propagation to its authoritative servers."""

    worst_s: float
    documented: bool
    source: str
    note: str


PROPAGATION: dict[str, Propagation] = {
    "rfc2136": Propagation(
        0.0, True, "RFC 2136 section 3.7 (the primary applies the update before it answers NOERROR)",
        "the primary answers at once; secondaries follow by NOTIFY + IXFR, at worst after the zone's SOA "
        "refresh: list them under dns.verify.nameservers so the verify step waits for them"),
    "cloudflare": Propagation(
        60.0, False, "assumption: Cloudflare publishes no bound for DNS record propagation",
        "changes usually show at Cloudflare's edge within seconds"),
    "cloud_dns": Propagation(
        120.0, False, "assumption: Cloud DNS documents the change status (pending -> done), not a time bound",
        "the provider waits for the change to be done (dns.provider.change_timeout) before it returns"),
    "azure_dns": Propagation(
        60.0, False, "assumption: Azure DNS publishes no bound for record set propagation",
        "the shift is 1 + N conditional writes; each is applied when its request returns"),
    "traffic_manager": Propagation(
        60.0, False, "assumption for a profile change; https://learn.microsoft.com/azure/traffic-manager/"
                     "traffic-manager-monitoring for the monitor",
        "Traffic Manager's own failover (endpoint monitor) takes probing interval (30 s, or 10 s fast) x "
        "(tolerated failures (default 3) + 1) + the profile TTL"),
    "route53": Propagation(
        60.0, True, "https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/resource-record-sets-editing.html "
                    "('Changes generally propagate to all Route 53 name servers within 60 seconds')",
        "the provider waits for GetChange INSYNC (dns.provider.change_timeout) before it returns"),
    "cloudflare_lb": Propagation(
        60.0, False, "assumption: Cloudflare publishes no bound for load balancer changes",
        "Cloudflare's own pool failover waits for its monitor (interval default 60 s, with retries)"),
}


def propagation_worst_s(provider_type: str) -> float:
    """The worst-case seconds from an accepted change to every authoritative server, for ``provider_type``."""
    return PROPAGATION[provider_type].worst_s

"""The DNS provider protocol, and the one place that picks a provider from a service's config.

A provider reads a service's records with the epoch stored beside them, and shifts them
*conditionally*: from exactly what was read at epoch N to the target site at epoch N+1 in one
atomic operation, or :class:`~actions.dns.errors.DnsConflict` carrying what is there now.
Providers are imported lazily so the core runs without any cloud SDK (types: ``rfc2136``,
``cloudflare``, ``cloud_dns``, ``azure_dns``, ``traffic_manager``, ``route53``, ``cloudflare_lb``);
:func:`build_verifier` makes the matching :class:`~actions.dns.verify.Verifier`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from actions.dns.state import DnsState
from actions.dns.verify import Verifier
from engine.config.dns import DnsConfig, RecordConfig, split_server
from engine.config.loader import UNSET_PLACEHOLDER
from engine.core.clock import Clock


class DnsProvider(Protocol):
    """Read and conditionally shift the records of one service."""

    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        """The current values of ``records`` (default: all configured), their sites and the epoch."""
        ...

    async def shift(self, expected: DnsState, target_site: str, new_epoch: int,
                    *, op: str | None = None) -> DnsState:
        """Change from ``expected`` to ``target_site`` at ``new_epoch`` atomically; return the new state.

        ``new_epoch`` must be ``expected.epoch.number + 1`` (ValueError otherwise). ``op`` is the
        writer's token stored in the epoch record; a caller that retries the same operation passes
        the same ``op`` (default: derived per provider from service, epoch and target, so the same
        provider retrying recognises itself). Finding our own write already in place, whether the
        reply to it was lost or ``expected`` already shows it, is success, not a conflict.

        Raises DnsConflict (with the current state) when the zone is not ``expected`` any more,
        DnsUnavailable when no answer came and a read-back could not show our write.
        """
        ...

    async def retime(self, expected: DnsState, ttls: Mapping[str, int]) -> DnsState:
        """Change only the TTLs of ``expected``'s records, conditionally (DnsConflict when the zone moved)."""
        ...

    async def validate(self, expected: DnsState, target_site: str, new_epoch: int) -> str:
        """Check, without changing anything, that :meth:`shift` with these arguments would be accepted
        (credentials and the compare-and-set conditions); a sentence saying what was proven, or the
        same errors as ``shift``."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections."""
        ...


def build_provider(config: DnsConfig, service: str, *, read_only: bool = False) -> DnsProvider:
    """The provider for ``config`` (the ``dns:`` section of service ``service``). ``read_only``: only
    reads follow (``dns show``); an RFC 2136 provider then signs its queries only when its TSIG secret
    was given (BIND answers unsigned queries; updates always need the key)."""
    kind = config.provider.type
    if kind == "rfc2136":
        from actions.dns.rfc2136 import Rfc2136Provider

        return Rfc2136Provider(config, service, sign_queries=not read_only or _has_tsig(config))
    if kind == "cloud_dns":
        from actions.dns.cloud_dns import CloudDnsProvider

        return CloudDnsProvider(config, service)
    if kind == "azure_dns":
        from actions.dns.azure_dns import AzureDnsProvider

        return AzureDnsProvider(config, service)
    if kind == "traffic_manager":
        from actions.dns.traffic_manager import TrafficManagerProvider

        return TrafficManagerProvider(config, service)
    if kind == "route53":
        from actions.dns.route53 import Route53Provider

        return Route53Provider(config, service)
    if kind == "cloudflare_lb":
        from actions.dns.cloudflare_lb import CloudflareLbProvider

        return CloudflareLbProvider(config, service)
    from actions.dns.cloudflare import CloudflareProvider

    return CloudflareProvider(config, service)


def build_verifier(config: DnsConfig, *, clock: Clock | None = None) -> Verifier:
    """The verifier for ``config``: with RFC 2136, NS discovery asks the primary update server."""
    discover_from = None
    if config.provider.type == "rfc2136":
        discover_from = split_server(config.provider.servers[0], config.provider.port)
    return Verifier(config, discover_from=discover_from, clock=clock)


def _has_tsig(config: DnsConfig) -> bool:
    tsig = getattr(config.provider, "tsig", None)
    return tsig is not None and tsig.secret.get_secret_value() != UNSET_PLACEHOLDER

"""Weighted routing as the providers expose it: what a read returns, the protocol of the providers that
have weights, and the clear refusal of those that have none.

Weights are per site, in percent of the traffic (0-100, summing to 100); each provider maps them onto
its own scale (Traffic Manager endpoint weights 1-1000 with 0 as a disabled endpoint, Cloudflare pool
weights 0-1). A weight change is conditional like a shift: on the version read (ETag, or a fresh
read-compare) and on the epoch being unchanged, so a rival's move in between is DnsConflict.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from actions.dns.errors import DnsConfigError, DnsConflict, DnsError, DnsRefused


@dataclass(frozen=True)
class Weights:
    """Each site's share of the traffic (percent) and the epoch it was read at."""

    shares: tuple[tuple[str, int], ...]
    epoch: int
    ref: str | None = field(default=None, compare=False)  # the provider's version token

    def as_dict(self) -> dict[str, int]:
        return dict(self.shares)

    def describe(self) -> str:
        return ", ".join(f"{site} {share} %" for site, share in self.shares) + f" (epoch {self.epoch})"


def weights_of(shares: Mapping[str, float], epoch: int, ref: str | None = None) -> Weights:
    """Weights from raw shares on any scale, normalised to whole percent summing to 100."""
    total = sum(shares.values())
    if total <= 0:
        return Weights(tuple(sorted((s, 0) for s in shares)), epoch, ref)
    percent = {site: round(100 * value / total) for site, value in shares.items()}
    drift = 100 - sum(percent.values())
    if drift:
        biggest = max(percent, key=lambda s: percent[s])
        percent[biggest] += drift
    return Weights(tuple(sorted(percent.items())), epoch, ref)


@runtime_checkable
class WeightedProvider(Protocol):
    """A provider that routes by weights."""

    async def read_weights(self) -> Weights:
        """Each configured site's share now, with the epoch and the version token."""
        ...

    async def set_weights(self, expected: Weights, shares: Mapping[str, int]) -> Weights:
        """Write ``shares`` (percent per site) if weights and epoch are still ``expected``; else DnsConflict."""
        ...


def weighted(provider: Any, provider_type: str) -> WeightedProvider:
    """``provider`` as a :class:`WeightedProvider`, or DnsRefused saying that this provider type has no weights."""
    if isinstance(provider, WeightedProvider):
        return provider
    raise DnsRefused(f"provider type {provider_type} has no weights: a weighted move needs cloud_dns, "
                     f"traffic_manager, route53 or cloudflare_lb with weighted routing")


def check_shares(shares: Mapping[str, int], sites: set[str]) -> None:
    """ValueError unless ``shares`` names exactly ``sites`` with whole percents summing to 100."""
    if set(shares) != sites:
        raise ValueError(f"weights must name exactly the sites {sorted(sites)}, not {sorted(shares)}")
    if any(not 0 <= v <= 100 for v in shares.values()) or sum(shares.values()) != 100:
        raise ValueError(f"weights are percents summing to 100, not {dict(shares)}")


def weights_conflict(where: str, expected: Weights, current: Weights) -> Exception:
    """The DnsConflict for weights that moved since they were read."""
    return DnsConflict(f"{where} changed since it was read: expected {expected.describe()}, found {current.describe()}",
                       found=current.describe(), expected=expected.describe(), epoch=current.epoch, site="weighted")


def agreed(per_record: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The weights every weighted record has (each record of a service moves with the same shares);
    DnsConfigError naming two records that disagree."""
    first_name, first = next(iter(per_record.items()))
    for name, raw in per_record.items():
        if weights_of(raw, 0).shares != weights_of(first, 0).shares:
            raise DnsConfigError(f"the weighted records disagree: {first_name.rstrip('.')} has "
                                 f"{_shares(first)}, {name.rstrip('.')} {_shares(raw)}")
    return dict(first)


def unmoved(where: str, expected: Weights, per_record: Mapping[str, Mapping[str, float]], epoch: int) -> None:
    """DnsConflict naming the record when any record's weights (or the epoch) are no longer ``expected``."""
    for name, raw in per_record.items():
        current = weights_of(raw, epoch)
        if current != expected:
            found = f"{name.rstrip('.')} {current.describe()}"
            raise DnsConflict(f"{where} changed since it was read: expected {expected.describe()}, found {found}",
                              found=found, expected=expected.describe(), epoch=current.epoch, site="weighted")


async def refused(where: str, expected: Weights, read: Callable[[], Awaitable[Weights]]) -> Exception:
    """The DnsConflict for a conditional weights write the provider refused, with what a read-back finds."""
    try:
        return weights_conflict(where, expected, await read())
    except DnsError as exc:
        return DnsConflict(f"{where} changed since it was read: expected {expected.describe()}, found: {exc}",
                           found=str(exc), expected=expected.describe(), epoch=expected.epoch, site="weighted")


def _shares(raw: Mapping[str, float]) -> str:
    return ", ".join(f"{site} {share} %" for site, share in weights_of(raw, 0).shares)

"""Cloudflare Load Balancing through the cloudflare SDK (extra ``[cloudflare]``), imported lazily.

The service's one record is the load balancer's hostname. Cloudflare answers it from the first
healthy, enabled pool of ``default_pools`` (with ``steering_policy: off``); a shift moves the target
site's pool to the front of ``default_pools`` and writes the epoch (``epoch=N site=S op=T``) into the
load balancer's ``description`` in ONE ``PATCH``, so order and epoch change together.

Cloudflare has no conditional write (no ``If-Match``, no version field to compare on write), so the
compare-and-set is read-compare-write as for Cloudflare DNS records (:mod:`actions.dns.cloudflare`):
right before the PATCH the load balancer and its pools are read again and compared with ``expected``
(the whole pool order, the first enabled pool's origins, the description); any difference is
DnsConflict and nothing is written. A change in the milliseconds between that read and the PATCH is
not seen by Cloudflare; every shift through this provider rewrites the description, so a rival's shift
shows on the read-back and the verifier. Pools are not enabled or disabled: a pool is a separate
object (and often shared), so changing two pools and the load balancer could not be one write.

:meth:`pool_health` reads each site's pool health as Cloudflare's monitors see it
(``GET /accounts/{account}/load_balancers/pools/{pool}/health``), the provider's own vantage.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from actions.dns.cas import CasProvider, ConditionFailed
from actions.dns.errors import DnsAuthError, DnsConfigError, DnsRefused, DnsUnavailable
from actions.dns.state import DnsState, RecordState, parse_epoch, site_of
from actions.dns.weights import Weights, check_shares, weights_conflict, weights_of
from engine.config.dns import DnsConfig, RecordConfig, canonical_value
from engine.config.dns_providers import CloudflareLbConfig

T = TypeVar("T")


class CloudflareLbProvider(CasProvider[CloudflareLbConfig]):
    """Reads and shifts the pool order of one Cloudflare load balancer."""

    kind = "Cloudflare LB"

    def __init__(self, config: DnsConfig, service: str, *, client: Any = None) -> None:
        super().__init__(config, service, CloudflareLbConfig, client=client)
        self._zone_id: str | None = None
        self._lb_id: str | None = None
        self._hostname = config.fqdn(config.records[0].name).rstrip(".")
        self.epoch_name = f"load balancer {self._hostname} description"
        self._site_of_pool = {pool: site for site, pool in self._p.pools.items()}

    def __repr__(self) -> str:
        return f"CloudflareLbProvider(zone={self.zone!r}, load_balancer={self._hostname!r})"

    def _sdk(self) -> Any:
        if self._client is None:
            from actions.dns.cloudflare import DEFAULT_BASE_URL, _TokenOnlyClient

            self._client = _TokenOnlyClient(token=self._p.api_token.get_secret_value(),
                                            base_url=self._p.base_url or DEFAULT_BASE_URL,
                                            max_retries=self._p.attempts - 1, timeout=self._p.timeout)
        return self._client

    async def _call(self, what: str, call: Callable[[], Awaitable[T | None]]) -> T:
        import cloudflare

        try:
            async with asyncio.timeout(self._p.attempts * (self._p.timeout + 8) + 1):
                result = await call()
        except (cloudflare.AuthenticationError, cloudflare.PermissionDeniedError) as exc:
            raise DnsAuthError(f"Cloudflare refused the API token ({exc.status_code}) during {what}") from None
        except (cloudflare.RateLimitError, cloudflare.InternalServerError) as exc:
            raise DnsUnavailable(f"{what}: Cloudflare status {exc.status_code} after {self._p.attempts} "
                                 f"tr{'y' if self._p.attempts == 1 else 'ies'}") from None
        except (cloudflare.APITimeoutError, cloudflare.APIConnectionError, TimeoutError) as exc:
            raise DnsUnavailable(f"{what}: Cloudflare gave no answer ({type(exc).__name__})") from None
        except cloudflare.NotFoundError:
            raise DnsConfigError(f"{what}: Cloudflare has no such object (404)") from None
        except cloudflare.APIStatusError as exc:
            raise DnsRefused(f"Cloudflare refused the {what} ({exc.status_code})") from None
        if result is None:
            raise DnsUnavailable(f"{what}: Cloudflare answered success: false")
        return result

    async def _balancer(self) -> Any:
        client = self._sdk()
        if self._zone_id is None:
            page = await self._call(f"lookup of zone {self.zone}",
                                    lambda: client.zones.list(name=self.zone, per_page=5))
            if not page.result:
                raise DnsConfigError(f"unknown zone: Cloudflare has no zone {self.zone} for this token")
            self._zone_id = page.result[0].id
        zone_id = self._zone_id
        if self._lb_id is None:
            page = await self._call("list of load balancers", lambda: client.load_balancers.list(zone_id=zone_id))
            found = [lb for lb in page.result or [] if (lb.name or "").rstrip(".").lower() == self._hostname]
            if not found:
                raise DnsConfigError(f"zone {self.zone} has no load balancer {self._hostname}")
            self._lb_id = found[0].id
            return found[0]
        lb_id = self._lb_id
        return await self._call(f"read of load balancer {self._hostname}",
                                lambda: client.load_balancers.get(lb_id, zone_id=zone_id))

    async def _pool(self, pool_id: str) -> Any:
        client = self._sdk()
        return await self._call(f"read of pool {pool_id}", lambda: client.load_balancers.pools.get(
            pool_id, account_id=self._p.account_id))

    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        """The load balancer (pool order, description) and the first enabled pool's origins."""
        balancer = await self._balancer()
        order = [p if isinstance(p, str) else str(p) for p in balancer.default_pools or []]
        unknown = [p for p in order if p not in self._site_of_pool]
        config = self._config.records[0]
        pools = await asyncio.gather(*(self._pool(p) for p in order if p in self._site_of_pool))
        first = next((p for p in pools if p.enabled is not False), None)
        values: tuple[str, ...] = ()
        if first is not None:
            values = tuple(sorted(canonical_value(config.type, o.address) for o in first.origins or []
                                  if o.enabled is not False and o.address))
        site = site_of(values, config.targets)
        if unknown and order and order[0] in unknown:
            site = "unknown"
        record = RecordState(self._config.fqdn(config.name), config.type, int(balancer.ttl or 30), values, site,
                             refs=tuple(order))
        epoch = parse_epoch(balancer.description or None, self.epoch_name)
        epoch = replace(epoch, ref=balancer.modified_on)
        return DnsState(self.zone, (record,), epoch, self.epoch_name)

    async def _write(self, expected: DnsState, planned: DnsState) -> None:
        current = await self.read()
        if current != expected or (expected.records[0].refs and current.records[0].refs != expected.records[0].refs):
            raise ConditionFailed(f"load balancer {self._hostname} changed since it was read")
        order = list(current.records[0].refs)
        target = self._p.pools.get(planned.records[0].site)
        if target is not None:
            order = [target] + [p for p in order if p != target]
        client = self._sdk()
        lb_id, zone_id = self._lb_id, self._zone_id
        assert lb_id is not None and zone_id is not None
        await self._call(f"change of load balancer {self._hostname}", lambda: client.load_balancers.edit(
            lb_id, zone_id=zone_id, default_pools=order, description=planned.epoch.text or "",
            ttl=planned.records[0].ttl))

    # -- weights (steering_policy random, random_steering.pool_weights) ---------------------------
    async def read_weights(self) -> Weights:
        """Each site's pool weight under random steering, as a share of the traffic."""
        balancer = await self._balancer()
        if balancer.steering_policy != "random":
            raise DnsRefused(f"load balancer {self._hostname} steers by {balancer.steering_policy}, not random: "
                             f"it has no pool weights to move")
        steering = balancer.random_steering
        weights = dict(getattr(steering, "pool_weights", None) or {})
        default = float(getattr(steering, "default_weight", None) or 1.0)
        raw = {site: float(weights.get(pool, default)) for site, pool in self._p.pools.items()}
        epoch = parse_epoch(balancer.description or None, self.epoch_name).number
        return weights_of(raw, epoch, balancer.modified_on)

    async def set_weights(self, expected: Weights, shares: Mapping[str, int]) -> Weights:
        """Pool weights (percent / 100) in one PATCH after a read-compare (Cloudflare has no If-Match)."""
        check_shares(shares, set(self._p.pools))
        current = await self.read_weights()
        if current != expected:
            raise weights_conflict(f"load balancer {self._hostname}", expected, current)
        client = self._sdk()
        lb_id, zone_id = self._lb_id, self._zone_id
        assert lb_id is not None and zone_id is not None
        steering = {"pool_weights": {self._p.pools[site]: share / 100 for site, share in shares.items()},
                    "default_weight": 0}
        await self._call(f"weights of load balancer {self._hostname}", lambda: client.load_balancers.edit(
            lb_id, zone_id=zone_id, steering_policy="random", random_steering=steering))
        return await self.read_weights()

    async def pool_health(self) -> dict[str, bool | None]:
        """Each site's pool health as Cloudflare's monitors report it (None when not reported)."""
        client = self._sdk()
        health: dict[str, bool | None] = {}
        pools = client.load_balancers.pools
        for site, pool_id in self._p.pools.items():
            answer: Any = await self._call(f"health of pool {pool_id}", functools.partial(
                pools.health.get, pool_id, account_id=self._p.account_id))
            pop = getattr(answer, "pop_health", None)
            health[site] = getattr(pop, "healthy", None)
        return health

    async def _prove_access(self) -> str:
        health = await self.pool_health()
        seen = ", ".join(f"{s} {'healthy' if h else 'unhealthy' if h is False else 'unknown'}"
                         for s, h in sorted(health.items()))
        return f"token reads load balancer {self._hostname} and its pools ({seen})"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

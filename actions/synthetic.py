"""Synthetic requests replayed against each site and compared (drills).

Each configured request is sent ``repeat`` times to every site's base URL, a few at a time, each on
a new connection (what a client arriving after a DNS change does). Per site: requests, errors
(status not expected, timeout, refused), error rate, latency p50/p95. :func:`compare` then says
whether the standby answers like the primary: error rate at most ``max_error_rate_increase``
above the primary's, p95 at most ``max_p95_ratio`` times the primary's (below ``p95_floor`` is
fast enough whatever the ratio).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from engine.config.drills import SyntheticConfig

CONCURRENCY = 4


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass(frozen=True, slots=True)
class SiteSample:
    site: str
    requests: int
    errors: int
    p50_s: float | None
    p95_s: float | None
    failures: tuple[str, ...] = field(default=())

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    def describe(self) -> str:
        p50 = "n/a" if self.p50_s is None else f"{self.p50_s * 1000:.0f} ms"
        p95 = "n/a" if self.p95_s is None else f"{self.p95_s * 1000:.0f} ms"
        return f"{self.site}: {self.errors}/{self.requests} errors, p50 {p50}, p95 {p95}"

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "requests": self.requests, "errors": self.errors,
                "error_rate": round(self.error_rate, 4), "p50_s": self.p50_s, "p95_s": self.p95_s,
                "failures": list(self.failures)}


async def replay(config: SyntheticConfig, site: str) -> SiteSample:
    """Send every configured request ``repeat`` times to ``site``; never raises for network errors."""
    base = config.sites[site]
    latencies: list[float] = []
    failures: list[str] = []
    jobs = [(r, base + r.path) for r in config.requests for _ in range(config.repeat)]
    gate = asyncio.Semaphore(CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=config.timeout)

    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as session:
        async def one(request: Any, url: str) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    async with session.request(request.method, url, allow_redirects=False) as resp:
                        await resp.read()
                        elapsed = time.perf_counter() - started
                        if resp.status not in request.expect_status:
                            failures.append(f"{request.method} {request.path}: status {resp.status}")
                            return
                        latencies.append(elapsed)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    failures.append(f"{request.method} {request.path}: {type(exc).__name__}")

        await asyncio.gather(*(one(r, u) for r, u in jobs))
    return SiteSample(site, len(jobs), len(failures), _quantile(latencies, 0.5), _quantile(latencies, 0.95),
                      tuple(sorted(set(failures))[:5]))


def compare(config: SyntheticConfig, primary: SiteSample, standby: SiteSample) -> tuple[bool, str]:
    """Does ``standby`` answer like ``primary``? (ok, sentence)"""
    problems = []
    if standby.error_rate > primary.error_rate + config.max_error_rate_increase:
        problems.append(f"error rate {standby.error_rate:.1%} vs {primary.error_rate:.1%} on {primary.site} "
                        f"(at most +{config.max_error_rate_increase:.1%})")
    if standby.p95_s is not None and standby.p95_s > config.p95_floor:
        if primary.p95_s is None:
            pass  # nothing to compare with: the error rate already speaks
        elif standby.p95_s > config.max_p95_ratio * primary.p95_s:
            problems.append(f"p95 {standby.p95_s * 1000:.0f} ms is more than {config.max_p95_ratio:g}x "
                            f"{primary.site}'s {primary.p95_s * 1000:.0f} ms")
    if standby.requests and standby.p95_s is None:
        problems.append("no request succeeded")
    sample = f"{standby.describe()}; {primary.describe()}"
    if problems:
        return False, f"{standby.site} answers worse than {primary.site}: {'; '.join(problems)} ({sample})"
    return True, f"{standby.site} answers like {primary.site} ({sample})"

"""Sample HTTP sites as fixtures: real aiohttp servers on loopback, stopped by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from engine.demo.sample_site import SampleSite

SiteFactory = Callable[..., Awaitable[SampleSite]]


@pytest.fixture
async def sample_site() -> AsyncIterator[SiteFactory]:
    """Start sample sites on demand: ``site = await sample_site("gcp")``."""
    started: list[SampleSite] = []

    async def start(name: str = "site", mode: str = "ok", **kwargs: object) -> SampleSite:
        site = SampleSite(name, mode, **kwargs)  # type: ignore[arg-type]
        await site.start()
        started.append(site)
        return site

    yield start
    for site in started:
        await site.stop()

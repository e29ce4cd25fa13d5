"""Cloudflare LB provider through the cloudflare SDK against a local v4 Load Balancing server: pool order
and the epoch (description) in one PATCH after a read-compare; pool health read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from actions.dns.cloudflare_lb import CloudflareLbProvider
from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsRefused
from actions.dns.provider import build_provider
from engine.config.dns import DnsConfig
from tests.support.cloudflare_lb_fake import CloudflareLbFake
from tests.support.dns_steps import shift_step

ZONE, HOST = "example.com", "app.example.com"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[CloudflareLbFake, dict[str, str]]]:
    """A load balancer over the gcp pool, then the azure pool, its description holding epoch 1."""
    for variable in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL", "CLOUDFLARE_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    server = CloudflareLbFake()
    zone = server.add_zone(ZONE)
    ids = {"gcp": server.add_pool("gcp", ["192.0.2.10"]), "azure": server.add_pool("azure", ["198.51.100.10"])}
    ids["lb"] = server.add_balancer(zone, HOST, [ids["gcp"], ids["azure"]], "epoch=1 site=gcp op=seed")
    await server.start()
    try:
        yield server, ids
    finally:
        await server.stop()


def section(fake: CloudflareLbFake, ids: dict[str, str], **provider: Any) -> dict[str, Any]:
    return {
        "provider": {"type": "cloudflare_lb", "zone": ZONE, "account_id": fake.account, "api_token": fake.token,
                     "pools": {"gcp": ids["gcp"], "azure": ids["azure"]}, "base_url": fake.base_url,
                     "timeout": "2s", "attempts": 1, **provider},
        "records": [{"name": "app", "type": "A", "ttl": "30s",
                     "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}}],
    }


@pytest.fixture
async def make(fake: tuple[CloudflareLbFake, dict[str, str]]) -> AsyncIterator[Any]:
    made: list[CloudflareLbProvider] = []

    def build(**provider: Any) -> CloudflareLbProvider:
        made.append(CloudflareLbProvider(DnsConfig.model_validate(section(*fake, **provider)), "app"))
        return made[-1]

    yield build
    for provider in made:
        await provider.aclose()


async def test_read_follows_the_first_enabled_pool(fake: tuple[CloudflareLbFake, dict[str, str]], make: Any) -> None:
    """The first enabled pool of default_pools is where the hostname points; the description is the epoch."""
    server, ids = fake
    state = await make().read()
    assert state.records[0].values == ("192.0.2.10",) and state.site == "gcp" and state.epoch.number == 1
    server.pools[ids["gcp"]]["enabled"] = False
    assert (await make().read()).site == "azure"


async def test_shift_reorders_pools_and_writes_the_epoch_in_one_patch(
        fake: tuple[CloudflareLbFake, dict[str, str]], make: Any) -> None:
    """A shift is one PATCH: the azure pool first, the description epoch 2."""
    server, ids = fake
    provider = make()
    after = await provider.shift(await provider.read(), "azure", 2)
    patches = [body for method, _path, body in server.seen if method == "PATCH"]
    assert len(patches) == 1 and patches[0]["default_pools"] == [ids["azure"], ids["gcp"]]
    assert server.balancers[ids["lb"]]["description"] == f"epoch=2 site=azure op={after.epoch.op}"
    assert after.site == "azure" and (await provider.read()).site == "azure"
    assert (await provider.shift(after, "gcp", 3)).site == "gcp"


async def test_a_dashboard_edit_after_the_read_is_a_conflict(
        fake: tuple[CloudflareLbFake, dict[str, str]], make: Any) -> None:
    """The pool order edited in the dashboard after the caller's read: DnsConflict, no PATCH."""
    server, ids = fake
    provider = make()
    state = await provider.read()
    server.edit(ids["lb"], default_pools=[ids["azure"], ids["gcp"]])
    with pytest.raises(DnsConflict):
        await provider.shift(state, "azure", 2)
    assert [m for m, _p, _b in server.seen if m == "PATCH"] == []


async def test_the_runbook_step_stands_down_on_a_concurrent_change(
        fake: tuple[CloudflareLbFake, dict[str, str]], make: Any) -> None:
    """A rival's shift lands between the step's read and the provider's compare: the step stands down
    without a PATCH of its own."""
    server, ids = fake
    provider = make()

    def rival() -> None:
        server.before_get.clear()
        server.edit(ids["lb"], default_pools=[ids["azure"], ids["gcp"]], description="epoch=2 site=azure op=rival")

    server.before_get.append(rival)
    outcome = await shift_step(provider, section(*fake), service="app", source="gcp", target="azure", epoch_from=1)
    assert outcome.stand_down and "lost the race" in outcome.summary
    assert server.balancers[ids["lb"]]["description"] == "epoch=2 site=azure op=rival"
    assert [m for m, _p, _b in server.seen if m == "PATCH"] == []


async def test_pool_health_is_read_back(fake: tuple[CloudflareLbFake, dict[str, str]], make: Any) -> None:
    """Each site's pool health comes from Cloudflare's own monitors."""
    server, ids = fake
    server.healthy[ids["azure"]] = False
    provider = make()
    assert await provider.pool_health() == {"gcp": True, "azure": False}
    assert "azure unhealthy" in await provider.validate(await provider.read(), "azure", 2)


async def test_errors_map_onto_the_dns_tree(fake: tuple[CloudflareLbFake, dict[str, str]], make: Any) -> None:
    """A refused token is an auth error; an unknown load balancer a config error."""
    with pytest.raises(DnsAuthError):
        await make(api_token="wrong").read()
    other = section(*fake)
    other["records"][0]["name"] = "nope"
    provider = CloudflareLbProvider(DnsConfig.model_validate(other), "app")
    try:
        with pytest.raises(DnsConfigError, match="no load balancer"):
            await provider.read()
    finally:
        await provider.aclose()


async def test_build_provider_picks_cloudflare_lb(fake: tuple[CloudflareLbFake, dict[str, str]]) -> None:
    """A cloudflare_lb provider config builds a CloudflareLbProvider."""
    provider = build_provider(DnsConfig.model_validate(section(*fake)), "app")
    try:
        assert isinstance(provider, CloudflareLbProvider) and (await provider.read()).site == "gcp"
    finally:
        await provider.aclose()


async def test_pool_weights_under_random_steering(fake: tuple[CloudflareLbFake, dict[str, str]], make: Any) -> None:
    """With random steering the pool weights are read as shares and written conditionally in one PATCH;
    pool-order steering has no weights to move."""
    server, ids = fake
    provider = make()
    with pytest.raises(DnsRefused, match="not random"):
        await provider.read_weights()
    server.edit(ids["lb"], steering_policy="random",
                random_steering={"pool_weights": {ids["gcp"]: 1.0, ids["azure"]: 0.0}, "default_weight": 0})
    before = await provider.read_weights()
    assert before.as_dict() == {"gcp": 100, "azure": 0} and before.epoch == 1
    after = await provider.set_weights(before, {"gcp": 90, "azure": 10})
    assert after.as_dict() == {"gcp": 90, "azure": 10}
    assert server.balancers[ids["lb"]]["random_steering"]["pool_weights"] == {ids["gcp"]: 0.9, ids["azure"]: 0.1}
    with pytest.raises(DnsConflict):
        await provider.set_weights(before, {"gcp": 50, "azure": 50})

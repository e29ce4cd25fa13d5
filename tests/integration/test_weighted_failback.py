"""The weighted failback step and the canary drill against the Cloudflare LB wire fake (random steering, pool
weights) through the cloudflare SDK, on a manual clock: home's share in steps at the claimed epoch, then the
epoch compare-and-set in shift_dns; rollback, a rival's edit and the canary's reported errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from actions.dns.cloudflare_lb import CloudflareLbProvider
from actions.dns.traffic_manager import TAG, TrafficManagerProvider
from engine.config.model import ServiceConfig
from engine.core.clock import ManualClock
from engine.core.decide import ServiceState
from engine.core.health import HealthMachine
from engine.core.model import Observation, SignalKey
from engine.core.operations import Operation, StepFailed
from engine.runtime.drill_runs import DrillRuns
from engine.runtime.service import ServiceRuntime, SignalRuntime
from engine.runtime.weighted_failback import canary, weighted_failback
from tests.support.azure_arm_fake import AzureArmFake
from tests.support.azure_fake import FakeCredential
from tests.support.cloudflare_lb_fake import CloudflareLbFake
from tests.support.dns_steps import _StepsWith, shift_step
from tests.support.health_script import Script

ZONE, HOST = "example.com", "app.example.com"
WEIGHTED = {"steps": [10, 50, 100], "hold": "60s", "checks": 2, "check_interval": "20s", "canary_percent": 1,
            "canary": True}


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[CloudflareLbFake, dict[str, str]]]:
    """After a failover: the azure pool first, epoch 2, random steering with all weight on azure."""
    for variable in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL", "CLOUDFLARE_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    server = CloudflareLbFake()
    zone = server.add_zone(ZONE)
    ids = {"gcp": server.add_pool("gcp", ["192.0.2.10"]), "azure": server.add_pool("azure", ["198.51.100.10"])}
    ids["lb"] = server.add_balancer(zone, HOST, [ids["azure"], ids["gcp"]], "epoch=2 site=azure op=failover")
    server.edit(ids["lb"], steering_policy="random",
                random_steering={"pool_weights": {ids["gcp"]: 0.0, ids["azure"]: 1.0}, "default_weight": 0})
    await server.start()
    try:
        yield server, ids
    finally:
        await server.stop()


def dns_section(server: CloudflareLbFake, ids: dict[str, str]) -> dict[str, Any]:
    return {"provider": {"type": "cloudflare_lb", "zone": ZONE, "account_id": server.account,
                         "api_token": server.token, "pools": {"gcp": ids["gcp"], "azure": ids["azure"]},
                         "base_url": server.base_url, "timeout": "2s", "attempts": 1},
            "records": [{"name": "app", "type": "A", "ttl": "30s",
                         "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}}],
            "weighted_failback": WEIGHTED}


@pytest.fixture
async def world(fake: tuple[CloudflareLbFake, dict[str, str]]) -> AsyncIterator[tuple[Any, ...]]:
    """The service (home gcp, now on azure at epoch 2), its provider and the fake."""
    server, ids = fake
    config = ServiceConfig.model_validate({"active": "gcp", "sites": {"gcp": {"probes": []}, "azure": {"probes": []}},
                                           "dns": dns_section(server, ids)})
    rt = ServiceRuntime("app", config, ServiceState(active="azure", epoch=2))
    assert config.dns is not None
    provider = CloudflareLbProvider(config.dns, "app")
    yield rt, provider, server, ids
    await provider.aclose()


def failback() -> Operation:
    return Operation("op-fb", "app", "switchover", "azure", "gcp", 2, 3, "operator")


def weights(server: CloudflareLbFake, ids: dict[str, str]) -> dict[str, float]:
    pools = server.balancers[ids["lb"]]["random_steering"]["pool_weights"]
    return {"gcp": pools[ids["gcp"]], "azure": pools[ids["azure"]]}


async def test_a_healthy_weighted_failback_then_the_epoch_shift(world: tuple[Any, ...]) -> None:
    """10 -> 50 -> 100 % to home at epoch 2, each held and checked; then shift_dns moves the epoch to 3."""
    rt, provider, server, ids = world
    script = Script([True] * 20)
    outcome = await weighted_failback(rt, failback(), provider, clock=script.clock, health=script.health,
                                      sleep=script.sleep)
    assert not outcome.skipped and not outcome.stand_down
    assert [s["weights"] for s in outcome.data["steps"] if s["weights"]] == [
        {"gcp": 10, "azure": 90}, {"gcp": 50, "azure": 50}, {"gcp": 100, "azure": 0}]
    assert weights(server, ids) == {"gcp": 1.0, "azure": 0.0}
    assert server.balancers[ids["lb"]]["description"].startswith("epoch=2")  # the weights never move the epoch
    shifted = await shift_step(provider, dns_section(server, ids), service="app", source="azure", target="gcp",
                               epoch_from=2)
    assert not shifted.stand_down
    assert server.balancers[ids["lb"]]["description"].startswith("epoch=3 site=gcp")
    resumed = Operation("op-fb", "app", "switchover", "azure", "gcp", 3, 4, "operator")
    assert (await weighted_failback(rt, resumed, provider, clock=script.clock)).skipped  # home has it all already


async def test_an_unhealthy_home_rolls_back_and_halts_the_failback(world: tuple[Any, ...]) -> None:
    """A failed check at 50 % puts 100 % back on azure and fails the step for good; the epoch stays 2."""
    rt, provider, server, ids = world
    script = Script([True, True, True, True, False])
    with pytest.raises(StepFailed) as failed:
        await weighted_failback(rt, failback(), provider, clock=script.clock, health=script.health,
                                sleep=script.sleep)
    assert not failed.value.retry and "rolled back" in failed.value.reason and "503" in failed.value.reason
    assert weights(server, ids) == {"gcp": 0.0, "azure": 1.0}
    assert server.balancers[ids["lb"]]["description"].startswith("epoch=2")


async def test_a_rival_edit_between_steps_stands_the_failback_down(world: tuple[Any, ...]) -> None:
    """Someone changes the weights during a hold: the next conditional write is refused, the step stands down."""
    rt, provider, server, ids = world

    def rival(call: int) -> None:
        if call == 1:
            server.edit(ids["lb"], random_steering={"pool_weights": {ids["gcp"]: 0.3, ids["azure"]: 0.7}})

    script = Script([True] * 20, hook=rival)
    outcome = await weighted_failback(rt, failback(), provider, clock=script.clock, health=script.health,
                                      sleep=script.sleep)
    assert outcome.stand_down and "someone else" in outcome.summary
    assert weights(server, ids) == {"gcp": 0.3, "azure": 0.7}  # not overwritten


async def test_another_epoch_stands_down_and_a_move_away_from_home_skips(world: tuple[Any, ...]) -> None:
    """Weights at an epoch other than the claimed one stand down; a move that is not home is not weighted."""
    rt, provider, server, ids = world
    stale = Operation("op-old", "app", "switchover", "azure", "gcp", 1, 2, "operator")
    assert (await weighted_failback(rt, stale, provider, clock=ManualClock())).stand_down
    away = Operation("op-away", "app", "switchover", "gcp", "azure", 2, 3, "operator")
    assert (await weighted_failback(rt, away, provider, clock=ManualClock())).skipped
    assert weights(server, ids) == {"gcp": 0.0, "azure": 1.0}


async def test_a_canary_sends_one_percent_and_reports_its_errors(world: tuple[Any, ...]) -> None:
    """The canary gives the standby 1 %, reports the failed check, and ends with 100 % on the active site."""
    rt, provider, server, ids = world
    script = Script([True, False])
    report = await canary(rt, provider, "gcp", clock=script.clock, health=script.health, sleep=script.sleep)
    assert report.outcome == "rolled_back" and report.failed_checks == ["HTTP 503 from /healthz"]
    assert [w for _t, _m, w in report.steps if w] == [{"gcp": 1, "azure": 99}, {"gcp": 0, "azure": 100}]
    assert weights(server, ids) == {"gcp": 0.0, "azure": 1.0}
    clean = await canary(rt, provider, "gcp", clock=script.clock, health=Script([True] * 9).health,
                         sleep=script.sleep)
    assert clean.outcome == "finished" and not clean.failed_checks


class ScriptedProbe:
    """A probe of the standby answering from a list (the real probes are tested in their own modules)."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers

    async def observe(self) -> Observation:
        ok = self.answers.pop(0) if self.answers else True
        return Observation(ok, "200 in 3 ms" if ok else "status 503 not in [200]", 0.0)


async def test_the_shadow_drills_canary_check_reports_the_standbys_errors(world: tuple[Any, ...]) -> None:
    """The drill's canary runs the standby's counting probes (not an info vantage) and reports their errors."""
    rt, _provider, server, ids = world
    clock = ManualClock()
    probe = SignalRuntime(SignalKey("app", "gcp", "http"), 10.0, HealthMachine(1, 1),
                          probe=ScriptedProbe([True, False]))
    vantage = SignalRuntime(SignalKey("app", "gcp", "route53"), 10.0, HealthMachine(1, 1), counts=False,
                            provider="cloudflare_lb", probe=ScriptedProbe([False] * 9))
    rt.signals = {"gcp": [probe, vantage], "azure": []}

    class Runs(DrillRuns):
        async def _sleep(self, seconds: float) -> None:
            clock.advance(seconds)

    runs = Runs()
    runs.ctx, runs.sleep = SimpleNamespace(clock=clock), runs._sleep  # type: ignore[assignment]
    ok, detail, data = await runs._canary(rt, "gcp")
    assert not ok and "status 503 not in [200]" in detail and data["outcome"] == "rolled_back"
    assert weights(server, ids) == {"gcp": 0.0, "azure": 1.0}
    probe.probe = ScriptedProbe([True] * 9)
    ok, detail, data = await runs._canary(rt, "gcp")
    assert ok and data["outcome"] == "finished" and not data["failed_checks"]


async def test_traffic_manager_weighted_failback_then_the_epoch_shift() -> None:
    """A Weighted Traffic Manager profile (mode enable): weights 10 -> 50 -> 100 % under If-Match at epoch 4,
    then shift_dns writes epoch 5 on the same profile."""
    server = AzureArmFake()
    server.put_profile("shop-tm", [
        {"name": "gcp-ep", "target": "gcp.example.net", "weight": 1, "endpointStatus": "Disabled"},
        {"name": "azure-ep", "target": "azure.example.net", "weight": 1000}],
        routing="Weighted", tags={TAG: "epoch=4 site=azure op=x"})
    await server.start()
    section = {"provider": {"type": "traffic_manager", "subscription_id": server.subscription,
                            "resource_group": server.group, "profile": "shop-tm", "mode": "enable",
                            "endpoints": {"gcp": "gcp-ep", "azure": "azure-ep"}, "base_url": server.base_url,
                            "attempts": 1},
               "records": [{"name": "shop-tm", "type": "CNAME",
                            "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}}],
               "weighted_failback": WEIGHTED}
    config = ServiceConfig.model_validate({"active": "gcp", "sites": {"gcp": {"probes": []}, "azure": {"probes": []}},
                                           "dns": section})
    assert config.dns is not None
    provider = TrafficManagerProvider(config.dns, "shop", credential=FakeCredential())
    try:
        rt = ServiceRuntime("shop", config, ServiceState(active="azure", epoch=4))
        script = Script([True] * 20)
        op = Operation("op-fb", "shop", "switchover", "azure", "gcp", 4, 5, "operator")
        outcome = await weighted_failback(rt, op, provider, clock=script.clock, health=script.health,
                                          sleep=script.sleep)
        assert not outcome.skipped and not outcome.stand_down
        assert (await provider.read_weights()).as_dict() == {"gcp": 100, "azure": 0}
        op.steps["weighted_failback"] = {"state": "done"}
        shifted = await _StepsWith(provider, config, "shop").shift_dns(op)
        assert not shifted.stand_down and shifted.data["changed"], shifted.summary
        with pytest.raises(StepFailed, match="dns_drift"):  # without the weighted step, the same DNS is drift
            await shift_step(provider, section, service="shop", source="azure", target="gcp", epoch_from=5)
        state = await provider.read()
        assert state.epoch.number == 5 and state.site == "gcp"
    finally:
        await provider.aclose()
        await server.stop()

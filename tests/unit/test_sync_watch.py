"""The synchronous watch's driver (engine.runtime.sync_watch): one step per tick, acts only when allowed, records."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from actions.database.results import Step
from engine.config.database import DatabaseConfig
from engine.core.sync_mode import SyncObservation
from engine.runtime.sync_watch import SyncWatch

CONFIG = DatabaseConfig.model_validate({
    "sites": {"gcp": {"host": "h", "dbname": "d", "user": "u"}, "azure": {"host": "h2", "dbname": "d", "user": "u"}},
    "subscription": "app_sub", "synchronous": "on",
    "synchronous_degrade": {"after": "3s", "check_interval": "1s", "commit_wait_limit": "500ms"}})
CONFIRMED = SyncObservation(True, named=True, streaming=True, sync_state="sync", oldest_wait_s=0.0, lag_bytes=0)
GONE = SyncObservation(True, named=True, streaming=False)


class World:
    """A fake primary: what it shows next, and the names set on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.shows = CONFIRMED
        self.set_calls: list[tuple[str, str | None]] = []
        self.records: list[tuple[str, bool]] = []
        self.fail_set = False
        self.active = True

    async def observe(self, config: DatabaseConfig, site: str) -> SyncObservation:
        return self.shows

    async def set_name(self, config: DatabaseConfig, site: str, name: str | None) -> Step:
        self.set_calls.append((site, name))
        if self.fail_set:
            return Step("synchronous", "failed", "permission denied to set parameter")
        return Step("synchronous", "ok", f"{site} names {name}")

    async def record(self, sentence: str, data: dict[str, Any], alert: bool) -> None:
        self.records.append((sentence, alert))

    def watch(self) -> SyncWatch:
        return SyncWatch(CONFIG, service="app", primary="gcp", clock=lambda: self.now, record=self.record,
                         may_act=lambda: self.active, observe_fn=self.observe, set_name=self.set_name)


async def test_degrade_is_acted_on_journaled_and_alerted() -> None:
    """Standby gone for ``after``: the active engine clears the name once, with an alert; evidence says degraded."""
    world = World()
    watch = world.watch()
    await watch.tick()
    world.shows = GONE
    for _ in range(4):
        world.now += 1
        await watch.tick()
    assert world.set_calls == [("gcp", None)]
    sentence, alert = world.records[-1]
    assert alert and sentence.startswith("synchronous on: degraded to asynchronous (the standby is not streaming")
    assert watch.evidence().degraded_since == 1004.0 and watch.evidence().confirmed_at == 1000.0
    assert watch.status()["state"] == "degraded"


async def test_an_observer_never_acts_but_keeps_its_evidence() -> None:
    """An engine outside the active site steps the same machine without touching the primary."""
    world = World()
    world.active = False
    watch = world.watch()
    await watch.tick()
    world.shows = GONE
    for _ in range(4):
        world.now += 1
        await watch.tick()
    assert world.set_calls == [] and watch.state.kind == "degraded"
    assert watch.evidence().confirmed_at == 1000.0


async def test_a_failed_action_is_alerted_and_retried() -> None:
    """A refused ALTER SYSTEM is an alert; the machine asks again on the next tick."""
    world = World()
    world.fail_set = True
    watch = world.watch()
    world.shows = SyncObservation(True, named=False, streaming=True, sync_state="async", lag_bytes=10)
    await watch.tick()
    await watch.tick()
    assert world.set_calls == [("gcp", "app_sub"), ("gcp", "app_sub")]
    assert world.records[-1][1] and "FAILED: permission denied" in world.records[-1][0]


async def test_the_state_metric_follows_every_tick() -> None:
    """With a gauge, the current state is 1 and every other state 0 after each tick."""
    registry = CollectorRegistry()
    gauge = Gauge("failover_engine_synchronous_state", "test", ["service", "state"], registry=registry)
    world = World()
    watch = SyncWatch(CONFIG, service="app", primary="gcp", clock=lambda: world.now, record=world.record,
                      may_act=lambda: True, observe_fn=world.observe, set_name=world.set_name, gauge=gauge)
    await watch.tick()
    value = registry.get_sample_value
    assert value("failover_engine_synchronous_state", {"service": "app", "state": "sync"}) == 1.0
    assert value("failover_engine_synchronous_state", {"service": "app", "state": "degraded"}) == 0.0


async def test_primary_changed_starts_over() -> None:
    """After a move the watch forgets what it saw of the old primary."""
    world = World()
    watch = world.watch()
    await watch.tick()
    world.now += 5
    watch.primary_changed("azure")
    assert (watch.primary, watch.state.kind, watch.state.confirmed_at) == ("azure", "engaging", None)

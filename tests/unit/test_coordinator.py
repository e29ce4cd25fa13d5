"""The coordinator's decisions in process: real health machines, tally, policy, brakes and journal (SQLite in a
temporary folder), a manual clock, and a fake runbook handed in. No subprocess, no sleep, nothing patched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.config import parse_config
from engine.config.model import EngineConfig
from engine.core.clock import ManualClock
from engine.core.decide import ServiceState
from engine.core.health import HealthMachine
from engine.core.lease_rules import PrimaryWritability
from engine.core.model import SignalKey
from engine.core.operations import Operation, OpState, Outcome, StepFailed
from engine.core.steps import StepSpec, failover_plan
from engine.runtime.brakes import Brakes
from engine.runtime.context import RuntimeContext
from engine.runtime.coordinator import Coordinator
from engine.runtime.journal import Journal
from engine.runtime.lease_watch import LeaseWatch
from engine.runtime.metrics import Metrics
from engine.runtime.peering import Peering
from engine.runtime.runner import StepFn
from engine.runtime.service import ServiceRuntime, SignalRuntime

CONFIG = """
instance: {id: engine-azure, site: azure, role: %s, tick: 1s}
services:
  api:
    active: gcp
    policy: {failure_threshold: 3, max_auto_failovers: 1, breaker_window: 1h, cooldown: 0s}
    sites:
      gcp: {probes: [{type: tcp, host: 127.0.0.1, port: 9}]}
      azure: {probes: [{type: tcp, host: 127.0.0.1, port: 10}]}
"""


class Notes:
    """The notifier handed in: keeps what would have gone to the webhooks."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, kind: str, message: str, **_: Any) -> None:
        self.sent.append((kind, message))

    async def close(self) -> None:
        return None


class FakeRunbook:
    """A steps factory: every step of the real failover table, each recording its call; one may fail."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def __call__(self, rt: ServiceRuntime) -> tuple[Sequence[StepSpec], Mapping[str, StepFn]]:
        plan = [StepSpec(s.name, timeout=5.0, attempts=1, backoff=0.0) for s in failover_plan(rt.config)]

        def step(name: str) -> StepFn:
            async def run(op: Operation) -> Outcome:
                self.calls.append(name)
                if name == self.fail:
                    raise StepFailed(f"{name} broke", retry=False)
                return Outcome(f"{name} ok")
            return run
        return plan, {s.name: step(s.name) for s in plan}


class World:
    def __init__(self, config: EngineConfig, journal: Journal, runbook: FakeRunbook) -> None:
        self.clock = ManualClock()
        self.notes = Notes()
        self.ctx = RuntimeContext(config, self.clock, Metrics(), self.notes)
        self.ctx.journal = journal
        peering = Peering(config, self.clock)
        self.brakes = Brakes(self.ctx)
        self.runbook = runbook
        self.coordinator = Coordinator(self.ctx, peering, self.brakes, LeaseWatch(self.ctx, peering), runbook)
        svc = config.services["api"]
        self.rt = ServiceRuntime("api", svc, ServiceState(active="gcp", epoch=0))
        for site in svc.sites:
            key = SignalKey("api", site, "tcp")
            self.rt.signals[site] = [SignalRuntime(key, 10.0, HealthMachine(3, 2))]
        self.ctx.services["api"] = self.rt

    def observe(self, site: str, ok: bool, times: int = 3) -> None:
        for _ in range(times):
            self.clock.advance(1.0)
            self.rt.signals[site][0].machine.observe(ok, self.clock.now(), "" if ok else "connection refused")

    async def tick(self) -> None:
        await self.coordinator.tick(self.clock.now())
        await self.coordinator.settle()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = Journal.open(tmp_path / "journal.db")
    yield j
    await j.close()


def world(journal: Journal, role: str = "engine", runbook: FakeRunbook | None = None) -> World:
    return World(parse_config(CONFIG % role, env={}), journal, runbook or FakeRunbook())


async def test_a_failover_runs_every_step_and_moves_the_service(journal: Journal) -> None:
    """gcp down, azure up: one operation runs every failover step in order; the service is active in azure, epoch 1."""
    w = world(journal)
    w.observe("gcp", False)
    w.observe("azure", True, 2)
    await w.tick()
    assert w.runbook.calls == ["precheck", "fence", "promote", "shift_dns", "verify_dns", "consistency",
                               "reconcile", "report"]
    assert (w.rt.state.active, w.rt.state.epoch, w.rt.operation) == ("azure", 1, None)
    assert w.rt.decision is not None and w.rt.decision.message.startswith("failover api gcp -> azure")
    ops = journal.operations(service="api")
    assert [(o["state"], o["trigger"]) for o in ops] == [("done", "auto")]
    assert ops[0]["reason"] == w.rt.decision.message  # an automatic operation's reason: the decision sentence


async def test_while_the_active_site_is_up_it_holds(journal: Journal) -> None:
    """Both sites up: a hold with its sentence, no operation."""
    w = world(journal)
    w.observe("gcp", True, 2)
    w.observe("azure", True, 2)
    await w.tick()
    assert w.runbook.calls == [] and w.rt.decision is not None
    assert str(w.rt.decision.verdict) == "hold" and w.rt.decision.message.startswith("holding: gcp is up")


async def test_paused_it_observes_but_never_acts(journal: Journal) -> None:
    """Paused: the decision says PAUSED and nothing runs."""
    w = world(journal)
    w.rt.state = ServiceState("gcp", 0, paused=True)
    w.observe("gcp", False)
    w.observe("azure", True, 2)
    await w.tick()
    assert w.runbook.calls == []
    assert w.rt.decision is not None and w.rt.decision.message.startswith("PAUSED:")


async def test_a_witness_decides_but_never_acts(journal: Journal) -> None:
    """A witness reaches the same decision and starts nothing."""
    w = world(journal, role="witness")
    w.observe("gcp", False)
    w.observe("azure", True, 2)
    await w.tick()
    assert w.runbook.calls == [] and journal.operations(service="api") == []


async def test_a_halted_runbook_blocks_the_next_and_pages(journal: Journal) -> None:
    """A step that fails for good halts the runbook; it stays in place and no second one starts."""
    w = world(journal, runbook=FakeRunbook(fail="promote"))
    w.observe("gcp", False)
    w.observe("azure", True, 2)
    await w.tick()
    assert w.rt.operation is not None and w.rt.operation.state is OpState.HALTED
    assert w.rt.operation.message == "failover of api stuck at promote: promote broke"
    await w.tick()
    assert len(journal.operations(service="api")) == 1
    assert ("alert", "failover of api stuck at promote: promote broke") in w.notes.sent
    # the decision tells the halted operation as halted, never "this instance acts"
    assert w.rt.decision is not None and str(w.rt.decision.verdict) == "page" and not w.rt.decision.acting
    assert w.rt.decision.message.startswith(f"halted: operation {w.rt.operation.id} is halted (failover of api stuck "
                                            "at promote: promote broke); nothing moves for api")
    assert "acts" not in w.rt.decision.message


async def test_the_breaker_turns_the_next_automatic_move_into_a_page(journal: Journal) -> None:
    """max_auto_failovers 1 per hour: after one automatic failover, the next one pages and opens the breaker."""
    w = world(journal)
    w.observe("gcp", False)
    w.observe("azure", True, 2)
    await w.tick()
    assert w.rt.state.active == "azure"
    w.observe("gcp", True, 2)
    w.observe("azure", False)
    # azure is home now (failback is never automatic, so a move back to gcp needs gcp as the standby)
    w.rt.config = w.rt.config.model_copy(update={"active": "azure"})
    await w.tick()
    assert w.rt.state.active == "azure" and len(journal.operations(service="api")) == 1
    assert w.rt.decision is not None and str(w.rt.decision.verdict) == "page"
    assert w.rt.decision.message.endswith("1 automatic failover(s) of api in the last 1h (limit 1); automatic action "
                                          "is disarmed until an operator re-arms it "
                                          "(`failover-engine arm api --reason ...`)")
    assert w.brakes.breaker(w.rt, w.clock.now())["open"]


async def test_hooks_run_before_each_decision(journal: Journal) -> None:
    """Before deciding for a service the coordinator runs its hooks (a due scheduled switchover) with the time."""
    w = world(journal)
    seen: list[tuple[str, float]] = []

    async def hook(rt: ServiceRuntime, now: float) -> None:
        seen.append((rt.name, now))
    w.coordinator.before_decide.append(hook)
    await w.tick()
    assert seen == [("api", w.clock.now())]


async def test_an_engine_whose_local_primary_stops_writing_gives_the_lease_up(journal: Journal) -> None:
    """Active here, two failed heartbeats: primary_writable False, the lease given up (journaled, alerted), and
    taken back when a beat writes again; elsewhere it is not this engine's to say."""
    w = world(journal)
    beats = PrimaryWritability(stale_after=5.0)
    w.rt.database = SimpleNamespace(writability=beats)
    lease = w.coordinator.lease
    assert await lease.local_primary(w.rt, w.clock.now()) is None  # gcp is active, this engine is in azure
    w.rt.state = ServiceState("azure", 1)
    beats.beat(True, w.clock.monotonic())
    assert await lease.local_primary(w.rt, w.clock.now()) is True and not lease.given_up("api")
    for _ in range(2):
        beats.beat(False, w.clock.monotonic(), "connection refused")
    assert await lease.local_primary(w.rt, w.clock.now()) is False and lease.given_up("api")
    message = ("api: the database in azure is not writable (2 heartbeats failed in a row: connection refused): this "
               "engine gives up the write lease, so the other site may promote its standby without waiting out the "
               "lease")
    assert ("alert", message) in w.notes.sent
    assert [e.message for e in journal.events(kind="lease")] == [message]
    beats.beat(True, w.clock.monotonic())
    assert await lease.local_primary(w.rt, w.clock.now()) is True and not lease.given_up("api")


async def test_two_starters_at_once_claim_the_service_once(journal: Journal) -> None:
    """Two requests racing to start a move: the journal's one atomic claim lets exactly one start; the other is
    refused naming the winning operation, and no second runbook runs."""
    from engine.core.decide import DecisionKind
    from engine.core.policy import ClusterDecision
    from engine.core.ports import Refused

    w = world(journal)
    decision = ClusterDecision(DecisionKind.FAILOVER, "manual failover by alice: test", "azure", "engine-azure",
                               True, (), {})
    results = await asyncio.gather(
        *(w.coordinator.start_operation(w.rt, decision, w.clock.now(), trigger="manual", actor=f"op{i}")
          for i in range(5)), return_exceptions=True)
    started = [r for r in results if isinstance(r, Operation)]
    refused = [r for r in results if isinstance(r, Refused)]
    assert len(started) == 1 and len(refused) == 4, results
    assert all(r.refusal.code == "operation_in_progress" and r.extra["operation"] == started[0].id for r in refused)
    await w.coordinator.settle()
    assert [o["id"] for o in journal.operations(service="api")] == [started[0].id]
    assert (w.rt.state.active, w.rt.state.epoch) == ("azure", 1)


async def test_a_move_to_where_the_service_already_is_is_refused(journal: Journal) -> None:
    """Once a move is done, a late request for the same move is refused as already_active, never a no-op runbook."""
    from engine.core.decide import DecisionKind
    from engine.core.policy import ClusterDecision
    from engine.core.ports import Refused

    w = world(journal)
    decision = ClusterDecision(DecisionKind.FAILOVER, "manual failover", "azure", "engine-azure", True, (), {})
    await w.coordinator.start_operation(w.rt, decision, w.clock.now(), trigger="manual")
    await w.coordinator.settle()
    with pytest.raises(Refused) as late:
        await w.coordinator.start_operation(w.rt, decision, w.clock.now(), trigger="manual")
    assert late.value.refusal.code == "already_active"
    assert len(journal.operations(service="api")) == 1

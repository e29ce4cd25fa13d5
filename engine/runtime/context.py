"""The runtime's shared facilities: config, clock, journal, metrics, notifications and the services' state.

One :class:`RuntimeContext` per process, built by the daemon (the composition root) and handed to each
runtime component (coordinator, runbooks, drills, database watch, operator actions, status view)
instead of the daemon itself. It owns the few things every component writes through: the journal
(:meth:`record`, :meth:`set_state`), notifications (:meth:`notify`) and the nudge that makes the
decision loop tick at once (:meth:`poke`). The components themselves are not reachable from here: each
receives the collaborators it needs through its constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.config.model import EngineConfig
from engine.core.clock import Clock
from engine.core.decide import ServiceState
from engine.core.gates import ServiceFacts
from engine.core.health import HealthMachine
from engine.core.loss import rpo_gate, sync_confirmed_now
from engine.core.ports import Refused
from engine.runtime.journal import Journal
from engine.runtime.metrics import Metrics
from engine.runtime.service import ServiceRuntime


class RuntimeContext:
    def __init__(self, config: EngineConfig, clock: Clock, metrics: Metrics, notifier: Any) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.notifier = notifier
        self.journal: Journal | None = None
        self.services: dict[str, ServiceRuntime] = {}
        self.started_at: float | None = None
        self.last_tick: float | None = None  # monotonic: the decision loop's last tick (liveness)
        self.quorum_ok: bool | None = None  # the coordinator's last count: None until known
        self.grant_lost_at: float | None = None  # monotonic: when this engine lost a majority of grants
        self._poke: Callable[[], None] = lambda: None
        self._on_record: list[Callable[[], None]] = []

    # -- wiring (the daemon) -----------------------------------------------------------------------
    def on_poke(self, poke: Callable[[], None]) -> None:
        self._poke = poke

    def on_record(self, listener: Callable[[], None]) -> None:
        """Called after every recorded event (the status view drops its cache)."""
        self._on_record.append(listener)

    # -- what components use ---------------------------------------------------------------------
    @property
    def instance_id(self) -> str:
        return self.config.instance.id

    @property
    def site(self) -> str:
        return self.config.instance.site

    def facts(self, rt: ServiceRuntime, *, drill: tuple[str, str] | None = None,
              peer_busy: tuple[str, ...] = ()) -> ServiceFacts:
        """The plain facts the core gates read about ``rt``, as this instance sees them now."""
        now = self.clock.now()
        cfg, policy = rt.config, rt.config.policy
        rep = rt.replication
        last = None
        if cfg.database is not None and self.journal is not None:
            last = self.journal.get_state(rt.name, "last_reconciliation")
        return ServiceFacts(
            service=rt.name, active=rt.state.active, home=cfg.active, sites=rt.snapshot(now).sites,
            role=self.config.instance.role, paused=rt.state.paused, operation=rt.open_operation(), drill=drill,
            quorum_ok=self.quorum_ok, has_peers=bool(self.config.peers), has_lease=rt.lease is not None,
            has_database=cfg.database is not None, lag_s=rt.lag_s, rpo=policy.rpo,
            replication=None if rep is None else str(rep.machine.state),
            replication_detail=rep.machine.describe() if rep is not None else "no replication signal",
            switchover_max_lag=policy.switchover_max_lag, home_up_for=rt.home_up_for(now),
            failback_healthy_for=policy.failback_healthy_for, last_reconciliation=last, peer_busy=peer_busy,
            sync_confirmed=self._sync_confirmed(rt, now), dns_drift=rt.unacknowledged_drift())

    @staticmethod
    def _sync_confirmed(rt: ServiceRuntime, now: float) -> str | None:
        """The sentence proving synchronous commit now (the RPO gate then passes whatever the lag), or None."""
        evidence = rt.database.sync.evidence() if rt.database is not None else None
        if evidence is None or not sync_confirmed_now(evidence, now):
            return None
        return rpo_gate(rt.lag_s, rt.config.policy.rpo, evidence, now)[1]

    def poke(self) -> None:
        """Something that can change a decision happened: decide now rather than at the next tick."""
        self._poke()

    def require_writable_journal(self) -> None:
        """Refuse (503) an action that must be journaled while the journal cannot be written (disk full,
        read-only): nothing that is not recorded durably may happen."""
        if self.journal is None or not self.journal.writable:
            raise Refused("journal_unwritable", "the journal cannot be written (disk full or read-only?): no action "
                          "can be recorded, so none is taken; see runbooks/journal-unwritable.md", "unavailable")

    def journal_or_fail(self) -> Journal:
        if self.journal is None:
            raise RuntimeError("the journal is not open")
        return self.journal

    async def record(self, kind: str, message: str, *, service: str | None = None, at: float | None = None,
                     actor: str | None = None, data: dict[str, Any] | None = None) -> int:
        journal = self.journal_or_fail()
        for listener in self._on_record:
            listener()
        self.metrics.journal_events.labels(kind).inc()
        return await journal.append(kind, message, service=service, at=self.clock.now() if at is None else at,
                                    actor=actor, data=data)

    async def notify(self, kind: str, message: str, service: str | None, data: dict[str, Any]) -> None:
        """Hand a notification to the webhooks; never blocks the loop (queued, retried elsewhere)."""
        self.notifier.send(kind, message, service=service, instance=self.config.instance.id,
                           at=self.clock.now(), data=data)

    async def set_state(self, rt: ServiceRuntime, state: ServiceState, now: float, message: str) -> None:
        """Change a service's remembered state durably, and say so."""
        journal = self.journal_or_fail()
        previous = rt.state
        rt.state = state
        for key, value in (("active", state.active), ("epoch", state.epoch), ("paused", state.paused),
                           ("last_move_at", state.last_move_at)):
            await journal.put_state(rt.name, key, value, at=now)
        fenced = rt.self_fenced
        if fenced is not None and state.active == self.config.instance.site and state.epoch > fenced.get("epoch", 0):
            rt.self_fenced = None  # a move back here promoted (unfenced) this site's database
            await journal.put_state(rt.name, "self_fenced", None, at=now)
        if previous.active != state.active:
            self.metrics.active_site.labels(rt.name, previous.active).set(0)
            self.metrics.active_site.labels(rt.name, state.active).set(1)
            if rt.database is not None:
                rt.database.active_changed(state.active)
            if rt.replication is not None:  # a new direction: what was known about the old one no longer holds
                old = rt.replication.machine
                rt.replication.machine = HealthMachine(old.failure_threshold, old.success_threshold)
                rt.replication.last = None
                rt.lag_s = None
        await self.record("state", message, service=rt.name, at=now,
                          data={"active": state.active, "epoch": state.epoch})

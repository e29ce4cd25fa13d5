"""What the runtime keeps per signal and per service: the health machine and last result of each signal,
and each service's remembered state, decision, open operation and database watch.

Plain mutable holders shared by the runtime's components (the coordinator, the runbooks, the drills,
the status view); the daemon builds them from the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actions.dns.drift import Drift
from engine.config.model import ServiceConfig
from engine.core.decide import ServiceState, SignalView, SiteView, Snapshot
from engine.core.health import Health, HealthMachine
from engine.core.model import Observation, SignalKey
from engine.core.operations import Operation
from engine.core.policy import ClusterDecision
from probes.provider_health import disagreement


@dataclass
class SignalRuntime:
    key: SignalKey
    interval: float
    machine: HealthMachine
    last: Observation | None = None
    meters: Any = None  # metric children resolved once: labels() per check is costly at scale
    probe: Any = None  # the probe the scheduler drives (a drill runs it once more, out of schedule)
    # a provider_health probe with counts_as: info is shown (and compared), never part of the site's health
    counts: bool = True
    provider: str | None = None  # the traffic provider whose own health check this signal reads

    def to_dict(self) -> dict[str, Any]:
        m = self.machine
        last = self.last
        return {
            "name": self.key.name,
            "state": str(m.state),
            "since": m.since,
            "consecutive_failures": m.consecutive_failures,
            "consecutive_successes": m.consecutive_successes,
            "failure_threshold": m.failure_threshold,
            "success_threshold": m.success_threshold,
            "interval_s": self.interval,
            **({} if self.provider is None else {"provider": self.provider,
                                                 "counts_as": "vote" if self.counts else "info"}),
            "last": None if last is None else {
                "ok": last.ok, "reason": last.reason, "at": last.at,
                "latency_ms": round(last.latency_s * 1000, 1), "value": last.value},
        }


@dataclass
class ServiceRuntime:
    name: str
    config: ServiceConfig
    state: ServiceState
    decision: ClusterDecision | None = None
    decided_at: float | None = None
    decision_key: tuple[Any, ...] | None = None
    signals: dict[str, list[SignalRuntime]] = field(default_factory=dict)
    lag_s: float | None = None  # last known replication lag (kept when the primary is unreachable)
    operation: Operation | None = None  # the runbook in flight (or halted) for this service
    dns_state: str | None = None  # the last DNS read, described
    replication: SignalRuntime | None = None  # the lag signal of the database pair
    database: Any = None  # engine.database_watch.DatabaseWatch, when the service has a database
    stray: Any = None  # engine.runtime.stray_primary.StrayPrimaryWatch, when the service has a database
    rto_estimate: dict[str, Any] | None = None  # engine.core.rto's worst case (the config does not change)
    self_fenced: dict[str, Any] | None = None  # this engine fenced its own database (cut off); an operator unfences
    lease: Any = None  # engine.config.lease.Lease of the service (EngineConfig.lease), or None
    paused_until: float | None = None  # a pause with an expiry resumes by itself then
    # DNS drift (engine.runtime.dns_drift): what the last read differs in, since when, the acknowledged key
    dns_drift: Drift | None = None
    dns_drift_at: float | None = None
    dns_drift_ack: str | None = None
    slots: list[dict[str, Any]] | None = None  # replication slots on the primary (DatabaseWatch.check_slots)

    shared: dict[str, SignalRuntime] = field(default_factory=dict)  # scope: shared dependencies

    def open_operation(self) -> tuple[str, str] | None:
        """(id, state) of the operation that blocks every new one (running or halted), if any."""
        op = self.operation
        return (op.id, str(op.state)) if op is not None and op.is_open else None

    def unacknowledged_drift(self) -> str | None:
        """The DNS drift that blocks moves (not acknowledged by an operator), as one sentence; None: none."""
        found = self.dns_drift
        if found is None or found.key == self.dns_drift_ack:
            return None
        return found.summary

    def drift_status(self) -> dict[str, Any] | None:
        """The status line of the DNS drift: what differs, since when, acknowledged or not."""
        found = self.dns_drift
        if found is None:
            return None
        return {**found.to_dict(), "since": self.dns_drift_at, "acknowledged": found.key == self.dns_drift_ack}

    def slot_status(self) -> list[dict[str, Any]] | None:
        """The status line of the replication slots on the current primary: retained WAL per slot."""
        return self.slots

    def home_up_for(self, now: float) -> float | None:
        """How long every signal of the home site has been up; None when one is not (or there is none)."""
        signals = [s for s in self.signals.get(self.config.active, []) if s.counts]
        if not signals or any(s.machine.state is not Health.UP for s in signals):
            return None
        return now - max((s.machine.since or now for s in signals), default=now)

    def shared_down(self) -> list[str]:
        """Shared upstream dependencies this instance sees down."""
        return sorted(name for name, sig in self.shared.items() if sig.machine.state is Health.DOWN)

    def snapshot(self, now: float) -> Snapshot:
        """Freeze the health of every signal that counts (an ``info`` vantage does not); healthy signals are
        counted, not described."""
        sites = {}
        for site, every in self.signals.items():
            signals = [s for s in every if s.counts]
            views = tuple(SignalView(s.key.name, s.machine.state, s.machine.describe())
                          for s in signals if s.machine.state is not Health.UP)
            sites[site] = SiteView(site, views, len(signals) - len(views))
        return Snapshot(self.name, now, sites)

    def vantage(self) -> list[dict[str, Any]]:
        """Each provider_health signal beside the engine's own view of its site (the site's health from the
        other signals that count), with the sentence where the two disagree (None: they agree or one is unknown)."""
        out = []
        for site, every in self.signals.items():
            readers = [s for s in every if s.provider is not None]
            for sig in readers:
                own = [s for s in every if s.counts and s is not sig]
                views = tuple(SignalView(s.key.name, s.machine.state) for s in own if s.machine.state is not Health.UP)
                engine = SiteView(site, views, len(own) - len(views)).health
                provider = {Health.UP: True, Health.DOWN: False}.get(sig.machine.state)
                engine_up = {Health.UP: True, Health.DOWN: False}.get(engine)
                out.append({"site": site, "signal": sig.key.name, "provider": sig.provider,
                            "counts_as": "vote" if sig.counts else "info", "provider_health": str(sig.machine.state),
                            "engine_health": str(engine),
                            "disagreement": disagreement(site, sig.provider or "", provider, engine_up)})
        return out

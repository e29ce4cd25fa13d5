"""The engine's read-only views: liveness, readiness, the status document and the metrics text.

Implements :class:`engine.core.ports.StatusView` for the HTTP face. The status is rebuilt at most every
``max_age`` seconds and at once after any recorded event (the context tells it), so a dashboard polled
by many clients never costs a view of every signal per request.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

from actions.dns import propagation_worst_s
from engine import __version__
from engine.core.drill import summary
from engine.core.drill_calendar import drill_timing
from engine.core.health import Health
from engine.core.rto import worst_case_rto
from engine.runtime.brakes import Brakes
from engine.runtime.context import RuntimeContext
from engine.runtime.drills import Drills
from engine.runtime.peering import Peering
from engine.runtime.probe_scheduler import Scheduler
from engine.runtime.service import ServiceRuntime


class EngineStatus:
    def __init__(self, ctx: RuntimeContext, scheduler: Scheduler, peering: Peering, brakes: Brakes,
                 drills: Drills) -> None:
        self.ctx = ctx
        self.scheduler = scheduler
        self.peering = peering
        self.brakes = brakes
        self.drills = drills
        self._status_cache: dict[bool, tuple[float, bytes]] = {}
        self.waiting_signals: Callable[[], list[str]] = list  # the daemon's: signals not observed yet
        ctx.on_record(self._status_cache.clear)  # something happened: the next status read rebuilds

    def service_names(self) -> Collection[str]:
        return self.ctx.services.keys()

    def metrics_text(self) -> bytes:
        return bytes(self.ctx.metrics.render())

    def api_counter(self, method: str, route: str, status: str) -> Any:
        return self.ctx.metrics.api_requests.labels(method, route, status)

    def _reconciliation_summary(self, service: str) -> dict[str, Any] | None:
        if self.ctx.journal is None:
            return None
        data = self.ctx.journal.get_state(service, "last_reconciliation")
        if not data:
            return None
        return {k: data.get(k) for k in ("sentence", "identical", "at", "seconds", "primary", "standby")}

    def _drills_summary(self, rt: ServiceRuntime) -> dict[str, Any] | None:
        if self.ctx.journal is None:
            return None
        running = self.drills.running.get(rt.name)
        out: dict[str, Any] = {"running": None if running is None else running.id}
        now = self.ctx.clock.now()
        for kind in ("shadow", "full"):
            sched = rt.config.drills.shadow if kind == "shadow" else rt.config.drills.full
            last = self.ctx.journal.drills(service=rt.name, kind=kind, limit=1)
            entry: dict[str, Any] = {"scheduled": sched.enabled, "last": summary(last[0]) if last else None}
            if sched.enabled:
                timing = drill_timing(sched.schedule, sched.window, now, last[0]["started_at"] if last else None,
                                      self.drills.first_start())
                entry.update(schedule=sched.schedule, timing=timing.state, next_at=timing.fire,
                             window_ends_at=timing.deadline)
            out[kind] = entry
        return out

    def _rto_summary(self, rt: ServiceRuntime) -> dict[str, Any]:
        """The worst case the configuration allows beside the last measured move (a drill's ``rto`` phase,
        or the last failover runbook from its start to DNS verified)."""
        if rt.rto_estimate is None:
            rt.rto_estimate = worst_case_rto(self.ctx.config, rt.name, dns_propagation=propagation_worst_s).to_dict()
        measured: dict[str, Any] | None = None
        if self.ctx.journal is not None:
            for drill in self.ctx.journal.drills(service=rt.name, kind="full", limit=1):
                phase = next((p for p in drill.get("phases") or [] if p["phase"] == "rto"), None)
                if phase is not None:
                    measured = {"seconds": phase["seconds"], "in": f"drill {drill['id']}", "at": drill["started_at"],
                                "from": "drill start to the standby serving"}
            for op in self.ctx.journal.operations(service=rt.name, limit=5):
                verified = (op.get("steps") or {}).get("verify_dns") or {}
                if op.get("kind") == "failover" and op.get("state") == "done" and verified.get("finished_at"):
                    if measured is None or op["created_at"] > measured["at"]:
                        measured = {"seconds": round(verified["finished_at"] - op["created_at"], 3),
                                    "in": f"operation {op['id']}", "at": op["created_at"],
                                    "from": "decision to DNS verified (detection not included)"}
                    break
        return {"worst_case_s": rt.rto_estimate.get("total_s"), "rto_slo_s": rt.config.policy.rto_slo,
                "measured": measured}

    def _write_lease(self, rt: ServiceRuntime) -> dict[str, Any] | None:
        """What this engine's heartbeats say of the active site's database, and whether it gave the lease up."""
        if rt.database is None:
            return None
        mono = self.ctx.clock.monotonic()
        local = rt.state.active == self.ctx.config.instance.site
        return {"primary": rt.state.active, "local": local,
                "primary_writable": rt.database.writability.writable(mono),
                "heartbeat": rt.database.writability.describe(mono),
                "given_up": local and rt.database.writability.writable(mono) is False}

    def healthy(self) -> tuple[bool, str]:
        """Liveness: the decision loop has ticked recently."""
        if self.ctx.last_tick is None:
            return False, "decision loop has not ticked yet"
        age = self.ctx.clock.monotonic() - self.ctx.last_tick
        limit = 3 * self.ctx.config.instance.tick + 2.0
        if age > limit:
            return False, f"decision loop last ticked {age:.1f}s ago (limit {limit:.0f}s)"
        return True, f"ticked {age:.1f}s ago"

    def ready(self) -> tuple[bool, list[str]]:
        """Readiness: live, journal open, and every signal observed at least once."""
        reasons = []
        ok, why = self.healthy()
        if not ok:
            reasons.append(why)
        if self.ctx.journal is None:
            reasons.append("journal not open")
        elif not self.ctx.journal.writable:
            reasons.append("the journal cannot be written (disk full or read-only?): no move can be recorded, so "
                           "none starts")
        waiting = self.waiting_signals()
        if waiting:
            reasons.append(f"{len(waiting)} signal(s) not observed yet, e.g. {waiting[0]}")
        return not reasons, reasons

    def status_json(self, max_age: float = 0.2, *, all_signals: bool = False) -> bytes:
        """The status as JSON, rebuilt at most every ``max_age`` seconds and at once after any recorded
        event: a dashboard polled by many clients must not rebuild a view of every signal per request."""
        now = self.ctx.clock.monotonic()
        cached = self._status_cache.get(all_signals)
        if cached is None or now - cached[0] > max_age:
            cached = (now, json.dumps(self.status(all_signals=all_signals), default=str).encode())
            self._status_cache[all_signals] = cached
        return cached[1]

    def status(self, *, all_signals: bool = True) -> dict[str, Any]:
        """Everything an operator looks at. Each site carries ``signal_counts`` (by state) and
        ``signals``: every signal with ``all_signals``, else only those not up, so the overview of
        a thousand healthy signals stays a few kilobytes (``GET /v1/status``; the service view and
        ``?signals=all`` list them all)."""
        inst = self.ctx.config.instance
        services = {}
        for name, rt in self.ctx.services.items():
            snapshot = rt.snapshot(self.ctx.clock.now())
            services[name] = {
                "active": rt.state.active,
                "epoch": rt.state.epoch,
                "paused": rt.state.paused,
                "last_move_at": rt.state.last_move_at,
                "lag_s": rt.lag_s,
                "dns": rt.dns_state,
                "decision": None if rt.decision is None else {
                    "verdict": str(rt.decision.verdict), "message": rt.decision.message,
                    "target": rt.decision.target, "executor": rt.decision.executor, "since": rt.decided_at},
                "operation": None if rt.operation is None else {
                    "id": rt.operation.id, "state": str(rt.operation.state), "message": rt.operation.message},
                "sites": {
                    site: {"health": str(snapshot.sites[site].health),
                           "role": "active" if site == rt.state.active else "standby",
                           "signal_counts": dict(Counter(str(s.machine.state) for s in sigs if s.counts)),
                           "signals": [s.to_dict() for s in sigs
                                       if all_signals or s.machine.state is not Health.UP]}
                    for site, sigs in rt.signals.items()},
                "provider_vantage": rt.vantage() or None,
                "shared_dependencies": [s.to_dict() for s in rt.shared.values()],
                "replication": None if rt.replication is None else rt.replication.to_dict(),
                "synchronous": None if rt.database is None or rt.config.database is None
                or rt.config.database.synchronous == "off" else rt.database.sync.status(),
                "last_reconciliation": self._reconciliation_summary(name),
                "paused_until": rt.paused_until if rt.state.paused else None,
                "cooldown_until": (None if rt.state.last_move_at is None
                                   else rt.state.last_move_at + rt.config.policy.cooldown),
                "breaker": None if self.ctx.journal is None else self.brakes.breaker(rt, self.ctx.clock.now()),
                "self_fenced": rt.self_fenced,
                "write_lease": self._write_lease(rt),
                "stray_primary": None if rt.stray is None else rt.stray.summary(),
                "dns_drift": rt.drift_status(),
                "replication_slots": rt.slot_status(),
                "scheduled_switchover": None if self.ctx.journal is None else self.ctx.journal.get_state(
                    rt.name, "scheduled_switchover"),
                "lease": None if rt.lease is None else {"length_s": rt.lease.length, "hold_s": rt.lease.hold,
                                                        "wait_s": rt.lease.wait, "slack_s": rt.lease.slack},
                "drills": self._drills_summary(rt),
                "rto": self._rto_summary(rt),
            }
        return {
            "instance": {"id": inst.id, "site": inst.site, "role": inst.role, "version": __version__,
                         "started_at": self.ctx.started_at},
            "time": self.ctx.clock.now(),
            "healthy": self.healthy()[0],
            "quorum": self.ctx.quorum_ok,
            "scheduler": self.scheduler.summary(),
            "peers": self.peering.status(),
            "services": services,
        }

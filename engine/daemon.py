"""The daemon: wires config, probes, health machines, peering, decisions, runbooks, journal and API.

One :class:`Engine` per process. Probes report observations into health machines; a tick loop
builds a frozen :class:`~engine.decide.Snapshot` per service and hands it to the
:class:`~engine.coordinator.Coordinator`, which tallies votes with the peers, decides, records
every change of decision and runs failover operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import sqlite3
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from engine import __version__
from engine.clock import Clock, SystemClock
from engine.config.model import EngineConfig, ServiceConfig
from engine.coordinator import Coordinator, StepsFactory
from engine.decide import ServiceState, SignalView, SiteView, Snapshot
from engine.health import Change, Health, HealthMachine
from engine.journal import Journal
from engine.metrics import STATE_VALUE, Metrics
from engine.model import Observation, SignalKey
from engine.peering import Peering
from engine.policy import ClusterDecision
from engine.runbook import Operation
from engine.scheduler import Scheduler
from probes.base import Probe
from probes.http import new_session
from probes.registry import build_probe

log = structlog.get_logger("engine")
POKE_GAP = 0.02  # seconds: the shortest time between two decision ticks


@dataclass
class SignalRuntime:
    key: SignalKey
    interval: float
    machine: HealthMachine
    last: Observation | None = None
    meters: Any = None  # metric children resolved once: labels() per check is costly at scale
    probe: Any = None  # the probe the scheduler drives (a drill runs it once more, out of schedule)

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
    rto_estimate: dict[str, Any] | None = None  # engine.rto's worst case (the config does not change)
    self_fenced: dict[str, Any] | None = None  # this engine fenced its own database (cut off); an operator unfences
    lease: Any = None  # engine.lease.Lease of the service (EngineConfig.lease), or None
    paused_until: float | None = None  # a pause with an expiry resumes by itself then

    shared: dict[str, SignalRuntime] = field(default_factory=dict)  # scope: shared dependencies

    def shared_down(self) -> list[str]:
        """Shared upstream dependencies this instance sees down."""
        return sorted(name for name, sig in self.shared.items() if sig.machine.state is Health.DOWN)

    def snapshot(self, now: float) -> Snapshot:
        """Freeze the health of every signal; healthy signals are counted, not described."""
        sites = {}
        for site, signals in self.signals.items():
            views = tuple(SignalView(s.key.name, s.machine.state, s.machine.describe())
                          for s in signals if s.machine.state is not Health.UP)
            sites[site] = SiteView(site, views, len(signals) - len(views))
        return Snapshot(self.name, now, sites)


class StartupError(Exception):
    """The engine cannot start (journal not writable, address in use): one line for the operator."""


class Engine:
    """A running instance. ``await start()``, then ``await stop()`` (or ``await run_forever()``)."""

    def __init__(self, config: EngineConfig, *, clock: Clock | None = None,
                 probe_factory: Any = None, steps_factory: StepsFactory | None = None,
                 notifier: Any = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.journal: Journal | None = None
        self.services: dict[str, ServiceRuntime] = {}
        self.signals: dict[SignalKey, SignalRuntime] = {}
        self._probe_factory = probe_factory or build_probe
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self.scheduler = Scheduler(self._on_observation, clock=self.clock,
                                   on_lateness=self._on_lateness, on_skip=self._on_skip)
        self.started_at: float | None = None
        self.last_tick: float | None = None
        self.ticks = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event()
        self._poked = asyncio.Event()
        self._status_cache: dict[bool, tuple[float, bytes]] = {}
        self._api: Any = None
        self.api_url: str | None = None
        self.peering = Peering(config, self.clock)
        from engine.auth import Authenticator

        self.auth = Authenticator(config.api)
        self.peering.on_change = self.poke
        if steps_factory is None:
            from engine.failover import failover_steps

            steps_factory = failover_steps
        self.coordinator = Coordinator(self, steps_factory)
        from engine.drills import Drills

        self.drills = Drills(self)
        if notifier is None:
            from actions.notify import Notifier

            notifier = Notifier(config.notifications)
        self.notifier = notifier

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, *, serve_api: bool = True) -> None:
        cfg = self.config
        self.started_at = self.clock.now()
        try:
            self.journal = Journal.open(cfg.journal.path)
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"journal.path {cfg.journal.path}: {getattr(exc, 'strerror', None) or exc}") from None
        self.coordinator.started_mono = self.clock.monotonic()
        for name, svc in cfg.services.items():
            self.services[name] = ServiceRuntime(name, svc, self._load_state(name, svc))
            self.services[name].self_fenced = self.journal.get_state(name, "self_fenced")
            self.services[name].lease = cfg.lease(name)
            self.services[name].paused_until = self.journal.get_state(name, "paused_until")
            breaker = self.journal.get_state(name, "breaker") or {}
            self.metrics.breaker_open.labels(name).set(1 if breaker.get("open") else 0)
            self.metrics.active_site.labels(name, self.services[name].state.active).set(1)
        self._build_signals()
        if serve_api:
            from engine.api import ApiServer

            self._api = ApiServer(self)
            try:
                self.api_url = await self._api.start(cfg.instance.listen)
            except OSError as exc:
                await self.journal.close()
                for session in self._sessions.values():  # the probes' sessions: no "Unclosed client session"
                    await session.close()
                raise StartupError(f"instance.listen {cfg.instance.listen}: {exc.strerror or exc}") from None
        await self.record("engine", f"engine {cfg.instance.id} started in {cfg.instance.site} "
                          f"({cfg.instance.role}, {len(self.signals)} signals)",
                          data={"version": __version__, "listen": self.api_url})
        # Everything built so far (config, probes, machines) lives as long as the process: move it
        # out of the collector's sight so a full collection does not stall the probe loop.
        gc.collect()
        gc.freeze()
        for rt in self.services.values():
            if rt.database is not None:
                rt.database.start()
        await self.coordinator.resume_open()
        await self.drills.recover()
        for rt in self.services.values():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.coordinator.sync_dns(rt, self.clock.now())
        self._tasks = [asyncio.create_task(self.scheduler.run(), name="scheduler"),
                       asyncio.create_task(self._tick_loop(), name="tick"),
                       asyncio.create_task(self.coordinator.dns_sync_loop(), name="dns-sync"),
                       asyncio.create_task(self.drills.loop(), name="drills")]
        log.info("engine started", instance=cfg.instance.id, site=cfg.instance.site,
                 signals=len(self.signals), api=self.api_url)

    def _load_state(self, name: str, svc: ServiceConfig) -> ServiceState:
        assert self.journal is not None
        saved = self.journal.all_state(name)
        active = saved.get("active", svc.active)
        if active not in svc.sites:
            active = svc.active
        return ServiceState(active=active, epoch=int(saved.get("epoch", 0)),
                            paused=bool(saved.get("paused", False)), last_move_at=saved.get("last_move_at"))

    def _session(self, new_connection: bool) -> aiohttp.ClientSession:
        if new_connection not in self._sessions:
            self._sessions[new_connection] = new_session(keep_alive=not new_connection)
        return self._sessions[new_connection]

    def _build_signals(self) -> None:
        for name, svc in self.config.services.items():
            runtime = self.services[name]
            for site, site_cfg in svc.sites.items():
                runtime.signals[site] = [self._add_signal(name, site, p.signal_name, p, svc)
                                         for p in site_cfg.probes]
            if svc.database is not None and self.config.instance.role == "engine":
                from engine.database_watch import DatabaseWatch

                runtime.database = DatabaseWatch(self, runtime)
                runtime.replication = self._add_signal(name, None, "replication", svc.database.lag_probe, svc,
                                                       probe=runtime.database.probe)
            for dep in svc.dependencies:
                if dep.scope == "site":
                    assert dep.site is not None
                    runtime.signals[dep.site].append(
                        self._add_signal(name, dep.site, f"dep:{dep.name}", dep.probe, svc))
                else:
                    runtime.shared[dep.name] = self._add_signal(name, None, f"dep:{dep.name}", dep.probe, svc)

    def _add_signal(self, service: str, site: str | None, signal: str, probe_cfg: Any,
                    svc: ServiceConfig, probe: Probe | None = None) -> SignalRuntime:
        key = SignalKey(service, site, signal)
        machine = HealthMachine(getattr(probe_cfg, "failure_threshold", None) or svc.policy.failure_threshold,
                                getattr(probe_cfg, "success_threshold", None) or svc.policy.success_threshold)
        sig = SignalRuntime(key, probe_cfg.interval, machine, meters=self._meters(service, site or "*", signal))
        self.signals[key] = sig
        if probe is None:
            kind = getattr(probe_cfg, "type", None)
            session = self._session(getattr(probe_cfg, "new_connection", True)) if kind == "http" else None
            probe = self._probe_factory(probe_cfg, clock=self.clock, http_session=session)
        self.scheduler.add(key, probe, probe_cfg.interval)
        sig.probe = probe
        self.metrics.signal_state.labels(service, site or "*", signal).set(STATE_VALUE["unknown"])
        return sig

    def _meters(self, service: str, site: str, signal: str) -> tuple[Any, ...]:
        m = self.metrics
        return (m.probe_results.labels(service, site, "ok"), m.probe_results.labels(service, site, "fail"),
                m.probe_latency.labels(service, site), m.signal_failures.labels(service, site, signal))

    async def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.scheduler.stop()
        for task in self._tasks:
            if task.get_name() != "scheduler":
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.drills.close()
        await self.coordinator.close()
        for rt in self.services.values():
            if rt.database is not None:
                await rt.database.close()
        await self.peering.close()
        await self.notifier.close()
        if self._api is not None:
            await self._api.stop()
        for session in self._sessions.values():
            await session.close()
        if self.journal is not None:
            with contextlib.suppress(Exception):
                await self.record("engine", f"engine {self.config.instance.id} stopped")
            await self.journal.close()
        log.info("engine stopped", instance=self.config.instance.id)

    async def run_forever(self) -> None:
        """Start, then run until SIGTERM or SIGINT; stop cleanly."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()

    # -- observations ----------------------------------------------------------------------------
    def _on_observation(self, key: SignalKey, obs: Observation) -> Awaitable[None] | None:
        """Feed a health machine; only a state change costs a journal write (returned to await)."""
        sig = self.signals[key]
        sig.last = obs
        ok_count, fail_count, latency, failures = sig.meters
        (ok_count if obs.ok else fail_count).inc()
        latency.observe(obs.latency_s)
        # the machine learns the result when the check completes, not when it started
        change = sig.machine.observe(obs.ok, obs.at + obs.latency_s, obs.reason)
        if key.name == "replication" and obs.value is not None:
            rt = self.services[key.service]
            rt.lag_s = obs.value  # kept while the primary is unreachable: the last known lag
            self.metrics.replication_lag.labels(key.service).set(obs.value)
        failures.set(sig.machine.consecutive_failures)
        if change is not None:
            return self._on_change(key, change)
        return None

    async def _on_change(self, key: SignalKey, change: Change) -> None:
        self.poke()
        self.metrics.signal_state.labels(key.service, key.site or "*", key.name).set(
            STATE_VALUE[str(change.current)])
        message = f"{key}: {change.previous} -> {change.current} ({self.signals[key].machine.describe()})"
        log.info("signal changed", signal=str(key), previous=str(change.previous),
                 current=str(change.current), reason=change.reason)
        await self.record("signal", message, service=key.service, at=change.at,
                          data={"signal": str(key), "previous": str(change.previous),
                                "current": str(change.current), "reason": change.reason})

    def _on_lateness(self, _key: SignalKey, lateness: float) -> None:
        self.metrics.lateness.observe(max(0.0, lateness))

    def _on_skip(self, key: SignalKey) -> None:
        self.metrics.skipped.labels(key.service).inc()

    # -- decisions -------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        """Decide every tick, and at once when something changed (a signal, a peer's view)."""
        interval = self.config.instance.tick
        while True:
            started = self.clock.monotonic()
            self._poked.clear()
            try:
                await self.tick()
            except Exception:  # the loop must keep ticking; the failure is logged
                log.exception("decision tick failed")
            remaining = max(0.0, interval - (self.clock.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._poked.wait()
            # a burst of changes (thousands of signals coming up at start) coalesces into at most one
            # tick every POKE_GAP seconds, so deciding at once never costs a snapshot per change
            gap = POKE_GAP - (self.clock.monotonic() - started)
            if gap > 0:
                await asyncio.sleep(gap)

    def poke(self) -> None:
        """Something that can change a decision happened: decide now rather than at the next tick."""
        self._poked.set()

    async def tick(self) -> None:
        now = self.clock.now()
        await self.coordinator.tick(now)
        self.last_tick = self.clock.monotonic()
        self.ticks += 1
        self.metrics.loop_tick.set(now)

    async def note_decision(self, rt: ServiceRuntime, decision: ClusterDecision, now: float,
                            snapshot: Snapshot) -> None:
        """Keep the latest decision; journal it when its substance changes."""
        for site, view in snapshot.sites.items():
            self.metrics.site_state.labels(rt.name, site).set(STATE_VALUE[str(view.health)])
        key = (decision.verdict, decision.target, decision.executor, rt.state.paused, rt.state.epoch,
               decision.reasons, tuple((s, v.health) for s, v in snapshot.sites.items()))
        rt.decision = decision
        if key == rt.decision_key:
            return
        rt.decision_key = key
        rt.decided_at = now
        self.metrics.decisions.labels(rt.name, str(decision.verdict)).inc()
        (log.warning if str(decision.verdict) == "page" else log.info)(
            "decision", service=rt.name, verdict=str(decision.verdict), message=decision.message)
        await self.record("decision", decision.message, service=rt.name, at=now,
                          data={"verdict": str(decision.verdict), "target": decision.target,
                                "executor": decision.executor, "reasons": list(decision.reasons)})
        if str(decision.verdict) == "page":
            await self.notify("page", decision.message, rt.name, {"reasons": list(decision.reasons)})

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

    async def notify(self, kind: str, message: str, service: str | None, data: dict[str, Any]) -> None:
        """Hand a notification to the webhooks; never blocks the loop (queued, retried elsewhere)."""
        self.notifier.send(kind, message, service=service, instance=self.config.instance.id,
                           at=self.clock.now(), data=data)

    def _reconciliation_summary(self, service: str) -> dict[str, Any] | None:
        if self.journal is None:
            return None
        data = self.journal.get_state(service, "last_reconciliation")
        if not data:
            return None
        return {k: data.get(k) for k in ("sentence", "identical", "at", "seconds", "primary", "standby")}

    def _drills_summary(self, rt: ServiceRuntime) -> dict[str, Any] | None:
        if self.journal is None:
            return None
        from engine.drill_schedule import drill_timing
        from engine.drills import summary

        running = self.drills.running.get(rt.name)
        out: dict[str, Any] = {"running": None if running is None else running.id}
        now = self.clock.now()
        for kind in ("shadow", "full"):
            sched = rt.config.drills.shadow if kind == "shadow" else rt.config.drills.full
            last = self.journal.drills(service=rt.name, kind=kind, limit=1)
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
            from engine.rto import worst_case_rto

            rt.rto_estimate = worst_case_rto(self.config, rt.name).to_dict()
        measured: dict[str, Any] | None = None
        if self.journal is not None:
            for drill in self.journal.drills(service=rt.name, kind="full", limit=1):
                phase = next((p for p in drill.get("phases") or [] if p["phase"] == "rto"), None)
                if phase is not None:
                    measured = {"seconds": phase["seconds"], "in": f"drill {drill['id']}", "at": drill["started_at"],
                                "from": "drill start to the standby serving"}
            for op in self.journal.operations(service=rt.name, limit=5):
                verified = (op.get("steps") or {}).get("verify_dns") or {}
                if op.get("kind") == "failover" and op.get("state") == "done" and verified.get("finished_at"):
                    if measured is None or op["created_at"] > measured["at"]:
                        measured = {"seconds": round(verified["finished_at"] - op["created_at"], 3),
                                    "in": f"operation {op['id']}", "at": op["created_at"],
                                    "from": "decision to DNS verified (detection not included)"}
                    break
        return {"worst_case_s": rt.rto_estimate.get("total_s"), "rto_slo_s": rt.config.policy.rto_slo,
                "measured": measured}

    def journal_or_fail(self) -> Journal:
        if self.journal is None:
            raise RuntimeError("the journal is not open")
        return self.journal

    async def record(self, kind: str, message: str, *, service: str | None = None, at: float | None = None,
                     actor: str | None = None, data: dict[str, Any] | None = None) -> int:
        assert self.journal is not None
        self._status_cache.clear()  # something happened: the next status read rebuilds
        self.metrics.journal_events.labels(kind).inc()
        return await self.journal.append(kind, message, service=service,
                                         at=self.clock.now() if at is None else at, actor=actor, data=data)

    # -- views -----------------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        """Liveness: the decision loop has ticked recently."""
        if self.last_tick is None:
            return False, "decision loop has not ticked yet"
        age = self.clock.monotonic() - self.last_tick
        limit = 3 * self.config.instance.tick + 2.0
        if age > limit:
            return False, f"decision loop last ticked {age:.1f}s ago (limit {limit:.0f}s)"
        return True, f"ticked {age:.1f}s ago"

    def ready(self) -> tuple[bool, list[str]]:
        """Readiness: live, journal open, and every signal observed at least once."""
        reasons = []
        ok, why = self.healthy()
        if not ok:
            reasons.append(why)
        if self.journal is None:
            reasons.append("journal not open")
        waiting = [str(k) for k, s in self.signals.items() if s.last is None]
        if waiting:
            reasons.append(f"{len(waiting)} signal(s) not observed yet, e.g. {waiting[0]}")
        return not reasons, reasons

    def status_json(self, max_age: float = 0.2, *, all_signals: bool = False) -> bytes:
        """The status as JSON, rebuilt at most every ``max_age`` seconds and at once after any recorded
        event: a dashboard polled by many clients must not rebuild a view of every signal per request."""
        now = self.clock.monotonic()
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
        inst = self.config.instance
        services = {}
        for name, rt in self.services.items():
            snapshot = rt.snapshot(self.clock.now())
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
                           "signal_counts": dict(Counter(str(s.machine.state) for s in sigs)),
                           "signals": [s.to_dict() for s in sigs
                                       if all_signals or s.machine.state is not Health.UP]}
                    for site, sigs in rt.signals.items()},
                "shared_dependencies": [s.to_dict() for s in rt.shared.values()],
                "replication": None if rt.replication is None else rt.replication.to_dict(),
                "last_reconciliation": self._reconciliation_summary(name),
                "paused_until": rt.paused_until if rt.state.paused else None,
                "cooldown_until": (None if rt.state.last_move_at is None
                                   else rt.state.last_move_at + rt.config.policy.cooldown),
                "breaker": None if self.journal is None else self.coordinator.breaker(rt, self.clock.now()),
                "self_fenced": rt.self_fenced,
                "scheduled_switchover": None if self.journal is None else self.journal.get_state(
                    rt.name, "scheduled_switchover"),
                "lease": None if rt.lease is None else {"self_fence_after_s": rt.lease.self_fence_after,
                                                        "wait_s": rt.lease.wait, "minimum_s": rt.lease.minimum},
                "drills": self._drills_summary(rt),
                "rto": self._rto_summary(rt),
            }
        return {
            "instance": {"id": inst.id, "site": inst.site, "role": inst.role, "version": __version__,
                         "started_at": self.started_at},
            "time": self.clock.now(),
            "healthy": self.healthy()[0],
            "quorum": self.coordinator.quorum_ok,
            "scheduler": self.scheduler.summary(),
            "peers": self.peering.status(),
            "services": services,
        }



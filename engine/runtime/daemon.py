"""The daemon: the only composition root. It builds every component and hands each what it needs.

One :class:`Engine` per process. It owns the probe loop (observations into health machines) and the
decision loop (a tick per ``instance.tick``, or at once when poked), and it wires, in order: the
shared :class:`~engine.runtime.context.RuntimeContext` (config, clock, journal, metrics, notifier,
services), peering, the brakes, the lease watch, the runbooks, the coordinator, the drills, the moves,
the operator actions and the status view; then the HTTP app, which gets only the core's ports
(:class:`~engine.core.ports.EnginePorts`). Only the CLI and the demo import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sqlite3
from collections.abc import Awaitable
from typing import Any

import aiohttp
import structlog

from actions.notify import Notifier
from engine import __version__
from engine.config.model import EngineConfig, ServiceConfig
from engine.core.clock import Clock, SystemClock
from engine.core.decide import ServiceState
from engine.core.health import Change, HealthMachine
from engine.core.model import Observation, SignalKey
from engine.core.ports import EnginePorts
from engine.http.app import ApiServer
from engine.runtime import logs, tracing
from engine.runtime.brakes import Brakes
from engine.runtime.claims import ClaimDesk
from engine.runtime.cluster_view import ClusterView
from engine.runtime.context import RuntimeContext
from engine.runtime.coordination.etcd_mode import etcd_mode
from engine.runtime.coordinator import Coordinator, StepsFactory
from engine.runtime.database_watch import DatabaseWatch
from engine.runtime.drills import Drills
from engine.runtime.journal import Journal, JournalLost
from engine.runtime.lease_watch import LeaseWatch
from engine.runtime.metrics import STATE_VALUE, Metrics
from engine.runtime.moves import Moves
from engine.runtime.operator import Operator
from engine.runtime.peering import Peering
from engine.runtime.probe_scheduler import Scheduler
from engine.runtime.runbooks import Runbooks
from engine.runtime.service import ServiceRuntime, SignalRuntime
from engine.runtime.shared_operator import SharedOperatorState
from engine.runtime.status import EngineStatus
from engine.runtime.stray_primary import StrayPrimaryWatch
from probes.base import Probe
from probes.http import new_session
from probes.registry import build_probe

log = structlog.get_logger("engine")
POKE_GAP = 0.02  # seconds: the shortest time between two decision ticks


class StartupError(Exception):
    """The engine cannot start (journal not writable, address in use): one line for the operator."""


class Engine:
    """A running instance. ``await start()``, then ``await stop()`` (or ``await run_forever()``)."""

    def __init__(self, config: EngineConfig, *, clock: Clock | None = None,
                 probe_factory: Any = None, steps_factory: StepsFactory | None = None,
                 notifier: Any = None, new_journal: bool = False) -> None:
        self.config = config
        self.new_journal = new_journal
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.ctx = ctx = RuntimeContext(config, self.clock, self.metrics, notifier or Notifier(config.notifications))
        ctx.on_poke(self.poke)
        self.signals: dict[SignalKey, SignalRuntime] = {}
        self._probe_factory = probe_factory or build_probe
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self.scheduler = Scheduler(self._on_observation, clock=self.clock,
                                   on_lateness=self._on_lateness, on_skip=self._on_skip)
        self.ticks = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event()
        self._poked = asyncio.Event()
        self._api: ApiServer | None = None
        self.api_url: str | None = None
        self.etcd = etcd_mode(config, ctx, self.clock)  # coordination.type: etcd (None in peer mode)
        self.peering: Peering = self.etcd.peering if self.etcd else Peering(config, self.clock)
        self.peering.on_change = self.poke
        self.shared: SharedOperatorState = (  # operator state cluster-wide (peer verdicts or etcd keys)
            self.etcd.shared if self.etcd else SharedOperatorState(ctx, self.peering))
        self.brakes = Brakes(ctx, self.shared)
        self.lease: LeaseWatch = self.etcd.lease if self.etcd else LeaseWatch(ctx, self.peering)
        steps = steps_factory or Runbooks(ctx, self.lease.release)
        self.coordinator = Coordinator(ctx, self.peering, self.brakes, self.lease,
                                       self.etcd.steps(steps) if self.etcd else steps, shared=self.shared)
        self.claims = self.coordinator.claims = ClaimDesk(ctx, self.peering)  # one move per service across engines
        self.drills = Drills(ctx, self.peering, self.coordinator)
        self.coordinator.announced_drill = self.drills.announced
        self.moves = Moves(ctx, self.coordinator, self.peering, self.drills.drill_of)
        self.coordinator.before_decide.append(self.moves.scheduled_switchover)
        self.operator = Operator(ctx, self.coordinator, self.brakes, self.moves)
        self.view = EngineStatus(ctx, self.scheduler, self.peering, self.brakes, self.drills)
        self.view.waiting_signals = lambda: [str(k) for k, s in self.signals.items() if s.last is None]

    @property
    def services(self) -> dict[str, ServiceRuntime]:
        return self.ctx.services

    @property
    def journal(self) -> Journal | None:
        return self.ctx.journal

    def status(self, *, all_signals: bool = True) -> dict[str, Any]:
        return self.view.status(all_signals=all_signals)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, *, serve_api: bool = True) -> None:
        cfg, ctx = self.config, self.ctx
        logs.bind_instance(cfg.instance.id, cfg.instance.site, cfg.instance.role)
        tracing.install_from_env(cfg.instance.id, cfg.instance.site)
        ctx.started_at = self.clock.now()
        try:
            journal = ctx.journal = Journal.open(cfg.journal.path, begin_new=self.new_journal)
        except JournalLost as exc:
            raise StartupError(str(exc)) from None
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"journal.path {cfg.journal.path}: {getattr(exc, 'strerror', None) or exc}") from None
        self.metrics.watch_journal(lambda: ctx.journal is not None and ctx.journal.writable)
        self.lease.started_mono = self.clock.monotonic()
        for name, svc in cfg.services.items():
            rt = ctx.services[name] = ServiceRuntime(name, svc, self._load_state(name, svc))
            rt.self_fenced = journal.get_state(name, "self_fenced")
            rt.lease = self.etcd.lease_of(name) if self.etcd else cfg.lease(name)
            rt.paused_until = journal.get_state(name, "paused_until")
            breaker = journal.get_state(name, "breaker") or {}
            self.metrics.breaker_open.labels(name).set(1 if breaker.get("open") else 0)
            self.metrics.active_site.labels(name, rt.state.active).set(1)
            self.metrics.describe_service(name, rpo=svc.policy.rpo, rto_slo=svc.policy.rto_slo,
                                          runbook_deadline=svc.policy.runbook_deadline)
        self.shared.load()
        self._build_signals()
        if serve_api:
            self._api = ApiServer(EnginePorts(config=cfg, clock=self.clock, view=self.view, journal=journal,
                                              peers=self.peering, operator=self.operator, drills=self.drills,
                                              cluster=ClusterView(ctx, self.peering, self.shared),
                                              claims=self.claims))
            try:
                self.api_url = await self._api.start(cfg.instance.listen)
            except OSError as exc:
                await journal.close()
                for session in self._sessions.values():  # the probes' sessions: no "Unclosed client session"
                    await session.close()
                raise StartupError(f"instance.listen {cfg.instance.listen}: {exc.strerror or exc}") from None
        if journal.began_anew is not None:  # never silent: an event, and a page
            message = (f"engine {cfg.instance.id} began a NEW journal (--new-journal): {journal.began_anew}; its "
                       "epoch, pause, breaker and operations were forgotten, the epoch is re-learned from DNS and the "
                       "peers")
            await ctx.record("alert", message, data={"journal": str(cfg.journal.path)})
            await ctx.notify("page", message, None, {"journal": str(cfg.journal.path)})
        await ctx.record("engine", f"engine {cfg.instance.id} started in {cfg.instance.site} "
                         f"({cfg.instance.role}, {len(self.signals)} signals)",
                         data={"version": __version__, "listen": self.api_url})
        # Everything built so far (config, probes, machines) lives as long as the process: move it
        # out of the collector's sight so a full collection does not stall the probe loop.
        gc.collect()
        gc.freeze()
        for rt in ctx.services.values():
            if rt.database is not None:
                rt.database.start()
            if rt.stray is not None:
                rt.stray.start()
        await self.coordinator.resume_open()
        await self.drills.recover()
        for rt in ctx.services.values():
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
        saved = self.ctx.journal_or_fail().all_state(name)
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
            runtime = self.ctx.services[name]
            for site, site_cfg in svc.sites.items():
                runtime.signals[site] = [self._add_signal(name, site, p.signal_name, p, svc)
                                         for p in site_cfg.probes]
            if svc.database is not None and self.config.instance.role == "engine":
                runtime.database = DatabaseWatch(self.ctx, runtime)
                runtime.stray = StrayPrimaryWatch(self.ctx, runtime, self.peering)
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
        if getattr(probe_cfg, "type", None) == "provider_health":  # the provider's vantage: info or a vote
            sig.provider, sig.counts = probe_cfg.provider.type, probe_cfg.counts_as == "vote"
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
        await self.lease.close()
        for rt in self.services.values():
            if rt.database is not None:
                await rt.database.close()
            if rt.stray is not None:
                await rt.stray.close()
        await self.peering.close()
        await self.claims.close()
        if self.etcd is not None:
            await self.etcd.close()
        await self.ctx.notifier.close()
        if self._api is not None:
            await self._api.stop()
        for session in self._sessions.values():
            await session.close()
        if self.journal is not None:
            with contextlib.suppress(Exception):
                await self.ctx.record("engine", f"engine {self.config.instance.id} stopped")
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
        await self.ctx.record("signal", message, service=key.service, at=change.at,
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
        self.ctx.last_tick = self.clock.monotonic()
        self.ticks += 1
        self.metrics.loop_tick.set(now)

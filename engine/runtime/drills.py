"""Drills: the shadow test (changes nothing) and the full test (a real failover, held, then failed back).

**Shadow** checks, each with its verdict and reason: the standby's probes run once more now and its
health machines; replication lag against the RPO; a reconciliation of the pair; the DNS change
validated without making it (credentials and the compare-and-set prerequisites, see the providers'
``validate``); promotion readiness (:mod:`actions.database.readiness`); synthetic requests replayed
against both sites and compared (:mod:`actions.synthetic`). Passed when every check is.

**Full**: announced to the peers in this instance's verdicts (they hold automatic action for the
service while it runs: see :meth:`engine.core.quorum.Tally.busy`), then the real runbook to the standby;
the standby is held for ``hold`` while it is re-validated every ``validate_every`` (its signals,
synthetic requests); a failed validation ends the hold at once. Then failback: reverse replication
prepared and waited for (bounded), the failback runbook home, and the pair re-protected. Each phase
is timed against its SLO: decision, dns_shift, dns_verified, consistency, rto, failback.

A drill never starts while a runbook runs or halts for the service, while another drill runs, while
paused, or without quorum. Scheduled drills follow cron (UTC) with a window
(:mod:`engine.core.drill_calendar`); a drill that could not run in its window is overdue (an alert, once
per window), and a phase missing its SLO in two full drills running raises an alert too. Reports live
in the journal (``drills`` table), at ``GET /v1/drills[/{id}]`` and as HTML
(:mod:`engine.http.drill_report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from actions.dns import propagation_worst_s
from engine.core.drill import FAILED, KINDS, PASSED, RUNNING, Drill
from engine.core.drill_calendar import drill_timing
from engine.core.gates import Refusal, drill_refusals
from engine.core.ports import Refused, Reply
from engine.core.rto import worst_case_rto
from engine.runtime.brakes import GLOBAL
from engine.runtime.context import RuntimeContext
from engine.runtime.coordinator import Coordinator
from engine.runtime.drill_runs import DrillRuns
from engine.runtime.peering import Peering
from engine.runtime.service import ServiceRuntime

log = structlog.get_logger("engine.drills")


class Drills(DrillRuns):
    """The drills of one engine: refusals, runs, schedule and alerts (what a drill does: DrillRuns)."""

    def __init__(self, ctx: RuntimeContext, peering: Peering, coordinator: Coordinator) -> None:
        self.ctx = ctx
        self.peering = peering
        self.coordinator = coordinator
        self.running: dict[str, Drill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._alerted: set[tuple[str, str, float]] = set()
        self._waiting: set[tuple[str, str, float]] = set()
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    # -- what runs now ---------------------------------------------------------------------------
    def announced(self, service: str) -> str | None:
        """The full drill this instance runs for ``service`` (sent to the peers in every verdict)."""
        drill = self.running.get(service)
        return drill.id if drill is not None and drill.kind == "full" else None

    def drill_of(self, service: str) -> tuple[str, str] | None:
        """(id, kind) of the drill running for ``service``, if any."""
        drill = self.running.get(service)
        return None if drill is None else (drill.id, drill.kind)

    def refusals_for(self, rt: ServiceRuntime, kind: str) -> list[Refusal]:
        """Why a drill of ``kind`` may not start now (empty: it may)."""
        running = self.running.get(rt.name)
        facts = self.ctx.facts(rt, peer_busy=tuple(self._peer_busy(rt)))
        return drill_refusals(facts, kind, running_drill=None if running is None else running.id)

    def _service(self, name: str) -> ServiceRuntime:
        self.ctx.require_writable_journal()
        rt = self.ctx.services.get(name)
        if rt is None:
            raise Refused("unknown_service", f"no service named {name!r}; known: {sorted(self.ctx.services)}",
                          "not_found")
        return rt

    def refusals(self, service: str, kind: str) -> list[Refusal]:
        return self.refusals_for(self._service(service), kind)

    async def start(self, service: str, kind: str, *, actor: str, reason: str) -> Reply:
        rt = self._service(service)
        drill = await self.begin(rt, kind, trigger="manual", actor=actor, reason=reason)
        body: dict[str, Any] = {"drill": drill.id, "service": rt.name, "kind": drill.kind, "state": drill.state}
        if kind == "full":  # say how long the standby will serve before the failback (a user waits that long)
            body["hold_s"] = rt.config.drills.full.hold
        return Reply(body, "accepted")

    def _peer_busy(self, rt: ServiceRuntime) -> list[str]:
        out = []
        for peer_id, got in self.peering.received_for(rt.name).items():
            if got is None:
                continue
            if got.view.drill:
                out.append(f"{peer_id} announces drill {got.view.drill}")
            if got.view.runbook:
                out.append(f"{peer_id} runs {got.view.runbook}")
        return out

    async def begin(self, rt: ServiceRuntime, kind: str, *, trigger: str, actor: str | None,
                    reason: str) -> Drill:
        reasons = self.refusals_for(rt, kind)
        if reasons:
            raise Refused("refused", f"{kind} drill of {rt.name} refused: " + "; ".join(r.detail for r in reasons),
                          reasons=[r.to_dict() for r in reasons])
        ctx = self.ctx
        now = ctx.clock.now()
        drill = Drill(f"drill-{rt.name}-{kind}-{secrets.token_hex(3)}", rt.name, kind, trigger, actor, reason, now)
        drill.source = rt.state.active
        others = [s for s in rt.config.sites if s != rt.state.active]
        drill.target = others[0] if others else None
        try:
            drill.rto_estimate = worst_case_rto(ctx.config, rt.name, dns_propagation=propagation_worst_s).to_dict()
        except Exception:  # an estimate is context for the report, never a reason not to drill
            log.exception("rto estimate failed", service=rt.name)
        self.running[rt.name] = drill
        await ctx.journal_or_fail().save_drill(drill.to_dict())
        by = f", by {actor}" if actor else ""
        message = f"{kind} drill {drill.id} of {rt.name} started ({trigger}{by}): {reason}"
        await ctx.record("drill", message, service=rt.name, actor=actor, at=now,
                            data={"drill": drill.id, "kind": kind})
        await ctx.notify("drill", message, rt.name, {"drill": drill.id, "kind": kind})
        task = asyncio.create_task(self._run(rt, drill), name=f"drill {drill.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        ctx.poke()  # the announcement goes out with the next verdicts
        return drill

    async def _run(self, rt: ServiceRuntime, drill: Drill) -> None:
        ctx = self.ctx
        try:
            if drill.kind == "shadow":
                await self._shadow(rt, drill)
            else:
                await self._full(rt, drill)
        except asyncio.CancelledError:
            drill.state, drill.sentence = FAILED, "interrupted: the engine stopped during the drill"
            raise
        except Refused as exc:  # the service was claimed by another operation meanwhile: the drill moves nothing
            drill.state, drill.sentence = FAILED, f"refused: {exc.refusal.detail}"
        except Exception as exc:
            log.exception("drill crashed", drill=drill.id)
            drill.state = FAILED
            drill.sentence = f"the drill failed unexpectedly: {type(exc).__name__}: {exc}"
        finally:
            drill.finished_at = ctx.clock.now()
            self.running.pop(rt.name, None)
            with contextlib.suppress(RuntimeError):  # the journal closing at shutdown must not mask the outcome
                await ctx.journal_or_fail().save_drill(drill.to_dict())
        await self._finished(rt, drill)

    async def _finished(self, rt: ServiceRuntime, drill: Drill) -> None:
        ctx = self.ctx
        m = ctx.metrics
        m.drill_result.labels(rt.name, drill.kind).set(1 if drill.state == PASSED else 0)
        m.drill_time.labels(rt.name, drill.kind).set(drill.finished_at or ctx.clock.now())
        m.drill_overdue.labels(rt.name, drill.kind).set(0)
        for p in drill.phases:
            m.drill_phase.labels(rt.name, p["phase"]).set(p["seconds"])
            m.drill_slo_missed.labels(rt.name, p["phase"]).set(0 if p["met"] else 1)
        kind = "drill" if drill.state == PASSED else "alert"
        message = f"{drill.kind} drill {drill.id} of {rt.name} {drill.state}: {drill.sentence}"
        await ctx.record("drill", message, service=rt.name, actor=drill.actor,
                            data={"drill": drill.id, "kind": drill.kind, "state": drill.state,
                                  "slo_met": drill.slo_met})
        await ctx.notify(kind, message, rt.name, {"drill": drill.id, "state": drill.state})
        if drill.kind == "full":
            await self._slo_streaks(rt, drill)

    async def _slo_streaks(self, rt: ServiceRuntime, drill: Drill) -> None:
        """A phase that missed its SLO in this full drill and the one before: an alert."""
        previous = [d for d in self.ctx.journal_or_fail().drills(service=rt.name, kind="full", limit=5)
                    if d["id"] != drill.id and d.get("phases")]
        if not previous:
            return
        missed_before = {p["phase"] for p in previous[0]["phases"] if not p.get("met", True)}
        repeated = [p for p in drill.phases if not p["met"] and p["phase"] in missed_before]
        if repeated:
            names = ", ".join(f"{p['phase']} ({p['seconds']:.1f}s > {p['slo_s']:g}s)" for p in repeated)
            message = f"{rt.name}: phase(s) missed their SLO in two full drills running: {names}"
            data = {"drill": drill.id, "previous": previous[0]["id"], "phases": [p["phase"] for p in repeated]}
            await self.ctx.record("alert", message, service=rt.name, data=data)
            await self.ctx.notify("alert", message, rt.name, data)

    # -- schedule --------------------------------------------------------------------------------
    async def tick(self, now: float) -> None:
        """Start what is due, say once per window what waits or is overdue."""
        ctx = self.ctx
        if ctx.config.instance.role != "engine":
            return
        journal = ctx.journal_or_fail()
        first_start = self.first_start()
        for rt in ctx.services.values():
            if ctx.config.instance.site != rt.state.active:
                continue  # the engine in the active site runs scheduled drills and says when one is overdue
            for kind in KINDS:
                sched = rt.config.drills.shadow if kind == "shadow" else rt.config.drills.full
                if not sched.enabled:
                    continue
                last = journal.drills(service=rt.name, kind=kind, limit=1)
                last_started = last[0]["started_at"] if last else None
                timing = drill_timing(sched.schedule, sched.window, now, last_started, first_start)
                if timing.state == "due":
                    await self._start_due(rt, kind, timing.fire, now)
                elif timing.state == "overdue":
                    ctx.metrics.drill_overdue.labels(rt.name, kind).set(1)
                    key = (rt.name, kind, timing.fire)
                    if key not in self._alerted:
                        self._alerted.add(key)
                        message = (f"{kind} drill of {rt.name} is overdue: none ran in the window after "
                                   f"{_ts(timing.fire)} UTC")
                        await ctx.record("alert", message, service=rt.name, at=now,
                                            data={"kind": kind, "fire": timing.fire})
                        await ctx.notify("alert", message, rt.name, {"kind": kind, "fire": timing.fire})

    def first_start(self) -> float | None:
        """When this engine first started (journal): no drill is owed for fire times before it."""
        return self.ctx.journal_or_fail().get_state(GLOBAL, "first_started_at") or self.ctx.started_at

    async def _start_due(self, rt: ServiceRuntime, kind: str, fire: float, now: float) -> None:
        # only one engine drills: the one in the active site (the other sees the announcement or the result)
        if self.ctx.config.instance.site != rt.state.active or rt.name in self.running:
            return
        try:
            await self.begin(rt, kind, trigger="schedule", actor=None, reason=f"scheduled ({_ts(fire)} UTC)")
        except Refused as exc:
            key = (rt.name, kind, fire)
            if key not in self._waiting:
                self._waiting.add(key)
                await self.ctx.record("drill", f"scheduled {kind} drill of {rt.name} waits: "
                                      + "; ".join(r["detail"] for r in exc.extra["reasons"]),
                                      service=rt.name, at=now, data={"kind": kind, "reasons": exc.extra["reasons"]})

    async def loop(self, every: float = 30.0) -> None:
        while True:
            try:
                await self.tick(self.ctx.clock.now())
            except Exception:
                log.exception("drill schedule tick failed")
            await asyncio.sleep(every)

    async def recover(self) -> None:
        """Drills the journal shows as running were cut short by a stop: say so (their runbooks resume).
        Also remembers the engine's first start: no drill is owed for fire times before it."""
        journal = self.ctx.journal_or_fail()
        if journal.get_state(GLOBAL, "first_started_at") is None:
            await journal.put_state(GLOBAL, "first_started_at", self.ctx.clock.now(), at=self.ctx.clock.now())
        for data in journal.drills(state=RUNNING, limit=50):
            data["state"] = FAILED
            data["sentence"] = ("interrupted: the engine stopped during the drill; any runbook it started resumes "
                                "on its own; check where the service is active")
            data["finished_at"] = self.ctx.clock.now()
            await journal.save_drill(data)
            message = (f"drill {data['id']} of {data['service']} was interrupted by a restart: check where the "
                       "service is active (a full drill may have left it in the standby site)")
            await self.ctx.record("alert", message, service=data["service"], data={"drill": data["id"]})
            await self.ctx.notify("alert", message, data["service"], {"drill": data["id"]})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _ts(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at))


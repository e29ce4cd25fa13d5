"""Drills: the shadow test (changes nothing) and the full test (a real failover, held, then failed back).

**Shadow** checks, each with its verdict and reason: the standby's probes run once more now and its
health machines; replication lag against the RPO; a reconciliation of the pair; the DNS change
validated without making it (credentials and the compare-and-set prerequisites, see the providers'
``validate``); promotion readiness (:mod:`actions.database.readiness`); synthetic requests replayed
against both sites and compared (:mod:`actions.synthetic`). Passed when every check is.

**Full**: announced to the peers in this instance's verdicts (they hold automatic action for the
service while it runs: see :meth:`engine.quorum.Tally.busy`), then the real runbook to the standby;
the standby is held for ``hold`` while it is re-validated every ``validate_every`` (its signals,
synthetic requests); a failed validation ends the hold at once. Then failback: reverse replication
prepared and waited for (bounded), the failback runbook home, and the pair re-protected. Each phase
is timed against its SLO: decision, dns_shift, dns_verified, consistency, rto, failback.

A drill never starts while a runbook runs or halts for the service, while another drill runs, while
paused, or without quorum. Scheduled drills follow cron (UTC) with a window
(:mod:`engine.drill_schedule`); a drill that could not run in its window is overdue (an alert, once
per window), and a phase missing its SLO in two full drills running raises an alert too. Reports live
in the journal (``drills`` table), at ``GET /v1/drills[/{id}]`` and as HTML
(:mod:`engine.drill_report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from engine.coordinator import GLOBAL
from engine.drill_schedule import drill_timing
from engine.runbook import Operation, OpState

if TYPE_CHECKING:
    from engine.daemon import Engine, ServiceRuntime

log = structlog.get_logger("engine.drills")

KINDS = ("shadow", "full")
PHASES = ("decision", "dns_shift", "dns_verified", "consistency", "rto", "failback")
RUNNING, PASSED, FAILED = "running", "passed", "failed"


@dataclass
class Drill:
    id: str
    service: str
    kind: str
    trigger: str
    actor: str | None
    reason: str
    started_at: float
    state: str = RUNNING
    finished_at: float | None = None
    sentence: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    source: str | None = None
    target: str | None = None
    rto_estimate: dict[str, Any] | None = None

    def check(self, name: str, ok: bool, detail: str, *, at: float, seconds: float | None = None,
              data: dict[str, Any] | None = None) -> bool:
        self.checks.append({"check": name, "ok": ok, "detail": detail, "at": at,
                            "seconds": None if seconds is None else round(seconds, 3), "data": data or {}})
        return ok

    def phase(self, name: str, started_at: float, finished_at: float, slo: float) -> None:
        seconds = max(0.0, finished_at - started_at)
        self.phases.append({"phase": name, "started_at": started_at, "finished_at": finished_at,
                            "seconds": round(seconds, 3), "slo_s": slo, "met": seconds <= slo})

    @property
    def slo_met(self) -> bool:
        return all(p["met"] for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "service": self.service, "kind": self.kind, "trigger": self.trigger,
                "actor": self.actor, "reason": self.reason, "started_at": self.started_at,
                "finished_at": self.finished_at, "state": self.state, "sentence": self.sentence,
                "checks": self.checks, "phases": self.phases, "operations": self.operations,
                "source": self.source, "target": self.target, "slo_met": self.slo_met,
                "duration_s": None if self.finished_at is None else round(self.finished_at - self.started_at, 3),
                "rto_estimate": self.rto_estimate}


def summary(drill: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "service", "kind", "trigger", "actor", "state", "started_at", "finished_at", "duration_s",
            "sentence", "slo_met", "source", "target")
    return {k: drill.get(k) for k in keys}


class DrillRefused(Exception):
    def __init__(self, reasons: list[dict[str, str]]) -> None:
        super().__init__("; ".join(r["detail"] for r in reasons))
        self.reasons = reasons


class Drills:
    """The drills of one engine: refusals, runs, schedule and alerts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
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

    def refusals(self, rt: ServiceRuntime, kind: str) -> list[dict[str, str]]:
        """Why a drill of ``kind`` may not start now (empty: it may)."""
        engine = self.engine
        reasons: list[dict[str, str]] = []
        if engine.config.instance.role != "engine":
            reasons.append({"code": "witness", "detail": "a witness never drills: send this to an engine"})
        if rt.name in self.running:
            reasons.append({"code": "drill_in_progress",
                            "detail": f"drill {self.running[rt.name].id} is running for {rt.name}"})
        if rt.operation is not None:
            reasons.append({"code": "operation_in_progress",
                            "detail": f"operation {rt.operation.id} is {rt.operation.state}: a real failover "
                                      "comes first"})
        if rt.state.paused:
            reasons.append({"code": "paused", "detail": f"{rt.name} is paused: no drill while in maintenance"})
        if engine.coordinator.quorum_ok is False or (engine.coordinator.quorum_ok is None and engine.config.peers):
            reasons.append({"code": "no_quorum", "detail": "quorum is lost or not known yet: a drill must not run "
                                                           "blind"})
        reasons.extend({"code": "peer_busy", "detail": b} for b in self._peer_busy(rt))
        if kind == "full" and rt.state.active != rt.config.active:
            reasons.append({"code": "not_home", "detail": f"{rt.name} is active in {rt.state.active}, not its home "
                                                          f"{rt.config.active}: fail back before a full drill"})
        return reasons

    def _peer_busy(self, rt: ServiceRuntime) -> list[str]:
        out = []
        for peer_id, got in self.engine.peering.received_for(rt.name).items():
            if got is None:
                continue
            if got.view.drill:
                out.append(f"{peer_id} announces drill {got.view.drill}")
            if got.view.runbook:
                out.append(f"{peer_id} runs {got.view.runbook}")
        return out

    async def start(self, rt: ServiceRuntime, kind: str, *, trigger: str, actor: str | None,
                    reason: str) -> Drill:
        reasons = self.refusals(rt, kind)
        if reasons:
            raise DrillRefused(reasons)
        engine = self.engine
        now = engine.clock.now()
        drill = Drill(f"drill-{rt.name}-{kind}-{secrets.token_hex(3)}", rt.name, kind, trigger, actor, reason, now)
        drill.source = rt.state.active
        others = [s for s in rt.config.sites if s != rt.state.active]
        drill.target = others[0] if others else None
        try:
            from engine.rto import worst_case_rto

            drill.rto_estimate = worst_case_rto(engine.config, rt.name).to_dict()
        except Exception:  # an estimate is context for the report, never a reason not to drill
            log.exception("rto estimate failed", service=rt.name)
        self.running[rt.name] = drill
        await engine.journal_or_fail().save_drill(drill.to_dict())
        by = f", by {actor}" if actor else ""
        message = f"{kind} drill {drill.id} of {rt.name} started ({trigger}{by}): {reason}"
        await engine.record("drill", message, service=rt.name, actor=actor, at=now,
                            data={"drill": drill.id, "kind": kind})
        await engine.notify("drill", message, rt.name, {"drill": drill.id, "kind": kind})
        task = asyncio.create_task(self._run(rt, drill), name=f"drill {drill.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        engine.poke()  # the announcement goes out with the next verdicts
        return drill

    async def _run(self, rt: ServiceRuntime, drill: Drill) -> None:
        engine = self.engine
        try:
            if drill.kind == "shadow":
                await self._shadow(rt, drill)
            else:
                await self._full(rt, drill)
        except asyncio.CancelledError:
            drill.state, drill.sentence = FAILED, "interrupted: the engine stopped during the drill"
            raise
        except Exception as exc:
            log.exception("drill crashed", drill=drill.id)
            drill.state = FAILED
            drill.sentence = f"the drill failed unexpectedly: {type(exc).__name__}: {exc}"
        finally:
            drill.finished_at = engine.clock.now()
            self.running.pop(rt.name, None)
            with contextlib.suppress(RuntimeError):  # the journal closing at shutdown must not mask the outcome
                await engine.journal_or_fail().save_drill(drill.to_dict())
        await self._finished(rt, drill)

    async def _finished(self, rt: ServiceRuntime, drill: Drill) -> None:
        engine = self.engine
        m = engine.metrics
        m.drill_result.labels(rt.name, drill.kind).set(1 if drill.state == PASSED else 0)
        m.drill_time.labels(rt.name, drill.kind).set(drill.finished_at or engine.clock.now())
        m.drill_overdue.labels(rt.name, drill.kind).set(0)
        for p in drill.phases:
            m.drill_phase.labels(rt.name, p["phase"]).set(p["seconds"])
            m.drill_slo_missed.labels(rt.name, p["phase"]).set(0 if p["met"] else 1)
        kind = "drill" if drill.state == PASSED else "alert"
        message = f"{drill.kind} drill {drill.id} of {rt.name} {drill.state}: {drill.sentence}"
        await engine.record("drill", message, service=rt.name, actor=drill.actor,
                            data={"drill": drill.id, "kind": drill.kind, "state": drill.state,
                                  "slo_met": drill.slo_met})
        await engine.notify(kind, message, rt.name, {"drill": drill.id, "state": drill.state})
        if drill.kind == "full":
            await self._slo_streaks(rt, drill)

    async def _slo_streaks(self, rt: ServiceRuntime, drill: Drill) -> None:
        """A phase that missed its SLO in this full drill and the one before: an alert."""
        previous = [d for d in self.engine.journal_or_fail().drills(service=rt.name, kind="full", limit=5)
                    if d["id"] != drill.id and d.get("phases")]
        if not previous:
            return
        missed_before = {p["phase"] for p in previous[0]["phases"] if not p.get("met", True)}
        repeated = [p for p in drill.phases if not p["met"] and p["phase"] in missed_before]
        if repeated:
            names = ", ".join(f"{p['phase']} ({p['seconds']:.1f}s > {p['slo_s']:g}s)" for p in repeated)
            message = f"{rt.name}: phase(s) missed their SLO in two full drills running: {names}"
            data = {"drill": drill.id, "previous": previous[0]["id"], "phases": [p["phase"] for p in repeated]}
            await self.engine.record("alert", message, service=rt.name, data=data)
            await self.engine.notify("alert", message, rt.name, data)

    # -- shadow ----------------------------------------------------------------------------------
    async def _shadow(self, rt: ServiceRuntime, drill: Drill) -> None:
        engine = self.engine
        standby = drill.target
        assert standby is not None
        clock = engine.clock
        await self._probe_standby(rt, drill, standby)
        cfg = rt.config
        if cfg.database is not None:
            lag, rpo = rt.lag_s, cfg.policy.rpo
            drill.check("lag_within_rpo", lag is not None and lag <= rpo,
                        "replication lag unknown" if lag is None else f"lag {lag:.1f}s, RPO {rpo:g}s", at=clock.now())
            await self._timed(drill, "reconciliation", self._reconcile(rt))
            await self._timed(drill, "promotion_ready", self._readiness(rt, standby))
        if cfg.dns is not None:
            await self._timed(drill, "dns_change_valid", self._dns_validate(rt, standby))
        if cfg.drills.synthetic is not None:
            await self._timed(drill, "synthetic", self._synthetic(rt, drill.source or rt.state.active, standby))
        failed = [c for c in drill.checks if not c["ok"]]
        drill.state = FAILED if failed else PASSED
        drill.sentence = (f"{len(drill.checks) - len(failed)} of {len(drill.checks)} checks passed"
                          + (": " + "; ".join(f"{c['check']}: {c['detail']}" for c in failed) if failed else
                             f": {standby} is ready to take over {rt.name}"))

    async def _timed(self, drill: Drill, name: str, work: Awaitable[tuple[bool, str, dict[str, Any]]]) -> bool:
        clock = self.engine.clock
        t0 = clock.monotonic()
        try:
            ok, detail, data = await work
        except Exception as exc:  # a check that breaks is a failed check, with its reason
            log.exception("drill check failed", check=name)
            ok, detail, data = False, f"{type(exc).__name__}: {exc}", {}
        return drill.check(name, ok, detail, at=clock.now(), seconds=clock.monotonic() - t0, data=data)

    async def _probe_standby(self, rt: ServiceRuntime, drill: Drill, standby: str) -> None:
        clock = self.engine.clock
        signals = rt.signals.get(standby, [])
        t0 = clock.monotonic()
        results = await asyncio.gather(*(sig.probe.observe() for sig in signals if sig.probe is not None))
        bad = [f"{sig.key.name}: {obs.reason}" for sig, obs in zip(signals, results, strict=False) if not obs.ok]
        drill.check("standby_probes", not bad and bool(results),
                    f"{len(results) - len(bad)} of {len(results)} probes of {standby} pass now"
                    + (f" ({'; '.join(bad)})" if bad else ""), at=clock.now(), seconds=clock.monotonic() - t0)
        not_up = [f"{sig.key.name} {sig.machine.describe()}" for sig in signals if str(sig.machine.state) != "up"]
        drill.check("standby_healthy", not not_up,
                    f"every signal of {standby} is up" if not not_up else "; ".join(not_up), at=clock.now())

    async def _reconcile(self, rt: ServiceRuntime) -> tuple[bool, str, dict[str, Any]]:
        if rt.database is None:
            return False, "no database watch on this instance", {}
        data = await rt.database.reconcile_now()
        return bool(data.get("identical")), str(data.get("sentence", "")), {
            k: data.get(k) for k in ("identical", "seconds", "primary", "standby")}

    async def _readiness(self, rt: ServiceRuntime, standby: str) -> tuple[bool, str, dict[str, Any]]:
        from actions.database.readiness import promotion_readiness

        assert rt.config.database is not None
        result = await promotion_readiness(rt.config.database, standby)
        return result.ok, result.sentence, result.to_dict()

    async def _dns_validate(self, rt: ServiceRuntime, standby: str) -> tuple[bool, str, dict[str, Any]]:
        from actions.dns.errors import DnsError
        from actions.dns.provider import build_provider

        assert rt.config.dns is not None
        provider = build_provider(rt.config.dns, rt.name)
        try:
            state = await provider.read()
            if state.site != rt.state.active:
                return (False, f"DNS points to {state.site}, not the active site {rt.state.active}: "
                        f"{state.describe()}", {})
            sentence = await provider.validate(state, standby, state.epoch.number + 1)
            return True, sentence, {"dns": state.describe()}
        except DnsError as exc:
            return False, str(exc), {}
        finally:
            await provider.aclose()

    async def _synthetic(self, rt: ServiceRuntime, primary: str, standby: str) -> tuple[bool, str, dict[str, Any]]:
        from actions.synthetic import compare, replay

        synthetic = rt.config.drills.synthetic
        assert synthetic is not None
        a, b = await asyncio.gather(replay(synthetic, primary), replay(synthetic, standby))
        ok, sentence = compare(synthetic, a, b)
        return ok, sentence, {"primary": a.to_dict(), "standby": b.to_dict()}

    # -- full ------------------------------------------------------------------------------------
    async def _full(self, rt: ServiceRuntime, drill: Drill) -> None:
        from engine.decide import Verdict
        from engine.operator import failover_gates
        from engine.policy import ClusterDecision

        engine = self.engine
        clock = engine.clock
        cfg = rt.config.drills
        slo = cfg.slo
        target = drill.target
        assert target is not None
        gates = failover_gates(engine, rt, target)
        for gate in gates:
            drill.check(f"gate:{gate['gate']}", gate["ok"], gate["detail"], at=clock.now())
        blocked = [g for g in gates if g["blocking"] and not g["ok"]]
        if blocked:
            drill.state = FAILED
            drill.sentence = "not started: " + "; ".join(f"{g['gate']}: {g['detail']}" for g in blocked)
            return
        if cfg.synthetic is not None:  # the yardstick: how the primary answers before the move
            await self._timed(drill, "synthetic_baseline", self._synthetic(rt, rt.state.active, target))
        actor = drill.actor or "drill"
        problems = self._switchover_problems(rt, target)
        if problems:  # a drill never fails a healthy primary over with possible loss: it refuses
            drill.state = FAILED
            drill.sentence = "not started: a switchover is not possible now: " + "; ".join(
                f"{p['code']}: {p['detail']}" for p in problems)
            return
        if rt.operation is not None:
            drill.state, drill.sentence = FAILED, f"not started: operation {rt.operation.id} is under way"
            return
        planned = True
        decision = ClusterDecision(Verdict.FAILOVER, f"{drill.kind} drill {drill.id}: {drill.reason}", target,
                                   engine.config.instance.id, True, (),
                                   {"gates": gates, "drill": drill.id, "planned": planned, "require_fence": planned})
        op = await engine.coordinator.start_operation(rt, decision, clock.now(), trigger="drill", actor=actor,
                                                      reason=drill.reason,
                                                      kind="switchover" if planned else "failover")
        drill.operations.append(op.id)
        await self._save(drill)
        drill.phase("decision", drill.started_at, op.created_at, slo.decision)
        await self._wait(op)
        self._runbook_phases(drill, op)
        if op.state is not OpState.DONE:
            drill.state = FAILED
            drill.sentence = (f"the failover runbook {op.id} ended {op.state}: {op.message or 'see the operation'}"
                              + ("; it blocks new runbooks until an operator retries or aborts it"
                                 if op.state is OpState.HALTED else ""))
            return
        await self._save(drill)
        held_ok = await self._hold(rt, drill, target)
        await self._failback(rt, drill, held_ok, reversed_already=planned)

    def _switchover_problems(self, rt: ServiceRuntime, target: str) -> list[dict[str, Any]]:
        from engine.operator import switchover_preconditions

        return [p for p in switchover_preconditions(self.engine, rt, target) if p["code"] != "drill_in_progress"]

    def _runbook_phases(self, drill: Drill, op: Operation) -> None:
        """dns_shift: the shift step itself; dns_verified: shift done to every authoritative server answering;
        consistency: the data-loss check (a switchover's drain); rto: drill start to the standby serving with
        DNS verified (and, after a failover, its consistency checked)."""
        slo = self.engine.services[drill.service].config.drills.slo
        steps = op.steps
        shift = steps.get("shift_dns", {})
        verify = steps.get("verify_dns", {})
        consistency = steps.get("consistency") or steps.get("drain") or {}  # a switchover proves it by draining
        if shift.get("started_at") and shift.get("finished_at"):
            drill.phase("dns_shift", shift["started_at"], shift["finished_at"], slo.dns_shift)
        if shift.get("finished_at") and verify.get("finished_at"):
            drill.phase("dns_verified", shift["finished_at"], verify["finished_at"], slo.dns_verified)
        if consistency.get("started_at") and consistency.get("finished_at"):
            drill.phase("consistency", consistency["started_at"], consistency["finished_at"], slo.consistency)
        ends = [t for t in (verify.get("finished_at"), (steps.get("consistency") or {}).get("finished_at")) if t]
        served = max(ends) if ends else op.finished_at
        if served:
            drill.phase("rto", drill.started_at, served, slo.rto)

    async def _wait(self, op: Operation, *, poll: float = 0.05) -> None:
        while op.state is OpState.RUNNING:
            await self.sleep(poll)

    async def _hold(self, rt: ServiceRuntime, drill: Drill, target: str) -> bool:
        """Serve from ``target`` for ``hold``, re-validating; False as soon as a validation fails."""
        engine = self.engine
        clock = engine.clock
        cfg = rt.config.drills.full
        end = clock.monotonic() + cfg.hold
        rounds = 0
        while True:
            rounds += 1
            signals = rt.signals.get(target, [])
            not_up = [f"{s.key.name} {s.machine.describe()}" for s in signals if str(s.machine.state) != "up"]
            ok = drill.check(f"hold:{rounds}:serving", not not_up,
                             f"every signal of {target} is up" if not not_up else "; ".join(not_up), at=clock.now())
            if ok and rt.config.drills.synthetic is not None:
                ok = await self._timed(drill, f"hold:{rounds}:synthetic", self._synthetic_alone(rt, target))
            await self._save(drill)
            if not ok:
                return False
            remaining = end - clock.monotonic()
            if remaining <= 0:
                return True
            await self.sleep(min(cfg.validate_every, remaining))

    async def _synthetic_alone(self, rt: ServiceRuntime, site: str) -> tuple[bool, str, dict[str, Any]]:
        """During the hold the old primary is fenced: the standby is held to the baseline's thresholds."""
        from actions.synthetic import replay

        synthetic = rt.config.drills.synthetic
        assert synthetic is not None
        sample = await replay(synthetic, site)
        ok = sample.error_rate <= synthetic.max_error_rate_increase and sample.p95_s is not None
        return ok, sample.describe(), sample.to_dict()

    async def _failback(self, rt: ServiceRuntime, drill: Drill, held_ok: bool, *, reversed_already: bool) -> None:
        from engine.decide import Verdict
        from engine.policy import ClusterDecision

        engine = self.engine
        clock = engine.clock
        home = drill.source
        assert home is not None
        started = clock.now()
        if rt.config.database is not None:
            # after a switchover its reverse step already made the old primary the standby
            ok = True if reversed_already else await self._timed(drill, "prepare_failback", self._prepare(rt))
            if ok:
                ok = await self._timed(drill, "reverse_caught_up", self._caught_up(rt))
            if not ok:
                drill.state = FAILED
                drill.sentence = (f"{rt.name} stays in {rt.state.active}: failback not possible automatically "
                                  f"({drill.checks[-1]['detail']}); fail back by hand (runbooks/manual-failover-"
                                  "and-failback.md)")
                return
        planned = not self._switchover_problems(rt, home)
        decision = ClusterDecision(Verdict.FAILOVER, f"{drill.kind} drill {drill.id}: failback", home,
                                   engine.config.instance.id, True, (),
                                   {"drill": drill.id, "planned": planned, "require_fence": planned})
        op = await engine.coordinator.start_operation(rt, decision, clock.now(), trigger="drill",
                                                      actor=drill.actor or "drill", reason=drill.reason,
                                                      kind="failback")
        drill.operations.append(op.id)
        await self._save(drill)
        await self._wait(op)
        if op.state is not OpState.DONE:
            drill.state = FAILED
            drill.sentence = f"the failback runbook {op.id} ended {op.state}: {op.message or 'see the operation'}"
            return
        drill.phase("failback", started, op.finished_at or clock.now(), rt.config.drills.slo.failback)
        if rt.config.database is not None and not planned:  # a planned failback re-protects in its reverse step
            await self._timed(drill, "re_protect", self._prepare(rt))
        failed = [c for c in drill.checks if not c["ok"]]
        drill.state = PASSED if held_ok and not failed else FAILED
        phases = ", ".join(f"{p['phase']} {p['seconds']:.1f}s" + ("" if p["met"] else f" (over SLO {p['slo_s']:g}s)")
                           for p in drill.phases)
        head = (f"{drill.target} served {rt.name} for the hold and it is back in {home}" if held_ok else
                f"validation failed during the hold ({failed[0]['check']}: {failed[0]['detail']}); failed back "
                f"to {home} at once")
        drill.sentence = f"{head}; {phases}"

    async def _prepare(self, rt: ServiceRuntime) -> tuple[bool, str, dict[str, Any]]:
        from actions.database.failback import prepare_failback
        from engine.operator import _Reconciled

        assert rt.config.database is not None and rt.database is not None
        reconciled = await rt.database.reconcile_now(watermark=None)
        result = await prepare_failback(rt.config.database, rt.state.active, _Reconciled(reconciled))
        await self.engine.record("drill", f"drill prepared failback of {rt.name}: {result.sentence}",
                                 service=rt.name, data={"action": "prepare_failback", **result.to_dict()})
        return result.ok, result.sentence, result.to_dict()

    async def _caught_up(self, rt: ServiceRuntime) -> tuple[bool, str, dict[str, Any]]:
        """Reverse replication flowing and within the RPO, waited for at most ``catch_up``."""
        clock = self.engine.clock
        cfg = rt.config.drills.full
        deadline = clock.monotonic() + cfg.catch_up
        while True:
            rep = rt.replication
            lag = rt.lag_s
            if rep is not None and str(rep.machine.state) == "up" and lag is not None and lag <= rt.config.policy.rpo:
                return True, f"reverse replication up, lag {lag:.1f}s", {"lag_s": lag}
            if clock.monotonic() >= deadline:
                why = rep.machine.describe() if rep is not None else "no replication signal"
                return False, f"reverse replication not caught up within {cfg.catch_up:g}s ({why})", {}
            await self.sleep(0.2)

    async def _save(self, drill: Drill) -> None:
        await self.engine.journal_or_fail().save_drill(drill.to_dict())

    # -- schedule --------------------------------------------------------------------------------
    async def tick(self, now: float) -> None:
        """Start what is due, say once per window what waits or is overdue."""
        engine = self.engine
        if engine.config.instance.role != "engine":
            return
        journal = engine.journal_or_fail()
        first_start = self.first_start()
        for rt in engine.services.values():
            if engine.config.instance.site != rt.state.active:
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
                    engine.metrics.drill_overdue.labels(rt.name, kind).set(1)
                    key = (rt.name, kind, timing.fire)
                    if key not in self._alerted:
                        self._alerted.add(key)
                        message = (f"{kind} drill of {rt.name} is overdue: none ran in the window after "
                                   f"{_ts(timing.fire)} UTC")
                        await engine.record("alert", message, service=rt.name, at=now,
                                            data={"kind": kind, "fire": timing.fire})
                        await engine.notify("alert", message, rt.name, {"kind": kind, "fire": timing.fire})

    def first_start(self) -> float | None:
        """When this engine first started (journal): no drill is owed for fire times before it."""
        return self.engine.journal_or_fail().get_state(GLOBAL, "first_started_at") or self.engine.started_at

    async def _start_due(self, rt: ServiceRuntime, kind: str, fire: float, now: float) -> None:
        # only one engine drills: the one in the active site (the other sees the announcement or the result)
        if self.engine.config.instance.site != rt.state.active or rt.name in self.running:
            return
        try:
            await self.start(rt, kind, trigger="schedule", actor=None, reason=f"scheduled ({_ts(fire)} UTC)")
        except DrillRefused as exc:
            key = (rt.name, kind, fire)
            if key not in self._waiting:
                self._waiting.add(key)
                await self.engine.record("drill", f"scheduled {kind} drill of {rt.name} waits: {exc}",
                                         service=rt.name, at=now, data={"kind": kind, "reasons": exc.reasons})

    async def loop(self, every: float = 30.0) -> None:
        while True:
            try:
                await self.tick(self.engine.clock.now())
            except Exception:
                log.exception("drill schedule tick failed")
            await asyncio.sleep(every)

    async def recover(self) -> None:
        """Drills the journal shows as running were cut short by a stop: say so (their runbooks resume).
        Also remembers the engine's first start: no drill is owed for fire times before it."""
        journal = self.engine.journal_or_fail()
        if journal.get_state(GLOBAL, "first_started_at") is None:
            await journal.put_state(GLOBAL, "first_started_at", self.engine.clock.now(), at=self.engine.clock.now())
        for data in journal.drills(state=RUNNING, limit=50):
            data["state"] = FAILED
            data["sentence"] = ("interrupted: the engine stopped during the drill; any runbook it started resumes "
                                "on its own; check where the service is active")
            data["finished_at"] = self.engine.clock.now()
            await journal.save_drill(data)
            message = (f"drill {data['id']} of {data['service']} was interrupted by a restart: check where the "
                       "service is active (a full drill may have left it in the standby site)")
            await self.engine.record("alert", message, service=data["service"], data={"drill": data["id"]})
            await self.engine.notify("alert", message, data["service"], {"drill": data["id"]})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _ts(at: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at))


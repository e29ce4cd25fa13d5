"""What a drill does: the shadow checks and the full drill's move, hold and failback.

A mixin of :class:`engine.runtime.drills.Drills` (which owns the lifecycle, the schedule and the
alerts); see that module for what each kind of drill proves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from actions.database.failback import prepare_failback
from actions.database.readiness import promotion_readiness
from actions.dns.errors import DnsError
from actions.dns.provider import build_provider
from actions.synthetic import compare, replay
from engine.core.decide import DecisionKind
from engine.core.drill import FAILED, PASSED, Drill
from engine.core.gates import failover_gates, switchover_preconditions
from engine.core.operations import Operation, OpState
from engine.core.policy import ClusterDecision
from engine.runtime.context import RuntimeContext
from engine.runtime.coordinator import Coordinator
from engine.runtime.database_watch import Reconciled
from engine.runtime.service import ServiceRuntime
from engine.runtime.weighted_failback import canary, report_data

log = structlog.get_logger("engine.drills")


class DrillRuns:
    ctx: RuntimeContext
    coordinator: Coordinator
    sleep: Callable[[float], Awaitable[None]]

    async def _save(self, drill: Drill) -> None:
        await self.ctx.journal_or_fail().save_drill(drill.to_dict())

    # -- shadow ----------------------------------------------------------------------------------
    async def _shadow(self, rt: ServiceRuntime, drill: Drill) -> None:
        ctx = self.ctx
        standby = drill.target
        assert standby is not None
        clock = ctx.clock
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
        if cfg.dns is not None and cfg.dns.weighted_failback is not None and cfg.dns.weighted_failback.canary:
            await self._timed(drill, "canary", self._canary(rt, standby))
        failed = [c for c in drill.checks if not c["ok"]]
        drill.state = FAILED if failed else PASSED
        drill.sentence = (f"{len(drill.checks) - len(failed)} of {len(drill.checks)} checks passed"
                          + (": " + "; ".join(f"{c['check']}: {c['detail']}" for c in failed) if failed else
                             f": {standby} is ready to take over {rt.name}"))

    async def _timed(self, drill: Drill, name: str, work: Awaitable[tuple[bool, str, dict[str, Any]]]) -> bool:
        clock = self.ctx.clock
        t0 = clock.monotonic()
        try:
            ok, detail, data = await work
        except Exception as exc:  # a check that breaks is a failed check, with its reason
            log.exception("drill check failed", check=name)
            ok, detail, data = False, f"{type(exc).__name__}: {exc}", {}
        return drill.check(name, ok, detail, at=clock.now(), seconds=clock.monotonic() - t0, data=data)

    async def _probe_standby(self, rt: ServiceRuntime, drill: Drill, standby: str) -> None:
        clock = self.ctx.clock
        signals = [s for s in rt.signals.get(standby, []) if s.counts]  # an info vantage is not the engine's
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
        assert rt.config.database is not None
        result = await promotion_readiness(rt.config.database, standby)
        return result.ok, result.sentence, result.to_dict()

    async def _dns_validate(self, rt: ServiceRuntime, standby: str) -> tuple[bool, str, dict[str, Any]]:
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

    async def _canary(self, rt: ServiceRuntime, standby: str) -> tuple[bool, str, dict[str, Any]]:
        """Real traffic, a small share: ``canary_percent`` to the standby for one hold, then all back; its errors
        are the failed checks (engine.runtime.weighted_failback.canary)."""
        assert rt.config.dns is not None
        provider = build_provider(rt.config.dns, rt.name)
        try:
            report = await canary(rt, provider, standby, clock=self.ctx.clock, sleep=self.sleep)
        except DnsError as exc:
            return False, f"canary not run: {exc}", {}
        finally:
            await provider.aclose()
        errors = f"; {len(report.failed_checks)} failed check(s), last: {report.failed_checks[-1]}" \
            if report.failed_checks else ""
        return report.outcome == "finished", report.message + errors, report_data(report)

    async def _synthetic(self, rt: ServiceRuntime, primary: str, standby: str) -> tuple[bool, str, dict[str, Any]]:
        synthetic = rt.config.drills.synthetic
        assert synthetic is not None
        a, b = await asyncio.gather(replay(synthetic, primary), replay(synthetic, standby))
        ok, sentence = compare(synthetic, a, b)
        return ok, sentence, {"primary": a.to_dict(), "standby": b.to_dict()}

    # -- full ------------------------------------------------------------------------------------
    async def _full(self, rt: ServiceRuntime, drill: Drill) -> None:
        ctx = self.ctx
        clock = ctx.clock
        cfg = rt.config.drills
        slo = cfg.slo
        target = drill.target
        assert target is not None
        gates = failover_gates(ctx.facts(rt, drill=(drill.id, drill.kind)), target)
        for gate in gates.gates:
            drill.check(f"gate:{gate.gate}", gate.ok, gate.detail, at=clock.now())
        if not gates.allowed:
            drill.state = FAILED
            drill.sentence = "not started: " + "; ".join(gates.reasons)
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
        decision = ClusterDecision(DecisionKind.FAILOVER, f"{drill.kind} drill {drill.id}: {drill.reason}", target,
                                   ctx.config.instance.id, True, (),
                                   {"gates": gates.to_list(), "drill": drill.id, "planned": planned,
                                    "require_fence": planned})
        op = await self.coordinator.start_operation(rt, decision, clock.now(), trigger="drill", actor=actor,
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
        """Why a switchover is not possible now (this very drill left out)."""
        return [p.to_dict() for p in switchover_preconditions(self.ctx.facts(rt), target)]

    def _runbook_phases(self, drill: Drill, op: Operation) -> None:
        """dns_shift: the shift step itself; dns_verified: shift done to every authoritative server answering;
        consistency: the data-loss check (a switchover's drain); rto: drill start to the standby serving with
        DNS verified (and, after a failover, its consistency checked)."""
        slo = self.ctx.services[drill.service].config.drills.slo
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
        ctx = self.ctx
        clock = ctx.clock
        cfg = rt.config.drills.full
        end = clock.monotonic() + cfg.hold
        rounds = 0
        while True:
            rounds += 1
            signals = [s for s in rt.signals.get(target, []) if s.counts]
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
        synthetic = rt.config.drills.synthetic
        assert synthetic is not None
        sample = await replay(synthetic, site)
        ok = sample.error_rate <= synthetic.max_error_rate_increase and sample.p95_s is not None
        return ok, sample.describe(), sample.to_dict()

    async def _failback(self, rt: ServiceRuntime, drill: Drill, held_ok: bool, *, reversed_already: bool) -> None:
        ctx = self.ctx
        clock = ctx.clock
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
        decision = ClusterDecision(DecisionKind.FAILOVER, f"{drill.kind} drill {drill.id}: failback", home,
                                   ctx.config.instance.id, True, (),
                                   {"drill": drill.id, "planned": planned, "require_fence": planned})
        op = await self.coordinator.start_operation(rt, decision, clock.now(), trigger="drill",
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
        assert rt.config.database is not None and rt.database is not None
        reconciled = await rt.database.reconcile_now(watermark=None)
        result = await prepare_failback(rt.config.database, rt.state.active, Reconciled(reconciled))
        await self.ctx.record("drill", f"drill prepared failback of {rt.name}: {result.sentence}",
                                 service=rt.name, data={"action": "prepare_failback", **result.to_dict()})
        return result.ok, result.sentence, result.to_dict()

    async def _caught_up(self, rt: ServiceRuntime) -> tuple[bool, str, dict[str, Any]]:
        """Reverse replication flowing and within the RPO, waited for at most ``catch_up``."""
        clock = self.ctx.clock
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

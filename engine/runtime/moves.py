"""Moves an operator (or a schedule, or a drill) asks for: failover, failback, switchover.

Each reads the service's facts once, asks the core gates (:mod:`engine.core.gates`), and then
either answers a dry run (the plan from :mod:`engine.core.steps` and every gate), refuses
(:class:`~engine.core.ports.Refused`), or records who asked and why and starts the runbook through
the coordinator. A scheduled switchover that is due starts from the coordinator's tick
(:meth:`Moves.scheduled_switchover`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.core.decide import DecisionKind
from engine.core.gates import (
    GateResult,
    RefusalKind,
    ServiceFacts,
    cannot_act,
    choose_target,
    failback_gates,
    failover_gates,
    switchover_preconditions,
)
from engine.core.operations import fence_required
from engine.core.policy import ClusterDecision
from engine.core.ports import Refused, Reply
from engine.core.steps import names, plan_for
from engine.core.switchover_gates import switchover_gates
from engine.runtime.context import RuntimeContext
from engine.runtime.coordinator import Coordinator
from engine.runtime.evidence import decision_context
from engine.runtime.peering import Peering
from engine.runtime.service import ServiceRuntime

DrillOf = Callable[[str], tuple[str, str] | None]  # the (id, kind) of the drill running for a service


def utc(at: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if isinstance(at, int | float) else "?"


class Moves:
    def __init__(self, ctx: RuntimeContext, coordinator: Coordinator, peering: Peering, drill_of: DrillOf) -> None:
        self.ctx = ctx
        self.coordinator = coordinator
        self.peering = peering
        self.drill_of = drill_of

    # -- facts -----------------------------------------------------------------------------------
    def service(self, name: str) -> ServiceRuntime:
        self.ctx.require_writable_journal()
        rt = self.ctx.services.get(name)
        if rt is None:
            raise Refused("unknown_service", f"no service named {name!r}; known: {sorted(self.ctx.services)}",
                          "not_found")
        return rt

    def facts(self, rt: ServiceRuntime) -> ServiceFacts:
        return self.ctx.facts(rt, drill=self.drill_of(rt.name))

    def _target(self, facts: ServiceFacts, requested: str | None) -> str:
        target = choose_target(facts, requested)
        if not isinstance(target, str):
            raise Refused.of(target)
        return target

    def _can_act(self, facts: ServiceFacts) -> None:
        refused = cannot_act(facts)
        if refused is not None:
            raise Refused.of(refused)

    # -- failover --------------------------------------------------------------------------------
    async def failover(self, service: str, *, actor: str, reason: str, target: str | None, dry_run: bool,
                       force: bool, fence_first: bool) -> Reply:
        rt = self.service(service)
        facts = self.facts(rt)
        to = self._target(facts, target)
        self._can_act(facts)
        gates = failover_gates(facts, to, fence_first=fence_first)
        return await self._move(rt, kind="failover", target=to, gates=gates, actor=actor, reason=reason,
                                dry_run=dry_run, force=force, audit={"fence_first": fence_first},
                                evidence={"require_fence": True} if fence_first else None)

    # -- failback --------------------------------------------------------------------------------
    async def failback(self, service: str, *, actor: str, reason: str, dry_run: bool,
                       acknowledge_reconciliation: bool) -> Reply:
        rt = self.service(service)
        home = rt.config.active
        if rt.state.active == home:
            raise Refused("already_home", f"{rt.name} is already active in its home site {home}")
        facts = self.facts(rt)
        self._can_act(facts)
        gates = failback_gates(facts, acknowledge_reconciliation=acknowledge_reconciliation)
        reverse = gates.get("reverse_replication")
        if reverse is not None and reverse.ok and rt.database is not None:
            await rt.database.reconcile_now()  # with replication flowing back, the pair should now agree
            facts = self.facts(rt)
            gates = failback_gates(facts, acknowledge_reconciliation=acknowledge_reconciliation)
        # both sites healthy: fail back as a switchover (fence, drain, promote, re-protect), losing nothing
        both_up = all(facts.health(s) == "up" for s in (home, rt.state.active))
        return await self._move(rt, kind="failback", target=home, gates=gates, actor=actor, reason=reason,
                                dry_run=dry_run, force=False,
                                audit={"acknowledged_reconciliation": acknowledge_reconciliation, "planned": both_up},
                                evidence={"planned": True, "require_fence": True,
                                          "acknowledged_reconciliation": acknowledge_reconciliation}
                                if both_up else None)

    async def _move(self, rt: ServiceRuntime, *, kind: str, target: str, gates: GateResult, actor: str,
                    reason: str, dry_run: bool, force: bool, audit: dict[str, Any],
                    evidence: dict[str, Any] | None = None) -> Reply:
        """The common end of a manual move: dry run, refusal, or an audited start of the runbook."""
        reasons = gates.reasons
        if dry_run:
            ev = evidence or {}
            plan = plan_for(rt.config, planned=bool(ev.get("planned")), lease=rt.lease,
                            require_fence=bool(ev.get("require_fence")) or fence_required(rt.operation))
            return Reply({"dry_run": True, "service": rt.name, "source": rt.state.active, "target": target,
                          "would": "refuse" if reasons and not force else "start", "plan": names(plan),
                          "gates": gates.to_list(), "reasons": reasons,
                          "epoch": {"from": rt.state.epoch, "to": rt.state.epoch + 1}})
        if reasons and not force:
            raise Refused("refused", f"{kind} of {rt.name} to {target} refused: {'; '.join(reasons)}",
                          reasons=reasons, gates=gates.to_list())
        now = self.ctx.clock.now()
        forced = f"; forced past: {'; '.join(reasons)}" if reasons else ""
        decision = ClusterDecision(DecisionKind.FAILOVER, f"manual {kind} by {actor}: {reason}{forced}", target,
                                   self.ctx.instance_id, True, (),
                                   {"gates": gates.to_list(), "actor": actor, "reason": reason, "force": force,
                                    **decision_context(self.ctx, self.peering, rt, target), **(evidence or {})})
        # the claim first: a request that loses it (409 naming the winner) leaves no "started" in the audit log
        op = await self.coordinator.start_operation(rt, decision, now, trigger="manual", actor=actor, reason=reason,
                                                    kind=kind)
        await self.ctx.record("operator", f"{actor} started a {kind} of {rt.name} to {target}: {reason}{forced}",
                              service=rt.name, actor=actor, at=now,
                              data={"action": kind, "target": target, "reason": reason, "force": force,
                                    "forced_past": reasons, "operation": op.id, **audit})
        return Reply({"operation": op.id, "service": rt.name, "source": op.source, "target": op.target,
                      "forced_past": reasons}, "accepted")

    # -- switchover ------------------------------------------------------------------------------
    async def switchover(self, service: str, *, actor: str, reason: str, target: str | None, dry_run: bool,
                         scheduled_at: float | None, cancel: bool) -> Reply:
        """A planned move with both sites healthy: zero acknowledged writes lost (engine.runtime.switchover)."""
        rt = self.service(service)
        now = self.ctx.clock.now()
        journal = self.ctx.journal_or_fail()
        if cancel:
            pending = journal.get_state(rt.name, "scheduled_switchover")
            await journal.put_state(rt.name, "scheduled_switchover", None, at=now)
            if pending:
                await self.ctx.record("operator", f"{actor} cancelled the switchover of {rt.name} scheduled for "
                                      f"{utc(pending['at'])}: {reason}", service=rt.name, actor=actor,
                                      data={"action": "cancel_switchover", "reason": reason})
            return Reply({"service": rt.name, "cancelled": bool(pending)})
        to = self._target(self.facts(rt), target)
        if scheduled_at is not None and not dry_run:
            if not now < scheduled_at <= now + 30 * 86400:
                raise Refused("invalid", "scheduled_at must be in the future, at most 30 days ahead", "invalid")
            plan = {"at": scheduled_at, "target": to, "reason": reason, "actor": actor}
            await journal.put_state(rt.name, "scheduled_switchover", plan, at=now)
            await self.ctx.record("operator", f"{actor} scheduled a switchover of {rt.name} to {to} at "
                                  f"{utc(scheduled_at)}: {reason}", service=rt.name, actor=actor,
                                  data={"action": "schedule_switchover", **plan})
            return Reply({"service": rt.name, "target": to, "scheduled_at": scheduled_at}, "accepted")
        return await self.start_switchover(rt, to, actor=actor, reason=reason, dry_run=dry_run)

    async def start_switchover(self, rt: ServiceRuntime, target: str, *, actor: str, reason: str,
                               dry_run: bool = False, trigger: str = "manual") -> Reply:
        if target == rt.state.active or target not in rt.config.sites:  # a scheduled plan the world overtook
            raise Refused("already_active", f"{rt.name} is already active in {target}")
        problems = switchover_preconditions(self.facts(rt), target)
        if dry_run:
            return Reply({"dry_run": True, "service": rt.name, "source": rt.state.active, "target": target,
                          "would": "refuse" if problems else "start", "plan": names(plan_for(rt.config, planned=True)),
                          "gates": switchover_gates(self.facts(rt), target).to_list(),
                          "reasons": [f"{p.code}: {p.detail}" for p in problems],
                          "preconditions": [{**p.to_dict(), "status": 412 if p.kind == "precondition" else 409}
                                            for p in problems]})
        if problems:
            kind: RefusalKind = "conflict" if any(p.kind != "precondition" for p in problems) else "precondition"
            raise Refused(problems[0].code if len(problems) == 1 else "preconditions_failed",
                          f"switchover of {rt.name} to {target} refused: " + "; ".join(p.detail for p in problems),
                          kind, reasons=[p.to_dict() for p in problems])
        now = self.ctx.clock.now()
        decision = ClusterDecision(DecisionKind.FAILOVER, f"switchover by {actor}: {reason}", target,
                                   self.ctx.instance_id, True, (),
                                   {"actor": actor, "reason": reason, "planned": True, "require_fence": True,
                                    **decision_context(self.ctx, self.peering, rt, target)})
        op = await self.coordinator.start_operation(rt, decision, now, trigger=trigger, actor=actor, reason=reason,
                                                    kind="switchover")
        await self.ctx.record("operator", f"{actor} started a switchover of {rt.name} to {target}: {reason}",
                              service=rt.name, actor=actor, at=now,
                              data={"action": "switchover", "target": target, "reason": reason, "trigger": trigger,
                                    "operation": op.id})
        return Reply({"operation": op.id, "service": rt.name, "source": op.source, "target": op.target}, "accepted")

    async def scheduled_switchover(self, rt: ServiceRuntime, now: float) -> None:
        """The coordinator's hook before deciding: start a scheduled switchover that is due (or page why not)."""
        ctx = self.ctx
        if ctx.config.instance.role != "engine":
            return
        journal = ctx.journal_or_fail()
        plan = journal.get_state(rt.name, "scheduled_switchover")
        if not plan or now < plan["at"]:
            return
        await journal.put_state(rt.name, "scheduled_switchover", None, at=now)
        try:
            await self.start_switchover(rt, plan["target"], actor=plan["actor"], reason=plan["reason"],
                                        trigger="scheduled")
        except Refused as exc:
            body = {"error": exc.refusal.code, "detail": exc.refusal.detail, **exc.extra}
            message = f"the switchover of {rt.name} scheduled for now did not start: {exc.refusal.detail}"
            await ctx.record("alert", message, service=rt.name, at=now, data={"plan": plan, "refusal": body})
            await ctx.notify("page", message, rt.name, {"plan": plan})

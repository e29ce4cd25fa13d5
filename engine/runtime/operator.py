"""What an operator can do, as the runtime carries it out: pause and resume, arm, unfence, acknowledge a
DNS drift, prepare failback, retry or abort a halted runbook, and the moves (:mod:`engine.runtime.moves`).

Implements :class:`engine.core.ports.OperatorPort`. Every action is recorded with who and why; a
refusal is a :class:`~engine.core.ports.Refused` that HTTP turns into its 4xx. Nothing here knows HTTP.
"""

from __future__ import annotations

import time
from typing import Any

from actions.database.failback import prepare_failback as prepare
from actions.database.fence import unfence as allow_writes
from engine.core.decide import ServiceState
from engine.core.operations import Operation, OpEvent, OpState
from engine.core.ports import Refused, Reply
from engine.runtime.brakes import Brakes
from engine.runtime.context import RuntimeContext
from engine.runtime.coordinator import Coordinator
from engine.runtime.database_watch import Reconciled
from engine.runtime.moves import Moves
from engine.runtime.service import ServiceRuntime


def _expiry(until: float | None) -> str:
    return "" if until is None else f"until {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(until))} UTC"


class Operator:
    def __init__(self, ctx: RuntimeContext, coordinator: Coordinator, brakes: Brakes, moves: Moves) -> None:
        self.ctx = ctx
        self.coordinator = coordinator
        self.brakes = brakes
        self.moves = moves
        self.failover = moves.failover
        self.failback = moves.failback
        self.switchover = moves.switchover

    def _service(self, name: str) -> ServiceRuntime:
        return self.moves.service(name)

    # -- pause and resume ------------------------------------------------------------------------
    async def pause(self, service: str, *, actor: str, reason: str, until: float | None, ttl: float | None,
                    replace: bool = False) -> Reply:
        """Pause, optionally with an expiry (``until`` or ``ttl``): the engine then resumes by itself. A
        pause in force is replaced only with ``replace`` (else refused, saying the current one)."""
        rt = self._service(service)
        now = self.ctx.clock.now()
        if until is not None and ttl is not None:
            raise Refused("invalid", "give until or ttl, not both", "invalid")
        until = until if until is not None else (now + ttl if ttl is not None else None)
        if until is not None and not now < until <= now + 30 * 86400:
            raise Refused("invalid", "until must be in the future, at most 30 days ahead", "invalid")
        if rt.state.paused and not replace:
            current = rt.paused_until
            raise Refused("already_paused", f"{rt.name} is already paused {_expiry(current) or 'with no expiry'}; "
                          "send replace: true (CLI: --replace) to replace that pause", until=current)
        return await self._set_paused(rt, True, actor, reason, until)

    async def resume(self, service: str, *, actor: str, reason: str) -> Reply:
        rt = self._service(service)
        if not rt.state.paused:
            raise Refused("not_paused", f"nothing to do: {rt.name} is not paused")
        return await self._set_paused(rt, False, actor, reason, None)

    async def _set_paused(self, rt: ServiceRuntime, paused: bool, actor: str, reason: str,
                          until: float | None) -> Reply:
        ctx = self.ctx
        now = ctx.clock.now()
        word = "paused" if paused else "resumed"
        expiry = f" {_expiry(until)}" if until is not None else ""
        rt.paused_until = until
        await ctx.journal_or_fail().put_state(rt.name, "paused_until", until, at=now)
        if rt.state.paused != paused:
            state = ServiceState(rt.state.active, rt.state.epoch, paused, rt.state.last_move_at)
            await ctx.set_state(rt, state, now, f"{rt.name} {word}{expiry} by {actor}: {reason}")
        await ctx.record("operator", f"{actor} {word} {rt.name}{expiry}: {reason}", service=rt.name, actor=actor,
                         at=now, data={"action": word, "reason": reason, "until": until})
        await self._publish(rt, "pause", {"paused": paused, "until": until, "reason": reason}, actor)
        ctx.poke()
        return Reply({"service": rt.name, "paused": paused, "until": until})

    # -- the circuit breaker and the self-fence --------------------------------------------------
    async def arm(self, service: str, *, actor: str, reason: str) -> Reply:
        """Re-arm automatic action after the circuit breaker opened (only moves from now on count)."""
        rt = self._service(service)
        ctx = self.ctx
        now = ctx.clock.now()
        before = self.brakes.breaker(rt, now)
        if not before["open"]:  # arming a closed breaker would forget the moves it counts: refused
            raise Refused("not_open", f"nothing to do: the circuit breaker of {rt.name} is closed "
                          f"({before['auto_failovers_in_window']} of {before['limit']} automatic failover(s) in "
                          "its window); its count stays as it is")
        await self.brakes.arm(rt, now, actor)  # published cluster-wide by the brakes
        was = (f"breaker was open since {before['since']}: {before['reason']}" if before["open"]
               else "breaker was closed")
        await ctx.record("operator", f"{actor} re-armed automatic action for {rt.name} ({was}): {reason}",
                         service=rt.name, actor=actor, at=now, data={"action": "arm", "reason": reason,
                                                                     "was_open": before["open"]})
        ctx.poke()
        return Reply({"service": rt.name, "armed": True, "was_open": before["open"]})

    async def unfence(self, service: str, *, actor: str, reason: str, force: bool) -> Reply:
        """Allow writes again on the active site's database after a self-fence (never done by the engine itself)."""
        rt = self._service(service)
        ctx = self.ctx
        if rt.config.database is None:
            raise Refused("no_database", f"{rt.name} has no database pair")
        if rt.operation is not None:
            raise Refused("operation_in_progress", f"operation {rt.operation.id} is {rt.operation.state}")
        if ctx.config.instance.site != rt.state.active:
            raise Refused("not_here", f"send this to the engine in {rt.state.active}: it keeps the self-fence "
                          "mark of its database")
        if ctx.grant_lost_at is not None and not force:
            raise Refused("refused", "this engine is cut off from a majority of voters right now: unfencing could "
                          "let both sites take writes (force: true to do it anyway)",
                          reasons=[{"code": "no_lease", "detail": "a majority of voters does not hear this engine"}])
        site = rt.state.active
        step = await allow_writes(rt.config.database, site)
        now = ctx.clock.now()
        ok = step.status == "ok"
        if ok:
            rt.self_fenced = None
            await ctx.journal_or_fail().put_state(rt.name, "self_fenced", None, at=now)
        await ctx.record("operator", f"{actor} unfenced the database of {rt.name} in {site}: {step.detail} "
                         f"({reason})", service=rt.name, actor=actor, at=now,
                         data={"action": "unfence", "site": site, "ok": ok, "force": force})
        return Reply({"service": rt.name, "site": site, "ok": ok, "detail": step.detail}, "ok" if ok else "failed")

    # -- DNS drift -------------------------------------------------------------------------------
    async def acknowledge_drift(self, service: str, *, actor: str, reason: str) -> Reply:
        """An operator accepts the DNS drift seen now (engine.runtime.dns_drift): audited, covers exactly it."""
        rt = self._service(service)
        reply = await self.coordinator.drift.acknowledge(rt, actor=actor, reason=reason)
        await self._publish(rt, "drift_ack", {"key": rt.dns_drift_ack, "actor": actor, "reason": reason}, actor)
        return reply

    async def _publish(self, rt: ServiceRuntime, key: str, value: dict[str, Any], actor: str) -> None:
        """Peer mode: a change made here reaches every voter with the verdicts (engine.runtime.shared_operator)."""
        if self.coordinator.shared is not None:
            await self.coordinator.shared.publish(rt, key, value, actor)

    # -- failback preparation --------------------------------------------------------------------
    async def prepare_failback(self, service: str, *, actor: str, reason: str,
                               acknowledge_reconciliation: bool) -> Reply:
        """Reconcile, then replicate the current primary to the other site through the slot its promotion
        created: after a failover that prepares the failback; after a failback it re-protects the service."""
        rt = self._service(service)
        if rt.config.database is None or rt.database is None:
            raise Refused("no_database", f"{rt.name} has no database pair on this instance")
        if rt.operation is not None:
            raise Refused("operation_in_progress", f"operation {rt.operation.id} is {rt.operation.state}")
        reconciled = await rt.database.reconcile_now(watermark=None)  # nothing flows back yet: no rows in flight
        result = await prepare(rt.config.database, rt.state.active, Reconciled(reconciled),
                               acknowledge=acknowledge_reconciliation)
        await self.ctx.record("operator", f"{actor} prepared failback of {rt.name}: {result.sentence} ({reason})",
                              service=rt.name, actor=actor, data={"action": "prepare_failback", **result.to_dict()})
        return Reply({"ok": result.ok, "sentence": result.sentence, "result": result.to_dict(),
                      "reconciliation": reconciled.get("sentence")}, "ok" if result.ok else "failed")

    # -- halted runbooks -------------------------------------------------------------------------
    def _halted(self, op_id: str) -> tuple[ServiceRuntime, Operation]:
        self.ctx.require_writable_journal()
        for rt in self.ctx.services.values():
            if rt.operation is not None and rt.operation.id == op_id:
                return rt, rt.operation
        if self.ctx.journal_or_fail().operation(op_id) is None:
            raise Refused("unknown_operation", f"no operation {op_id!r}", "not_found")
        raise Refused("not_halted", f"operation {op_id} is not halted on this instance")

    def find_halted(self, operation_id: str) -> None:
        self._halted(operation_id)

    async def retry(self, operation_id: str, *, actor: str, reason: str) -> Reply:
        rt, op = self._halted(operation_id)
        if op.state is not OpState.HALTED:
            raise Refused("not_halted", f"operation {op.id} is {op.state}")
        ctx = self.ctx
        await ctx.record("operator", f"{actor} retried {op.id}: {reason}", service=rt.name, actor=actor,
                         data={"action": "retry", "operation": op.id, "reason": reason})
        op.advance(OpEvent.RETRY)
        op.message = ""
        op.evidence["deadline_from"] = ctx.clock.now()  # an operator's retry gets a fresh runbook deadline
        await ctx.journal_or_fail().save_operation(op)
        self.coordinator.relaunch(rt, op)
        return Reply({"operation": op.id, "state": str(op.state)}, "accepted")

    async def abort(self, operation_id: str, *, actor: str, reason: str) -> Reply:
        rt, op = self._halted(operation_id)
        if op.state is not OpState.HALTED:
            raise Refused("not_halted", f"operation {op.id} is {op.state}: only a halted runbook can be aborted")
        ctx = self.ctx
        now = ctx.clock.now()
        op.advance(OpEvent.ABORT)
        op.finished_at = now
        op.message = f"{op.kind} of {op.service} aborted by {actor}: {reason}"
        await ctx.journal_or_fail().save_operation(op)
        rt.operation = None
        await ctx.record("operator", op.message, service=rt.name, actor=actor, at=now,
                         data={"action": "abort", "operation": op.id, "reason": reason})
        await self.coordinator.sync_dns(rt, now)  # believe whatever the interrupted runbook left in DNS
        return Reply({"operation": op.id, "state": str(op.state)})

"""The coordinator: from this instance's snapshots and its peers' verdicts to decisions and operations.

Each tick, per service: build this voter's :class:`~engine.core.verdict.ServiceVerdict`, adopt a newer
epoch a peer reports (someone else moved the service), tally the votes, ask
:func:`~engine.core.policy.decide_cluster`, record the decision when it changes, and, when this
instance is the executor, start the failover operation (one in flight per service). Then the
verdicts go to every peer. On start, operations the journal shows as running are resumed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from actions.dns.drift import consistent_site
from actions.dns.errors import DnsConfigError, DnsError
from actions.dns.provider import build_provider
from engine.config.base import format_duration
from engine.core.claims import refusal_sentence
from engine.core.decide import ServiceState, Snapshot
from engine.core.operations import Operation, OpEvent, OpState
from engine.core.policy import ClusterDecision, decide_cluster
from engine.core.ports import Refused
from engine.core.quorum import tally
from engine.core.steps import RERUN_ON_RESUME, StepSpec
from engine.core.verdict import ServiceVerdict
from engine.runtime.brakes import Brakes, hms
from engine.runtime.claims import ClaimDesk
from engine.runtime.context import RuntimeContext
from engine.runtime.dns_drift import DriftWatch
from engine.runtime.evidence import decision_context
from engine.runtime.lease_watch import LeaseWatch
from engine.runtime.metrics import STATE_VALUE
from engine.runtime.peering import Peering
from engine.runtime.runner import RunbookRunner, StepFn
from engine.runtime.service import ServiceRuntime
from engine.runtime.shared_operator import SharedOperatorState

log = structlog.get_logger("engine.coordinator")

StepsFactory = Callable[[ServiceRuntime], tuple[Sequence[StepSpec], Mapping[str, StepFn]]]
ServiceHook = Callable[[ServiceRuntime, float], Awaitable[None]]


class Coordinator:
    def __init__(self, ctx: RuntimeContext, peering: Peering, brakes: Brakes, lease: LeaseWatch,
                 steps_factory: StepsFactory, *, announced_drill: Callable[[str], str | None] = lambda _s: None,
                 shared: SharedOperatorState | None = None) -> None:
        self.ctx = ctx
        self.peering = peering
        self.brakes = brakes
        self.lease = lease
        self.steps_factory = steps_factory
        self.announced_drill = announced_drill
        self.before_decide: list[ServiceHook] = []  # e.g. a scheduled switchover that is due (engine.runtime.moves)
        self._op_tasks: set[asyncio.Task[Any]] = set()
        self._timed: set[tuple[object, ...]] = set()  # step attempts already in the duration histogram
        self.shared = shared  # peer mode: cluster-wide operator state (engine.runtime.shared_operator)
        self.drift = DriftWatch(ctx)  # DNS drift: compared at every sync_dns (engine.runtime.dns_drift)
        self.claims: ClaimDesk | None = None  # one move per service across engines (engine.runtime.claims)

    @property
    def quorum_ok(self) -> bool | None:
        return self.ctx.quorum_ok

    # -- per tick --------------------------------------------------------------------------------
    async def tick(self, now: float) -> None:
        ctx = self.ctx
        mono = ctx.clock.monotonic()
        own_id = ctx.config.instance.id
        verdicts: dict[str, ServiceVerdict] = {}
        await self._quorum_events(now)  # first: the lease must not depend on every service's tick succeeding
        for rt in ctx.services.values():
            snapshot = rt.snapshot(now)
            await self._adopt_newer_epoch(rt, now)
            await self._adopt_operator_state(rt, now)
            own = ServiceVerdict(
                active=rt.state.active, epoch=rt.state.epoch,
                sites={site: view.health.value for site, view in snapshot.sites.items()},
                lag_s=rt.lag_s, shared_down=rt.shared_down(), paused=rt.state.paused,
                drill=self.announced_drill(rt.name),
                runbook=self._announced_runbook(rt),
                halted=rt.operation.id if rt.operation is not None and rt.operation.state is OpState.HALTED
                else None,
                primary_writable=await self.lease.local_primary(rt, now),  # False: the write lease given up
                operator=None if self.shared is None else self.shared.stamps(rt.name))
            verdicts[rt.name] = own
            votes = tally(self.peering.voters, own_id, own, self.peering.received_for(rt.name), mono)
            await self._pause_expiry(rt, now)
            for hook in self.before_decide:
                await hook(rt, now)
            ctx.metrics.self_fenced.labels(rt.name).set(1 if rt.self_fenced else 0)
            ctx.metrics.observe_operation(rt.name, rt.operation, now)
            decision = decide_cluster(
                rt.state, rt.name, rt.config.active, votes, own_id, self.peering.engines, now,
                rt.config.policy, executors=rt.config.policy.executors,
                rpo_applies=rt.config.database is not None, halted=self._halted(rt),
                sync=rt.database.sync.evidence() if rt.database is not None else None,
                dns_drift=rt.unacknowledged_drift())
            if decision.acting and ctx.config.instance.role == "engine" and rt.operation is None:
                decision = await self.brakes.brake(rt, decision, now)
            await self.note_decision(rt, decision, now, snapshot)
            if decision.acting and ctx.config.instance.role == "engine" and rt.operation is None:
                try:  # the decision sentence is the automatic operation's reason (an operator's is typed)
                    await self.start_operation(rt, decision, now, trigger="auto", reason=decision.message)
                except Refused as exc:  # another starter claimed the service first: its runbook goes on
                    log.info("automatic move not started", service=rt.name, reason=exc.refusal.detail)
        self._send(verdicts)

    @staticmethod
    def _announced_runbook(rt: ServiceRuntime) -> str | None:
        """The operation this engine runs, announced in its verdict, until the service's state shows its end: a
        done one is still announced until its epoch is adopted here, so no peer sees the databases moved by it
        without either the runbook or the new epoch (the stray-primary watch relies on that)."""
        op = rt.operation
        if op is None:
            return None
        finishing = op.state is OpState.DONE and rt.state.epoch < op.epoch_to
        return op.id if op.state is OpState.RUNNING or finishing else None

    @staticmethod
    def _halted(rt: ServiceRuntime) -> tuple[str, str] | None:
        """(id, message) of this service's operation when it is halted here: the decision must say so."""
        op = rt.operation
        return (op.id, op.message or f"{op.kind} halted") if op is not None and op.state is OpState.HALTED else None

    async def note_decision(self, rt: ServiceRuntime, decision: ClusterDecision, now: float,
                            snapshot: Snapshot) -> None:
        """Keep the latest decision; journal it when its substance changes."""
        ctx = self.ctx
        for site, view in snapshot.sites.items():
            ctx.metrics.site_state.labels(rt.name, site).set(STATE_VALUE[str(view.health)])
        key = (decision.verdict, decision.target, decision.executor, rt.state.paused, rt.state.epoch,
               decision.reasons, tuple((s, v.health) for s, v in snapshot.sites.items()))
        rt.decision = decision
        if key == rt.decision_key:
            return
        rt.decision_key = key
        rt.decided_at = now
        ctx.metrics.decisions.labels(rt.name, str(decision.verdict)).inc()
        (log.warning if str(decision.verdict) == "page" else log.info)(
            "decision", service=rt.name, verdict=str(decision.verdict), message=decision.message)
        await ctx.record("decision", decision.message, service=rt.name, at=now,
                         data={"verdict": str(decision.verdict), "target": decision.target,
                               "executor": decision.executor, "reasons": list(decision.reasons)})
        if str(decision.verdict) == "page":
            await ctx.notify("page", decision.message, rt.name, {"reasons": list(decision.reasons)})

    async def _pause_expiry(self, rt: ServiceRuntime, now: float) -> None:
        until = rt.paused_until
        if not rt.state.paused or until is None or now < until:
            return
        ctx = self.ctx
        rt.paused_until = None
        await ctx.journal_or_fail().put_state(rt.name, "paused_until", None, at=now)
        await ctx.set_state(rt, ServiceState(rt.state.active, rt.state.epoch, False, rt.state.last_move_at), now,
                               f"{rt.name} resumed: the pause expired at {hms(until)} UTC")
        await ctx.notify("state", f"{rt.name} resumed: the pause expired", rt.name, {"until": until})

    async def _adopt_operator_state(self, rt: ServiceRuntime, now: float) -> None:
        """Peer mode: take the operator state (pause, breaker, arm, drift acknowledgement) peers changed."""
        if self.shared is not None:
            await self.shared.adopt(rt, now)  # applied before this tick decides

    def _send(self, verdicts: dict[str, ServiceVerdict]) -> None:
        """Every peer gets this tick's verdict unless its previous one is still on the way (see dispatch)."""
        self.peering.dispatch(self.peering.make_verdict(verdicts))

    async def _adopt_newer_epoch(self, rt: ServiceRuntime, now: float) -> None:
        """A fresh peer verdict with a higher epoch means the service moved: believe it."""
        best: tuple[int, str, str] | None = None
        for peer_id, got in self.peering.received_for(rt.name).items():
            if got is None:
                continue
            if got.view.epoch > rt.state.epoch and (best is None or got.view.epoch > best[0]):
                best = (got.view.epoch, got.view.active, peer_id)
        if best is None or (rt.operation is not None and rt.operation.state is OpState.RUNNING):
            return
        epoch, active, peer_id = best
        if active not in rt.config.sites:
            return
        # a move we learn of starts the cool-down like one we made (not the first epoch a fresh voter learns)
        moved_at = now if rt.state.epoch > 0 else rt.state.last_move_at
        await self.ctx.set_state(rt, ServiceState(active, epoch, rt.state.paused, moved_at), now,
                                    f"{rt.name} is active in {active} at epoch {epoch} (reported by {peer_id})")

    async def _quorum_events(self, now: float) -> None:
        ctx = self.ctx
        voters = self.peering.voters
        if len(voters) < 2:
            return
        mono = ctx.clock.monotonic()
        fresh = 1 + len(self.peering.fresh_ids())
        majority = len(voters) // 2 + 1
        for peer in self.peering.peers.values():
            heard = peer.effective_heard()
            if heard is not None:
                ctx.metrics.peer_age.labels(peer.id).set(mono - heard)
        ok = fresh >= majority
        ctx.metrics.quorum.set(1 if ok else 0)
        if ok != ctx.quorum_ok:
            if ctx.quorum_ok is not None or not ok:
                message = (f"quorum {'regained' if ok else 'lost'}: {fresh} of {len(voters)} voters reachable "
                           f"(need {majority})")
                await ctx.record("quorum", message, at=now, data={"fresh": fresh, "voters": len(voters)})
                await ctx.notify("quorum", message, None, {"fresh": fresh, "voters": len(voters)})
            ctx.quorum_ok = ok
        await self.lease.check(now, mono, len(voters), majority)

    async def sync_dns(self, rt: ServiceRuntime, now: float) -> None:
        """Believe the epoch written beside the DNS records when the read is a consistent move (it is the truth
        about who moved last); then compare the records with the expected state (DNS drift, DriftWatch)."""
        if rt.config.dns is None or (rt.operation is not None and rt.operation.state is OpState.RUNNING):
            return
        provider = build_provider(rt.config.dns, rt.name)
        try:
            state = await provider.read()
        except DnsConfigError as exc:  # e.g. an epoch record someone rewrote into something unreadable
            log.warning("dns read not understood", service=rt.name, error=str(exc))
            if not self._peer_moving(rt):
                await self.drift.unreadable(rt, str(exc), now)
            return
        except DnsError as exc:
            log.warning("dns read failed", service=rt.name, error=str(exc))
            return
        finally:
            await provider.aclose()
        number = state.epoch.number
        rt.dns_state = f"{state.describe()} (read {time.strftime('%H:%M:%S', time.gmtime(now))} UTC)"
        site = consistent_site(state, {rt.config.dns.fqdn(r.name): r for r in rt.config.dns.records})
        if number > rt.state.epoch and site is not None and site in rt.config.sites:
            # a move we learn of starts the cool-down like one we made (not the first read after a fresh start)
            moved_at = now if rt.state.epoch > 0 else rt.state.last_move_at
            await self.ctx.set_state(rt, ServiceState(site, number, rt.state.paused, moved_at), now,
                                        f"{rt.name} is active in {site} at epoch {number} (read from DNS)")
        elif number < rt.state.epoch:
            log.warning("dns epoch behind the journal", service=rt.name, dns=number, journal=rt.state.epoch)
        if not self._peer_moving(rt):  # a peer's runbook changes TTLs and records on its way: not a drift
            await self.drift.check(rt, state, now)

    def _peer_moving(self, rt: ServiceRuntime) -> bool:
        """A peer announces a runbook or a drill for ``rt`` (its verdict's ``runbook``/``drill``)."""
        return any(got is not None and (got.view.runbook or got.view.drill)
                   for got in self.peering.received_for(rt.name).values())

    async def dns_sync_loop(self) -> None:
        """Read every service's records every ``dns.check_interval`` (each service on its own cadence)."""
        due: dict[str, float] = {}
        while True:
            mono = self.ctx.clock.monotonic()
            for rt in self.ctx.services.values():
                if rt.config.dns is None or due.get(rt.name, 0.0) > mono:
                    continue
                every = rt.config.dns.check_interval
                due[rt.name] = mono + every
                try:
                    async with asyncio.timeout(every):
                        await self.sync_dns(rt, self.ctx.clock.now())
                except TimeoutError:
                    log.warning("dns sync timed out", service=rt.name)
                except Exception:  # the loop must keep checking; the failure is logged
                    log.exception("dns sync failed", service=rt.name)
            nearest = min(due.values(), default=mono + 30.0)
            await asyncio.sleep(max(0.05, nearest - self.ctx.clock.monotonic()))

    # -- operations ------------------------------------------------------------------------------
    async def start_operation(self, rt: ServiceRuntime, decision: ClusterDecision, now: float, *, trigger: str,
                              actor: str | None = None, reason: str | None = None,
                              kind: str = "failover") -> Operation:
        """Claim the service for one operation and start its runbook; :class:`Refused` (naming the operation that
        holds the claim) when another one is open: one atomic claim in the journal serves the API, the scheduler,
        drills and automatic decisions alike (engine.core.operations: requested -> claimed -> running)."""
        assert decision.target is not None
        self.ctx.require_writable_journal()
        await self._adopt_newer_epoch(rt, now)  # never start from an epoch a peer already moved past
        if decision.target == rt.state.active:
            raise Refused("already_active", f"{rt.name} is already active in {decision.target}")
        epoch_to = rt.state.epoch + 1
        evidence = {"decision": decision.message, **decision.evidence}
        if "observations" not in evidence:  # manual moves add it when they decide; automatic ones here
            evidence.update(decision_context(self.ctx, self.peering, rt, decision.target))
        op = Operation(f"{rt.name}-e{epoch_to}-{secrets.token_hex(3)}", rt.name, kind, rt.state.active,
                       decision.target, rt.state.epoch, epoch_to, trigger, state=OpState.REQUESTED, created_at=now,
                       actor=actor, reason=reason, evidence=evidence)
        op.advance(OpEvent.CLAIM)
        foreign = self.claims.foreign(rt.name) if self.claims is not None else None
        if foreign is not None:
            raise Refused("operation_in_progress", refusal_sentence(rt.name, str(foreign["engine"]), foreign,
                                                                    "granted to it"), operation=foreign["id"])
        winner = await self.ctx.journal_or_fail().claim_operation(op)
        if winner is not None:
            raise Refused("operation_in_progress", f"{rt.name} is claimed by operation {winner.get('id')} "
                          f"({winner.get('kind')} to {winner.get('target')}, {winner.get('state')}): one operation "
                          "per service", operation=winner.get("id"))
        if self.claims is not None:
            refused = await self.claims.claim(op, rt.config.policy.runbook_deadline)
            if refused is not None:
                await self._lost_claim(rt, op, *refused)
        message = (f"{kind} of {rt.name} {op.source} -> {op.target} started "
                   f"(epoch {op.epoch_from} -> {op.epoch_to}, {trigger}): {decision.message}")
        await self.ctx.record("runbook", message, service=rt.name, at=now, actor=actor,
                                 data={"operation": op.id})
        await self.ctx.notify("decision", message, rt.name, {"operation": op.id, "evidence": op.evidence})
        self._launch(rt, op)
        return op

    async def _lost_claim(self, rt: ServiceRuntime, op: Operation, engine: str, winner: dict[str, Any] | None,
                          reason: str) -> None:
        """A peer engine's operation holds the service: ours stands down before its first step (journaled), 409."""
        ctx = self.ctx
        detail = refusal_sentence(rt.name, engine, winner, reason)
        op.advance(OpEvent.STAND_DOWN)
        op.finished_at = ctx.clock.now()
        op.message = f"stood down before its first step: {detail}"
        await ctx.journal_or_fail().save_operation(op)
        await ctx.record("runbook", f"{op.kind} of {rt.name} ({op.id}) {op.message}", service=rt.name,
                         data={"operation": op.id, "winner": winner})
        raise Refused("operation_in_progress", detail, operation=(winner or {}).get("id"))

    def relaunch(self, rt: ServiceRuntime, op: Operation) -> None:
        """Run an operation again from its first unfinished step (an operator's retry)."""
        self._launch(rt, op)

    def _launch(self, rt: ServiceRuntime, op: Operation) -> None:
        rt.operation = op
        task = asyncio.create_task(self._run(rt, op), name=f"operation {op.id}")
        self._op_tasks.add(task)
        task.add_done_callback(self._op_tasks.discard)

    async def resume_open(self) -> None:
        """Continue every operation the journal shows as running (after a crash or restart); put halted
        ones back in place, so they keep blocking new runbooks until an operator retries or aborts them."""
        ctx = self.ctx
        for data in ctx.journal_or_fail().operations(state=str(OpState.HALTED), limit=100):
            rt = ctx.services.get(data["service"])
            if rt is not None and rt.operation is None:
                rt.operation = Operation.from_dict(data)
        for data in ctx.journal_or_fail().operations(state=str(OpState.RUNNING), limit=100):
            rt = ctx.services.get(data["service"])
            if rt is None:
                continue
            op = Operation.from_dict(data)
            await ctx.record("runbook", f"resuming {op.kind} of {op.service} ({op.id}) after a restart",
                                service=op.service, data={"operation": op.id})
            self._launch(rt, op)

    async def _run(self, rt: ServiceRuntime, op: Operation) -> None:
        ctx = self.ctx
        specs, steps = self.steps_factory(rt)

        async def on_event(o: Operation, kind: str, message: str) -> None:
            for step, rec in o.steps.items():
                mark = (o.id, step, rec.get("attempts"), str(rec.get("state")))
                if rec.get("duration_s") is not None and mark not in self._timed:
                    self._timed.add(mark)
                    ctx.metrics.observe_step(o.service, o.kind, step, rec)
            await ctx.record(kind, message, service=o.service, data={"operation": o.id})
            await ctx.notify(kind, message, o.service, {"operation": o.id})

        runner = RunbookRunner(ctx.journal_or_fail(), specs, steps, rerun_on_resume=RERUN_ON_RESUME,
                               clock=ctx.clock, on_event=on_event)
        deadline = rt.config.policy.runbook_deadline
        # counted from the operation's start or an operator's retry (a resume after a restart does not get a
        # fresh deadline), at least a second so a resumed runbook can record where it is
        started = float(op.evidence.get("deadline_from") or op.created_at)
        budget = max(1.0, deadline - (ctx.clock.now() - started))
        try:
            async with asyncio.timeout(budget):
                await runner.run(op)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            await self._deadline_passed(rt, op, deadline)
            return
        except Exception:
            log.exception("operation crashed", operation=op.id)
            return
        now = ctx.clock.now()
        ctx.metrics.operation_finished(op)
        if self.claims is not None:
            await self.claims.release(op)
        if op.state is OpState.DONE:
            await ctx.set_state(rt, ServiceState(op.target, op.epoch_to, rt.state.paused, now), now,
                                   f"{op.service} is active in {op.target} at epoch {op.epoch_to} ({op.id})")
            if rt.operation is op:  # an operator may have started the next one meanwhile
                rt.operation = None
            await self.sync_dns(rt, now)  # show what the move left in DNS
        elif op.state is OpState.STOOD_DOWN:
            if rt.operation is op:
                rt.operation = None
            await self.sync_dns(rt, now)  # adopt the winner's epoch at once
        # HALTED: keep it in place: one runbook per service until an operator retries or aborts

    async def _deadline_passed(self, rt: ServiceRuntime, op: Operation, deadline: float) -> None:
        """Halt a runbook that outlived its deadline, and page: it keeps blocking new runbooks."""
        ctx = self.ctx
        now = ctx.clock.now()
        current = op.current_step()
        op.advance(OpEvent.HALT)
        op.finished_at = now
        op.message = (f"{op.kind} of {op.service} halted: runbook deadline {format_duration(deadline)} passed"
                      + (f" during {current}" if current else "") + "; retry or abort it")
        if current is not None:
            op.steps[current].update(state="failed", finished_at=now, error="runbook deadline passed")
        await ctx.journal_or_fail().save_operation(op)
        ctx.metrics.operation_finished(op)
        ctx.metrics.deadline_exceeded.labels(op.service, op.kind).inc()
        await ctx.record("alert", op.message, service=op.service, at=now, data={"operation": op.id})
        await ctx.notify("page", op.message, op.service, {"operation": op.id})

    async def settle(self) -> None:
        """Wait until every runbook this coordinator launched has ended (done, stood down or halted)."""
        while self._op_tasks:
            await asyncio.gather(*list(self._op_tasks), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._op_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)



"""The coordinator: from this instance's snapshots and its peers' verdicts to decisions and operations.

Each tick, per service: build this voter's :class:`~engine.verdict.ServiceVerdict`, adopt a newer
epoch a peer reports (someone else moved the service), tally the votes, ask
:func:`~engine.policy.decide_cluster`, record the decision when it changes, and, when this
instance is the executor, start the failover operation (one in flight per service). Then the
verdicts go to every peer. On start, operations the journal shows as running are resumed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from engine.decide import ServiceState
from engine.policy import ClusterDecision, decide_cluster
from engine.quorum import tally
from engine.runbook import Operation, OpState, RunbookRunner, StepFn, StepSpec
from engine.verdict import ServiceVerdict

if TYPE_CHECKING:
    from engine.daemon import Engine, ServiceRuntime

log = structlog.get_logger("engine.coordinator")

StepsFactory = Callable[["Engine", "ServiceRuntime"], tuple[Sequence[StepSpec], Mapping[str, StepFn]]]


class Coordinator:
    def __init__(self, engine: Engine, steps_factory: StepsFactory) -> None:
        self.engine = engine
        self.steps_factory = steps_factory
        self._broadcast: asyncio.Task[None] | None = None
        self._op_tasks: set[asyncio.Task[Any]] = set()
        self.quorum_ok: bool | None = None
        self._timed: set[tuple[object, ...]] = set()  # step attempts already in the duration histogram
        self._last_hint_sync: dict[str, float] = {}

    # -- per tick --------------------------------------------------------------------------------
    async def tick(self, now: float) -> None:
        engine = self.engine
        mono = engine.clock.monotonic()
        own_id = engine.config.instance.id
        verdicts: dict[str, ServiceVerdict] = {}
        for rt in engine.services.values():
            snapshot = rt.snapshot(now)
            await self._adopt_newer_epoch(rt, now)
            own = ServiceVerdict(
                active=rt.state.active, epoch=rt.state.epoch,
                sites={site: view.health.value for site, view in snapshot.sites.items()},
                lag_s=rt.lag_s, shared_down=rt.shared_down(), paused=rt.state.paused,
                drill=engine.drills.announced(rt.name),
                runbook=rt.operation.id if rt.operation is not None and rt.operation.state is OpState.RUNNING
                else None)
            verdicts[rt.name] = own
            votes = tally(engine.peering.voters, own_id, own, engine.peering.received_for(rt.name), mono)
            decision = decide_cluster(
                rt.state, rt.name, rt.config.active, votes, own_id, engine.peering.engines, now,
                rt.config.policy, executors=rt.config.policy.executors,
                rpo_applies=rt.config.database is not None)
            await engine.note_decision(rt, decision, now, snapshot)
            if decision.acting and engine.config.instance.role == "engine" and rt.operation is None:
                await self.start_operation(rt, decision, now, trigger="auto")
        await self._quorum_events(now)
        self._send(verdicts)

    def _send(self, verdicts: dict[str, ServiceVerdict]) -> None:
        if self._broadcast is not None and not self._broadcast.done():
            return  # the last broadcast is still bounded by its own deadline
        verdict = self.engine.peering.make_verdict(verdicts)
        self._broadcast = asyncio.create_task(self.engine.peering.broadcast(verdict))

    async def _adopt_newer_epoch(self, rt: ServiceRuntime, now: float) -> None:
        """A fresh peer verdict with a higher epoch means the service moved: believe it."""
        best: tuple[int, str, str] | None = None
        for peer_id, got in self.engine.peering.received_for(rt.name).items():
            if got is None:
                continue
            if got.view.epoch > rt.state.epoch and (best is None or got.view.epoch > best[0]):
                best = (got.view.epoch, got.view.active, peer_id)
        if best is None or (rt.operation is not None and rt.operation.state is OpState.RUNNING):
            return
        epoch, active, peer_id = best
        if active not in rt.config.sites:
            return
        await self.engine.set_state(rt, ServiceState(active, epoch, rt.state.paused, now), now,
                                    f"{rt.name} is active in {active} at epoch {epoch} (reported by {peer_id})")

    async def _quorum_events(self, now: float) -> None:
        engine = self.engine
        voters = engine.peering.voters
        if len(voters) < 2:
            return
        mono = engine.clock.monotonic()
        fresh = 1 + sum(1 for p in engine.peering.peers.values()
                        if (heard := p.effective_heard()) is not None and p.verdict is not None
                        and mono - heard <= 2 * min(p.verdict.interval, 4 * engine.config.instance.tick))
        majority = len(voters) // 2 + 1
        for peer in engine.peering.peers.values():
            heard = peer.effective_heard()
            if heard is not None:
                engine.metrics.peer_age.labels(peer.id).set(mono - heard)
        ok = fresh >= majority
        engine.metrics.quorum.set(1 if ok else 0)
        if ok != self.quorum_ok:
            if self.quorum_ok is not None or not ok:
                message = (f"quorum {'regained' if ok else 'lost'}: {fresh} of {len(voters)} voters reachable "
                           f"(need {majority})")
                await engine.record("quorum", message, at=now, data={"fresh": fresh, "voters": len(voters)})
                await engine.notify("quorum", message, None, {"fresh": fresh, "voters": len(voters)})
            self.quorum_ok = ok

    async def sync_dns(self, rt: ServiceRuntime, now: float) -> None:
        """Believe the epoch written beside the DNS records: it is the truth about who moved last."""
        if rt.config.dns is None or (rt.operation is not None and rt.operation.state is OpState.RUNNING):
            return
        from actions.dns.errors import DnsError
        from actions.dns.provider import build_provider

        provider = build_provider(rt.config.dns, rt.name)
        try:
            state = await provider.read()
        except DnsError as exc:
            log.warning("dns read failed", service=rt.name, error=str(exc))
            return
        finally:
            await provider.aclose()
        number, site = state.epoch.number, state.site
        rt.dns_state = f"{state.describe()} (read {time.strftime('%H:%M:%S', time.gmtime(now))} UTC)"
        if number > rt.state.epoch and site in rt.config.sites:
            # a move we learn of starts the cool-down like one we made (not the first read after a fresh start)
            moved_at = now if rt.state.epoch > 0 else rt.state.last_move_at
            await self.engine.set_state(rt, ServiceState(site, number, rt.state.paused, moved_at), now,
                                        f"{rt.name} is active in {site} at epoch {number} (read from DNS)")
        elif number < rt.state.epoch:
            log.warning("dns epoch behind the journal", service=rt.name, dns=number, journal=rt.state.epoch)

    async def dns_sync_loop(self, every: float = 30.0) -> None:
        while True:
            for rt in self.engine.services.values():
                try:
                    async with asyncio.timeout(every):
                        await self.sync_dns(rt, self.engine.clock.now())
                except TimeoutError:
                    log.warning("dns sync timed out", service=rt.name)
            await asyncio.sleep(every)

    # -- operations ------------------------------------------------------------------------------
    async def start_operation(self, rt: ServiceRuntime, decision: ClusterDecision, now: float, *, trigger: str,
                              actor: str | None = None, reason: str | None = None,
                              kind: str = "failover") -> Operation:
        assert decision.target is not None
        epoch_to = rt.state.epoch + 1
        op = Operation(f"{rt.name}-e{epoch_to}-{secrets.token_hex(3)}", rt.name, kind, rt.state.active,
                       decision.target, rt.state.epoch, epoch_to, trigger, created_at=now, actor=actor,
                       reason=reason, evidence={"decision": decision.message, **decision.evidence})
        await self.engine.journal_or_fail().save_operation(op)
        message = (f"{kind} of {rt.name} {op.source} -> {op.target} started "
                   f"(epoch {op.epoch_from} -> {op.epoch_to}, {trigger}): {decision.message}")
        await self.engine.record("runbook", message, service=rt.name, at=now, actor=actor,
                                 data={"operation": op.id})
        await self.engine.notify("decision", message, rt.name, {"operation": op.id, "evidence": op.evidence})
        self._launch(rt, op)
        return op

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
        engine = self.engine
        for data in engine.journal_or_fail().operations(state=str(OpState.HALTED), limit=100):
            rt = engine.services.get(data["service"])
            if rt is not None and rt.operation is None:
                rt.operation = Operation.from_dict(data)
        for data in engine.journal_or_fail().operations(state=str(OpState.RUNNING), limit=100):
            rt = engine.services.get(data["service"])
            if rt is None:
                continue
            op = Operation.from_dict(data)
            await engine.record("runbook", f"resuming {op.kind} of {op.service} ({op.id}) after a restart",
                                service=op.service, data={"operation": op.id})
            self._launch(rt, op)

    async def _run(self, rt: ServiceRuntime, op: Operation) -> None:
        engine = self.engine
        specs, steps = self.steps_factory(engine, rt)

        async def on_event(o: Operation, kind: str, message: str) -> None:
            for step, rec in o.steps.items():
                mark = (o.id, step, rec.get("attempts"), str(rec.get("state")))
                if rec.get("duration_s") is not None and mark not in self._timed:
                    self._timed.add(mark)
                    engine.metrics.step_seconds.labels(o.service, o.kind, step, str(rec["state"])).observe(
                        float(rec["duration_s"]))
            await engine.record(kind, message, service=o.service, data={"operation": o.id})
            await engine.notify(kind, message, o.service, {"operation": o.id})

        from engine.failover import RERUN_ON_RESUME

        runner = RunbookRunner(engine.journal_or_fail(), specs, steps, rerun_on_resume=RERUN_ON_RESUME,
                               clock=engine.clock, on_event=on_event)
        try:
            await runner.run(op)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("operation crashed", operation=op.id)
            return
        now = engine.clock.now()
        engine.metrics.failovers.labels(op.service, str(op.state)).inc()
        if op.state is OpState.DONE:
            await engine.set_state(rt, ServiceState(op.target, op.epoch_to, rt.state.paused, now), now,
                                   f"{op.service} is active in {op.target} at epoch {op.epoch_to} ({op.id})")
            rt.operation = None
            await self.sync_dns(rt, now)  # show what the move left in DNS
        elif op.state is OpState.STOOD_DOWN:
            rt.operation = None
            await self.sync_dns(rt, now)  # adopt the winner's epoch at once
        # HALTED: keep it in place: one runbook per service until an operator retries or aborts

    async def close(self) -> None:
        tasks = [*self._op_tasks, *([self._broadcast] if self._broadcast else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)



"""The coordinator: from this instance's snapshots and its peers' verdicts to decisions and operations.

Each tick, per service: build this voter's :class:`~engine.verdict.ServiceVerdict`, adopt a newer
epoch a peer reports (someone else moved the service), tally the votes, ask
:func:`~engine.policy.decide_cluster`, record the decision when it changes, and, when this
instance is the executor, start the failover operation (one in flight per service). Then the
verdicts go to every peer. On start, operations the journal shows as running are resumed.
"""

from __future__ import annotations

import asyncio
import json
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
GLOBAL = "*"  # the journal's service name for engine-wide state (the engine-wide circuit breaker)
SELF_FENCE_RETRY = 30.0  # seconds between attempts when fencing our own database failed


def _hms(at: Any) -> str:
    return "?" if not isinstance(at, int | float) else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))

StepsFactory = Callable[["Engine", "ServiceRuntime"], tuple[Sequence[StepSpec], Mapping[str, StepFn]]]


class Coordinator:
    def __init__(self, engine: Engine, steps_factory: StepsFactory) -> None:
        self.engine = engine
        self.steps_factory = steps_factory
        self._op_tasks: set[asyncio.Task[Any]] = set()
        self.quorum_ok: bool | None = None
        self._timed: set[tuple[object, ...]] = set()  # step attempts already in the duration histogram
        self._last_hint_sync: dict[str, float] = {}
        self.grant_lost_at: float | None = None  # monotonic: when this engine lost a majority of grants
        self._self_fencing: set[str] = set()
        self._ever_granted = False
        self._self_fence_retry_at: dict[str, float] = {}  # monotonic: when a failed self-fence is tried again
        self.started_mono: float | None = None

    # -- per tick --------------------------------------------------------------------------------
    async def tick(self, now: float) -> None:
        engine = self.engine
        mono = engine.clock.monotonic()
        own_id = engine.config.instance.id
        verdicts: dict[str, ServiceVerdict] = {}
        await self._quorum_events(now)  # first: the lease must not depend on every service's tick succeeding
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
            await self._pause_expiry(rt, now)
            await self._scheduled_switchover(rt, now)
            engine.metrics.self_fenced.labels(rt.name).set(1 if rt.self_fenced else 0)
            engine.metrics.observe_operation(rt.name, rt.operation, now)
            decision = decide_cluster(
                rt.state, rt.name, rt.config.active, votes, own_id, engine.peering.engines, now,
                rt.config.policy, executors=rt.config.policy.executors,
                rpo_applies=rt.config.database is not None)
            if decision.acting and engine.config.instance.role == "engine" and rt.operation is None:
                decision = await self._brake(rt, decision, now)
            await engine.note_decision(rt, decision, now, snapshot)
            if decision.acting and engine.config.instance.role == "engine" and rt.operation is None:
                await self.start_operation(rt, decision, now, trigger="auto")
        self._send(verdicts)

    # -- brakes ------------------------------------------------------------------------------------
    def breaker(self, rt: ServiceRuntime, now: float) -> dict[str, Any]:
        """The circuit breaker of ``rt`` (and the engine-wide one): open or armed, with the counts."""
        journal = self.engine.journal_or_fail()
        policy = rt.config.policy
        brakes = self.engine.config.brakes
        own = journal.get_state(rt.name, "breaker") or {}
        glob = journal.get_state(GLOBAL, "breaker") or {}
        armed_at = float(own.get("armed_at") or 0.0)
        # read on every status rebuild: counted in the journal, not by parsing operation bodies
        recent = journal.count_operations(service=rt.name, trigger="auto",
                                          since=max(now - policy.breaker_window, armed_at))
        global_armed = float(glob.get("armed_at") or 0.0)
        everywhere = journal.count_operations(trigger="auto", since=max(now - brakes.window, global_armed))
        open_ = own if own.get("open") else glob if glob.get("open") else None
        return {"open": open_ is not None, "since": None if open_ is None else open_.get("since"),
                "reason": None if open_ is None else open_.get("reason"),
                "auto_failovers_in_window": recent, "limit": policy.max_auto_failovers,
                "window_s": policy.breaker_window, "engine_auto_failovers_in_window": everywhere,
                "engine_limit": brakes.max_auto_failovers, "armed_at": own.get("armed_at")}

    async def _brake(self, rt: ServiceRuntime, decision: ClusterDecision, now: float) -> ClusterDecision:
        """An automatic move the circuit breaker refuses becomes a page; the first refusal opens it."""
        from engine.config.base import format_duration
        from engine.decide import Verdict

        state = self.breaker(rt, now)
        reason = None
        if state["open"]:
            reason = f"circuit breaker open since {_hms(state['since'])} UTC ({state['reason']})"
        elif state["auto_failovers_in_window"] >= state["limit"]:
            reason = (f"{state['auto_failovers_in_window']} automatic failover(s) of {rt.name} in the last "
                      f"{format_duration(state['window_s'])} (limit {state['limit']})")
            await self._trip(rt.name, reason, now)
        elif state["engine_auto_failovers_in_window"] >= state["engine_limit"]:
            reason = (f"{state['engine_auto_failovers_in_window']} automatic failovers on this engine in the last "
                      f"{format_duration(self.engine.config.brakes.window)} (limit {state['engine_limit']})")
            await self._trip(GLOBAL, reason, now)
        if reason is None:
            return decision
        reason += f"; automatic action is disarmed until an operator re-arms it (POST /v1/services/{rt.name}/arm)"
        message = decision.message.replace("; this instance acts", "")
        return ClusterDecision(Verdict.PAGE, f"paging: {message}; not moving: {reason}", decision.target, None,
                               False, (*decision.reasons, reason), decision.evidence)

    async def _trip(self, service: str, reason: str, now: float) -> None:
        engine = self.engine
        await engine.journal_or_fail().put_state(service, "breaker", {"open": True, "since": now, "reason": reason},
                                                 at=now)
        name = None if service == GLOBAL else service
        for rt in engine.services.values():
            if name is None or rt.name == name:
                engine.metrics.breaker_open.labels(rt.name).set(1)
        message = f"circuit breaker opened{' for ' + service if name else ' for every service'}: {reason}"
        await engine.record("alert", message, service=name, at=now, data={"breaker": "open", "reason": reason})
        await engine.notify("page", message, name, {"breaker": "open", "reason": reason})

    async def arm(self, rt: ServiceRuntime, now: float) -> None:
        """Close the breaker of ``rt`` and the engine-wide one; only moves after ``now`` count again."""
        journal = self.engine.journal_or_fail()
        await journal.put_state(rt.name, "breaker", {"open": False, "armed_at": now}, at=now)
        self.engine.metrics.breaker_open.labels(rt.name).set(0)
        glob = journal.get_state(GLOBAL, "breaker") or {}
        if glob.get("open"):
            await journal.put_state(GLOBAL, "breaker", {"open": False, "armed_at": now}, at=now)

    async def _pause_expiry(self, rt: ServiceRuntime, now: float) -> None:
        until = rt.paused_until
        if not rt.state.paused or until is None or now < until:
            return
        engine = self.engine
        rt.paused_until = None
        await engine.journal_or_fail().put_state(rt.name, "paused_until", None, at=now)
        await engine.set_state(rt, ServiceState(rt.state.active, rt.state.epoch, False, rt.state.last_move_at), now,
                               f"{rt.name} resumed: the pause expired at {_hms(until)} UTC")
        await engine.notify("state", f"{rt.name} resumed: the pause expired", rt.name, {"until": until})

    async def _scheduled_switchover(self, rt: ServiceRuntime, now: float) -> None:
        engine = self.engine
        if engine.config.instance.role != "engine":
            return
        journal = engine.journal_or_fail()
        plan = journal.get_state(rt.name, "scheduled_switchover")
        if not plan or now < plan["at"]:
            return
        await journal.put_state(rt.name, "scheduled_switchover", None, at=now)
        from engine.operator import start_switchover

        answer = await start_switchover(engine, rt, plan["target"], actor=plan["actor"], reason=plan["reason"],
                                        trigger="scheduled")
        if answer.status >= 400:
            body = json.loads(answer.text or "{}")
            message = f"the switchover of {rt.name} scheduled for now did not start: {body.get('detail')}"
            await engine.record("alert", message, service=rt.name, at=now, data={"plan": plan, "refusal": body})
            await engine.notify("page", message, rt.name, {"plan": plan})

    def _send(self, verdicts: dict[str, ServiceVerdict]) -> None:
        """Every peer gets this tick's verdict unless its previous one is still on the way (see dispatch)."""
        self.engine.peering.dispatch(self.engine.peering.make_verdict(verdicts))

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
        # a move we learn of starts the cool-down like one we made (not the first epoch a fresh voter learns)
        moved_at = now if rt.state.epoch > 0 else rt.state.last_move_at
        await self.engine.set_state(rt, ServiceState(active, epoch, rt.state.paused, moved_at), now,
                                    f"{rt.name} is active in {active} at epoch {epoch} (reported by {peer_id})")

    async def _quorum_events(self, now: float) -> None:
        engine = self.engine
        voters = engine.peering.voters
        if len(voters) < 2:
            return
        mono = engine.clock.monotonic()
        fresh = 1 + len(engine.peering.fresh_ids())
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
        await self._lease(now, mono, len(voters), majority)

    # -- the self-fencing lease (engine.lease) ---------------------------------------------------
    async def _lease(self, now: float, mono: float, voters: int, majority: int) -> None:
        """Count the grants (fresh voters that hear us); cut off from a majority for ``self_fence_after``,
        an engine in the active site fences its own database. Only with 3 or more voters: with two,
        the other side never moves by itself, so there is nothing to fence against."""
        engine = self.engine
        if voters < 3 or engine.config.instance.role != "engine":
            return
        started = self.started_mono if self.started_mono is not None else mono
        if mono - started < 3 * engine.config.instance.tick + 1.0:
            return  # the peers' first verdicts (and their grants) are still on the way
        granted = 1 + len(engine.peering.granted_by())
        engine.metrics.lease_granted.set(1 if granted >= majority else 0)
        if granted >= majority:
            self._ever_granted = True
            if self.grant_lost_at is not None:
                message = f"lease regained: {granted} of {voters} voters hear this engine"
                await engine.record("lease", message, at=now, data={"granted": granted})
                await engine.notify("quorum", message, None, {"granted": granted})
            self.grant_lost_at = None
            return
        if self.grant_lost_at is None:
            # never granted since this process started: count from the start (a restart while cut off still fences)
            self.grant_lost_at = started if not self._ever_granted else mono
            message = (f"lease lost: only {granted} of {voters} voters hear this engine (need {majority}); an engine "
                       "in the active site fences its database if this lasts")
            await engine.record("lease", message, at=now, data={"granted": granted})
            await engine.notify("quorum", message, None, {"granted": granted})
        lost_for = mono - self.grant_lost_at
        for rt in engine.services.values():
            lease = engine.config.lease(rt.name)
            if (lease is None or rt.state.active != engine.config.instance.site or rt.self_fenced is not None
                    or lost_for < lease.self_fence_after or rt.name in self._self_fencing
                    or mono < self._self_fence_retry_at.get(rt.name, 0.0)):
                continue
            self._self_fencing.add(rt.name)
            task = asyncio.create_task(self._self_fence(rt, now, granted, voters, lost_for),
                                       name=f"self-fence {rt.name}")
            self._op_tasks.add(task)
            task.add_done_callback(self._op_tasks.discard)

    async def _self_fence(self, rt: ServiceRuntime, now: float, granted: int, voters: int, lost_for: float) -> None:
        from actions.database.fence import fence

        engine = self.engine
        site = engine.config.instance.site
        assert rt.config.database is not None
        try:
            result = await fence(rt.config.database, site)
        finally:
            self._self_fencing.discard(rt.name)
        reason = (f"cut off from the voters for {lost_for:.1f}s (only {granted} of {voters} hear this engine): "
                  f"the other side may promote once the lease has passed")
        data = {"site": site, "epoch": rt.state.epoch, "reason": reason, "result": result.to_dict()}
        failed_before = rt.name in self._self_fence_retry_at
        if result.ok and not result.skipped:
            self._self_fence_retry_at.pop(rt.name, None)
            rt.self_fenced = {"at": engine.clock.now(), "epoch": rt.state.epoch, "reason": reason}
            await engine.journal_or_fail().put_state(rt.name, "self_fenced", rt.self_fenced, at=engine.clock.now())
            message = (f"{rt.name}: self-fenced the database in {site} ({result.sentence}); {reason}. It stays "
                       f"fenced until an operator unfences it (POST /v1/services/{rt.name}/unfence)")
        else:
            self._self_fence_retry_at[rt.name] = engine.clock.monotonic() + SELF_FENCE_RETRY
            message = (f"{rt.name}: self-fencing the database in {site} FAILED: {result.sentence}; {reason}; "
                       f"trying again every {SELF_FENCE_RETRY:g}s")
        await engine.record("fence", message, service=rt.name, data=data)
        if not failed_before:  # one page per streak of failures, not one per attempt
            await engine.notify("page", message, rt.name, data)

    def lease_remaining(self, site: str, lease_wait: float) -> tuple[float, list[str], float | None]:
        """How long before every engine of ``site`` has been silent for ``lease_wait`` (0: now), what was heard
        of each, and (wall clock) when the last of them was last heard. An engine never heard since this
        process started counts from the start."""
        engine = self.engine
        mono = engine.clock.monotonic()
        started = self.started_mono if self.started_mono is not None else mono
        remaining = 0.0
        notes = []
        latest: float | None = None
        for peer_cfg in engine.config.peers:
            if peer_cfg.site != site or peer_cfg.role != "engine":
                continue
            heard = engine.peering.peers[peer_cfg.id].effective_heard()
            since = heard if heard is not None else started
            remaining = max(remaining, lease_wait - (mono - since))
            latest = since if latest is None else max(latest, since)
            notes.append(f"{peer_cfg.id} last heard {mono - since:.1f}s ago"
                         + ("" if heard is not None else " (never since this engine started)"))
        wall = None if latest is None else engine.clock.now() - (mono - latest)
        return max(0.0, remaining), notes, wall

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
        from engine.evidence import decision_context

        evidence = {"decision": decision.message, **decision.evidence}
        if "observations" not in evidence:  # manual moves add it when they decide; automatic ones here
            evidence.update(decision_context(self.engine, rt, decision.target))
        op = Operation(f"{rt.name}-e{epoch_to}-{secrets.token_hex(3)}", rt.name, kind, rt.state.active,
                       decision.target, rt.state.epoch, epoch_to, trigger, created_at=now, actor=actor,
                       reason=reason, evidence=evidence)
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
                    engine.metrics.observe_step(o.service, o.kind, step, rec)
            await engine.record(kind, message, service=o.service, data={"operation": o.id})
            await engine.notify(kind, message, o.service, {"operation": o.id})

        from engine.failover import RERUN_ON_RESUME

        runner = RunbookRunner(engine.journal_or_fail(), specs, steps, rerun_on_resume=RERUN_ON_RESUME,
                               clock=engine.clock, on_event=on_event)
        deadline = rt.config.policy.runbook_deadline
        # counted from the operation's start or an operator's retry (a resume after a restart does not get a
        # fresh deadline), at least a second so a resumed runbook can record where it is
        started = float(op.evidence.get("deadline_from") or op.created_at)
        budget = max(1.0, deadline - (engine.clock.now() - started))
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
        now = engine.clock.now()
        engine.metrics.operation_finished(op)
        if op.state is OpState.DONE:
            await engine.set_state(rt, ServiceState(op.target, op.epoch_to, rt.state.paused, now), now,
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
        from engine.config.base import format_duration

        engine = self.engine
        now = engine.clock.now()
        current = next((name for name, rec in op.steps.items() if str(rec.get("state")) == "started"), None)
        op.state = OpState.HALTED
        op.finished_at = now
        op.message = (f"{op.kind} of {op.service} halted: runbook deadline {format_duration(deadline)} passed"
                      + (f" during {current}" if current else "") + "; retry or abort it")
        if current is not None:
            op.steps[current].update(state="failed", finished_at=now, error="runbook deadline passed")
        await engine.journal_or_fail().save_operation(op)
        engine.metrics.operation_finished(op)
        engine.metrics.deadline_exceeded.labels(op.service, op.kind).inc()
        await engine.record("alert", op.message, service=op.service, at=now, data={"operation": op.id})
        await engine.notify("page", op.message, op.service, {"operation": op.id})

    async def close(self) -> None:
        tasks = list(self._op_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)



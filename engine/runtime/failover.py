"""The failover runbook's steps, bound to the real actions (DNS provider, database, reconciliation).

The step table is :func:`engine.core.steps.failover_plan`; :mod:`engine.runtime.runbooks` binds the two
for the runner. Each step reads the world before it
changes anything, so re-running it after a crash is harmless:

precheck     read DNS: already moved at our epoch by this operation (its id is the token written in
             the epoch record: a resume) goes on; any other epoch means another executor won: stand
             down, even when it moved traffic where we wanted it.
fence        best effort, bounded: old primary read-only, client sessions ended.
promote      standby: the configured subscription disabled (slot detached if the publisher is gone),
             any other subscription still pointing at the old primary disabled, sequences synced,
             writes allowed. Refused (writes stay blocked) when the configured subscription does not
             exist. Idempotent.
shift_dns    compare-and-set from epoch N to N+1; finding N+1 in place already changes nothing.
verify_dns   every authoritative server answers the target, or the step fails naming who lags.
consistency  the new primary's latest replicated commit against the last known primary commit
             point: the data-loss window against the RPO (an alert when breached).
reconcile    counts and checksums against the old primary when it is reachable.
report       phase timings.

Steps for parts a service does not configure (no ``dns:`` or no ``database:``) are recorded as
skipped with that reason: nothing is pretended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from actions.consistency import CommitPoint, check_consistency
from actions.database.fence import fence
from actions.database.promote import promote, publisher_reachable
from actions.dns.errors import DnsAuthError, DnsConflict, DnsError
from actions.dns.provider import build_provider, build_verifier
from actions.reconcile.runner import reconcile
from engine.core.operations import Operation, Outcome, StepFailed, fence_required
from engine.runtime.context import RuntimeContext
from engine.runtime.service import ServiceRuntime

LeaseRemaining = Callable[[str, float], tuple[float, list[str], float | None]]


class FailoverSteps:
    """The failover runbook's step functions for one service (the table: engine.core.steps.failover_plan).
    ``lease_remaining`` tells how long the old site's engines must still stay silent (LeaseWatch)."""

    def __init__(self, ctx: RuntimeContext, rt: ServiceRuntime, lease_remaining: LeaseRemaining) -> None:
        self.ctx = ctx
        self.rt = rt
        self.lease_remaining = lease_remaining

    # -- DNS -------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _provider(self) -> AsyncIterator[Any]:
        """The service's DNS provider, closed after use; its auth errors fail the step for good, other DNS
        errors fail the attempt (retried). A DnsConflict is the caller's to catch inside."""
        assert self.rt.config.dns is not None
        provider = build_provider(self.rt.config.dns, self.rt.name)
        try:
            yield provider
        except DnsAuthError as exc:
            raise StepFailed(str(exc), retry=False) from None
        except DnsError as exc:
            raise StepFailed(str(exc)) from None
        finally:
            await provider.aclose()

    async def _dns_read(self) -> Any:
        async with self._provider() as provider:
            return await provider.read()

    async def _epoch_guard(self, op: Operation) -> Outcome | None:
        """Before touching a database: stand down unless DNS is still at our starting epoch or at ours."""
        if self.rt.config.dns is None:
            return None
        return self._moved_by_another(op, await self._dns_read(), "not touching the databases")

    @staticmethod
    def _moved_by_another(op: Operation, state: Any, consequence: str, *, ours_done: bool = True) -> Outcome | None:
        """None while DNS is at the operation's starting epoch (or, with ``ours_done``, at the epoch this
        operation wrote); else the stand-down."""
        number = state.epoch.number
        if number == op.epoch_from or (ours_done and number == op.epoch_to and state.epoch.op == op.id):
            return None
        return Outcome(f"DNS is at {state.describe()}: another operation moved {op.service}; {consequence}",
                       {"dns": state.describe()}, stand_down=True)

    async def precheck(self, op: Operation) -> Outcome:
        if self.rt.config.dns is None:
            return Outcome.skip("no dns configured for this service: traffic is not moved by the engine")
        state = await self._dns_read()
        number = state.epoch.number
        if number == op.epoch_to and state.site == op.target and state.epoch.op == op.id:
            return Outcome(f"DNS already at {state.describe()} by this operation: resuming",
                           {"dns": state.describe()})
        if number != op.epoch_from:
            return Outcome(f"DNS is at {state.describe()}, not epoch {op.epoch_from}: another executor moved it",
                           {"dns": state.describe(), "epoch": number, "site": state.site}, stand_down=True)
        if state.site != op.source:
            raise StepFailed(f"DNS points to {state.site}, not {op.source}: {state.describe()}", retry=False)
        return Outcome(f"DNS at {state.describe()}", {"dns": state.describe()})

    async def shift_dns(self, op: Operation) -> Outcome:
        if self.rt.config.dns is None:
            return Outcome.skip("no dns configured for this service")
        async with self._provider() as provider:
            try:
                state = await provider.read()
                if state.epoch.number == op.epoch_to and state.site == op.target and state.epoch.op == op.id:
                    return Outcome(f"already shifted by this operation: {state.describe()}",
                                   {"changed": False, "dns": state.describe()})
                if state.epoch.number != op.epoch_from:
                    return Outcome(f"epoch moved to {state.epoch.number} under us: {state.describe()}",
                                   {"changed": False, "dns": state.describe()}, stand_down=True)
                if state.site != op.source:  # changed by someone else since the precheck: never overwrite it
                    raise StepFailed(f"dns_drift: DNS points to {state.site}, not {op.source}, at epoch "
                                     f"{op.epoch_from}: {state.describe()}; not overwriting a foreign change",
                                     retry=False)
                sent_at = self.ctx.clock.now()
                new = await provider.shift(state, op.target, op.epoch_to, op=op.id)
                return Outcome(f"shifted to {new.describe()}", {"changed": True, "dns": new.describe(),
                                                                "sent_at": sent_at})
            except DnsConflict as exc:
                return Outcome(f"lost the race: {exc.current.describe()}",
                               {"changed": False, "dns": exc.current.describe()}, stand_down=True)

    async def verify_dns(self, op: Operation) -> Outcome:
        if self.rt.config.dns is None:
            return Outcome.skip("no dns configured for this service")
        state = await self._dns_read()
        if state.epoch.number != op.epoch_to or state.epoch.op != op.id:
            return Outcome(f"DNS is at {state.describe()}, not this operation's write: another operation moved "
                           f"{op.service}", {"dns": state.describe()}, stand_down=True)
        if state.site != op.target:
            raise StepFailed(f"the zone itself points to {state.site}: {state.describe()}")
        result = await build_verifier(self.rt.config.dns, clock=self.ctx.clock).verify(state)
        data = {"elapsed_s": round(result.elapsed, 3),
                "servers": {c.server.label: c.seconds for c in result.checks}}
        if not result.ok:
            raise StepFailed(result.message, retry=False)
        return Outcome(result.message, data)

    # -- database --------------------------------------------------------------------------------
    async def _guarded(self, op: Operation, action: Any, site: str, *, may_skip: bool = False) -> Outcome:
        """Run a database action on ``site`` behind the epoch guard; a failed action fails the step."""
        db = self.rt.config.database
        assert db is not None
        stale = await self._epoch_guard(op)
        if stale is not None:
            return stale
        result = await action(db, site)
        if not result.ok:
            raise StepFailed(result.sentence)
        return Outcome(result.sentence, result.to_dict(), skipped=may_skip and result.skipped)

    async def fence(self, op: Operation) -> Outcome:
        """Fence the old primary. When that cannot be confirmed: with a self-fencing lease, wait until the
        old site's engines have been silent for the lease (they fenced their database themselves); a move
        that requires the fence fails the step; otherwise the fence was best effort."""
        db = self.rt.config.database
        if db is None:
            return Outcome.skip("no database configured for this service")
        required = fence_required(op)
        if not db.fencing.enabled:
            if required:
                raise StepFailed("this move requires the old primary fenced, and fencing is disabled", retry=False)
            return Outcome.skip("fencing disabled in the config")
        stale = await self._epoch_guard(op)
        if stale is not None:
            return stale
        result = await fence(db, op.source)
        if result.ok and not result.skipped:
            return Outcome(result.sentence, result.to_dict())
        if required:
            raise StepFailed(f"the old primary must be fenced first: {result.sentence}")
        lease = self.rt.lease
        if lease is None:
            if not result.ok:
                raise StepFailed(result.sentence)  # best effort: the runbook goes on
            return Outcome(result.sentence, result.to_dict(), skipped=True)
        if self.ctx.config.instance.site == op.source:
            # this engine is in the old site and holds the lease itself: nobody will fence that database
            raise StepFailed(f"the old primary in {op.source} could not be fenced ({result.sentence}) and this engine, "
                             f"in {op.source} too, holds the lease: no self-fence will happen; fence it by hand, "
                             "then retry")
        return await self._wait_out_lease(op, lease, result)

    async def _wait_out_lease(self, op: Operation, lease: Any, result: Any) -> Outcome:
        """Wait until the old site's engines have been silent for the lease. When one of them is heard again
        meanwhile (the partition healed), the old primary is likely reachable again: try the fence once more."""
        remaining, notes, last_heard = self.lease_remaining(op.source, lease.wait)
        if remaining > 0:
            await self.ctx.record("lease", f"{op.service}: old primary in {op.source} not fenced "
                                     f"({result.sentence}); waiting {remaining:.1f}s for the lease ({lease.wait:g}s "
                                     f"of silence: {'; '.join(notes) or 'no engine there'}) before promoting",
                                     service=op.service, data={"operation": op.id, "remaining_s": remaining})
        waited = 0.0
        while remaining > 0:
            step = min(remaining, 0.5)
            await asyncio.sleep(step)
            waited += step
            before = remaining
            remaining, notes, last_heard = self.lease_remaining(op.source, lease.wait)
            if remaining > before - step + 0.25:  # heard again: the old site is back, fence it from here
                assert self.rt.config.database is not None
                retry = await fence(self.rt.config.database, op.source)
                if retry.ok and not retry.skipped:
                    return Outcome(f"{retry.sentence} (its engine was heard again while the lease ran)",
                                   {**retry.to_dict(), "waited_s": round(waited, 3)})
        return Outcome(f"old primary in {op.source} not fenced from here ({result.sentence}); its engines have been "
                       f"silent for the lease of {lease.wait:g}s ({'; '.join(notes) or 'no engine there'}): a cut-off "
                       f"active site fences itself within {lease.minimum:g}s",
                       {"fence": result.to_dict(), "lease_s": lease.wait, "waited_s": round(waited, 3),
                        "engines": notes, "last_heard_at": last_heard})

    async def promote(self, op: Operation) -> Outcome:
        if self.rt.config.database is None:
            return Outcome.skip("no database configured for this service")
        return await self._guarded(op, promote, op.target)

    async def consistency(self, op: Operation) -> Outcome:
        db = self.rt.config.database
        if db is None:
            return Outcome.skip("no database configured for this service")
        journal = self.ctx.journal_or_fail()
        saved = journal.get_state(op.service, "primary_commit")
        # only a commit point written on the old primary says what it had
        last_known = CommitPoint.from_dict(saved) if saved and saved.get("primary") in (None, op.source) else None
        result = await check_consistency(db, op.target, last_known, self.rt.config.policy.rpo)
        data = result.to_dict()
        sentence = result.sentence
        alert = result.alert
        lease_wait = (op.steps.get("fence") or {}).get("data", {})
        if "lease_s" in lease_wait and lease_wait.get("last_heard_at") is not None and self.rt.lease is not None:
            # the old primary was not fenced from here: it kept taking writes until it fenced itself, at most
            # lease.minimum after its engines were last heard; the commit point we know predates that
            fenced_by = float(lease_wait["last_heard_at"]) + self.rt.lease.minimum
            since = last_known.heartbeat_at if last_known is not None else float(lease_wait["last_heard_at"])
            bound = max(0.0, fenced_by - since)
            data["loss_window_bound_s"] = round(bound, 3)
            data["status"] = "rpo_breached" if bound > self.rt.config.policy.rpo else "unknown"
            sentence += (f"; but {op.source} was not fenced from here: it may have accepted writes until it fenced "
                         f"itself, up to {self.rt.lease.minimum:g}s after its engines were last heard, so up to "
                         f"{bound:.1f}s of writes may be lost (reconcile when it is reachable)")
            data["sentence"] = sentence
            alert = True
        if alert:
            await self.ctx.record("rpo", sentence, service=op.service, data=data)
            await self.ctx.notify("rpo", sentence, op.service, data)
        return Outcome(sentence, data)

    async def reconcile(self, op: Operation) -> Outcome:
        db = self.rt.config.database
        if db is None:
            return Outcome.skip("no database configured for this service")
        unreachable = await publisher_reachable(db, op.source)
        if unreachable:
            return Outcome.skip(f"old primary {op.source} unreachable: {unreachable}")
        # replication has stopped: nothing is in flight, every difference is real
        result = await reconcile(db, service=op.service, primary=op.target, now=self.ctx.clock.now(),
                                 watermark=None)
        data = result.to_dict()
        await self.ctx.journal_or_fail().put_state(op.service, "last_reconciliation", data,
                                                      at=self.ctx.clock.now())
        return Outcome(result.sentence, data)

    async def report(self, op: Operation) -> Outcome:
        done = [(name, rec) for name, rec in op.steps.items()
                if rec.get("duration_s") is not None and rec.get("state") == "done"]
        done.sort(key=lambda item: item[1].get("started_at") or 0)
        timings = {name: rec["duration_s"] for name, rec in done}
        skipped = sorted(name for name, rec in op.steps.items() if rec.get("state") == "skipped")
        total = self.ctx.clock.now() - op.created_at
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()) or "no step ran"
        if skipped:
            phases += f"; skipped: {', '.join(skipped)}"
        return Outcome(f"{op.kind} of {op.service} {op.source} -> {op.target} took {total:.1f}s ({phases})",
                       {"total_s": round(total, 3), "phases_s": timings, "skipped": skipped})

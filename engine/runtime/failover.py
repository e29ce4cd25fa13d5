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

from actions.consistency import CommitPoint, check_loss, primary_end, silent_since
from actions.database.fence import fence
from actions.database.promote import promotable, promote, publisher_reachable
from actions.dns.errors import DnsAuthError, DnsConflict, DnsError
from actions.dns.provider import build_provider, build_verifier
from actions.reconcile.causes import PromotionPoint
from actions.reconcile.runner import reconcile
from engine.core.lease_rules import LeaseRelease
from engine.core.loss import SyncEvidence
from engine.core.operations import Operation, Outcome, StepFailed, StepState, fence_required
from engine.runtime.context import RuntimeContext
from engine.runtime.service import ServiceRuntime

LeaseRemaining = Callable[[str, str, int], tuple[LeaseRelease, float | None]]
"""LeaseWatch.release: (service, old site, starting epoch) -> may promote?, when last heard."""
LEASE_POLL = 0.1  # seconds between two looks at the lease while waiting: a released lease is seen at once
FENCE_RETRY = 0.5  # seconds between two more fence attempts while the old site's engine is heard


class FailoverSteps:
    """The failover runbook's step functions for one service (the table: engine.core.steps.failover_plan).
    ``lease_remaining`` tells whether the old site's engines gave the write lease up or how long they must
    still stay silent (LeaseWatch.release)."""

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
            await self._target_promotable(op)
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
        await self._target_promotable(op)
        return Outcome(f"DNS at {state.describe()}", {"dns": state.describe()})

    async def _target_promotable(self, op: Operation) -> None:
        """Never fence the primary for a target that cannot be promoted: checked read-only, before the fence."""
        db = self.rt.config.database
        if db is None or op.target not in db.sites:
            return
        problem, transient = await promotable(db, op.target)
        if problem is not None:
            raise StepFailed(f"{op.target} cannot be promoted: {problem}; nothing was fenced", retry=transient)

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
                # changed by someone else since the precheck: never overwrite it (a weighted failback of this
                # operation put the traffic on the target at this epoch already: the shift writes the epoch)
                weighted = op.steps.get("weighted_failback", {}).get("state") == StepState.DONE
                if state.site != op.source and not (weighted and state.site == op.target):
                    raise StepFailed(f"dns_drift: DNS points to {state.site}, not {op.source}, at epoch "
                                     f"{op.epoch_from}: {state.describe()}; not overwriting a foreign change",
                                     retry=False)
                sent_at = self.ctx.clock.now()
                new = await provider.shift(state, op.target, op.epoch_to, op=op.id)
                return Outcome(f"shifted to {new.describe()}", {"changed": True, "dns": new.describe(),
                                                                "sent_at": sent_at})
            except DnsConflict as exc:
                return Outcome(f"lost the race: {exc.found}",
                               {"changed": False, "dns": exc.found}, stand_down=True)

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
        old site's engines are certified silent for the lease (they fenced their database themselves); a move
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
        """Wait until every engine of the old site has given the write lease up (its fresh verdict reports its
        primary not writable: a database-only crash) or been certified silent for the lease (it fenced itself),
        whichever comes first (:func:`engine.core.lease_rules.lease_release`). While one of them is heard, the
        old primary may be reachable again: try the fence once more every half second."""
        release, last_heard = self.lease_remaining(op.service, op.source, op.epoch_from)
        if not release.free:
            await self.ctx.record(
                "lease", f"{op.service}: old primary in {op.source} not fenced ({result.sentence}); waiting up to "
                f"at least {release.remaining_s:.1f}s for the lease ({lease.wait:g}s of certified silence: "
                f"{release.sentence}) unless "
                "its engine gives the lease up first",
                service=op.service, data={"operation": op.id, "remaining_s": release.remaining_s})
        started = self.ctx.clock.monotonic()
        next_fence = started + FENCE_RETRY
        while not release.free:
            await asyncio.sleep(min(release.remaining_s, LEASE_POLL))
            before = release.remaining_s
            release, last_heard = self.lease_remaining(op.service, op.source, op.epoch_from)
            mono = self.ctx.clock.monotonic()
            heard_again = release.remaining_s > before - LEASE_POLL / 2  # silence did not grow as time passed
            if release.free or not heard_again or mono < next_fence:
                continue
            next_fence = mono + FENCE_RETRY  # heard again: the old site may be back, fence it from here
            assert self.rt.config.database is not None
            retry = await fence(self.rt.config.database, op.source)
            if retry.ok and not retry.skipped:
                return Outcome(f"{retry.sentence} (its engine was heard again while the lease ran)",
                               {**retry.to_dict(), "waited_s": round(self.ctx.clock.monotonic() - started, 3)})
        waited = round(self.ctx.clock.monotonic() - started, 3)
        if release.released_by:
            return Outcome(f"old primary in {op.source} not fenced from here ({result.sentence}); {release.sentence}: "
                           "promoting without waiting out the lease",
                           {"fence": result.to_dict(), "lease_s": lease.wait, "waited_s": waited,
                            "released_by": list(release.released_by), "engines": list(release.notes),
                            "last_heard_at": last_heard})
        return Outcome(f"old primary in {op.source} not fenced from here ({result.sentence}); its engines are "
                       f"certified silent for {lease.wait:g}s ({release.sentence}): a cut-off active site has fenced "
                       f"itself by then ({lease.explain()})",
                       {"fence": result.to_dict(), "lease_s": lease.wait, "waited_s": waited,
                        "engines": list(release.notes), "last_heard_at": last_heard})

    async def promote(self, op: Operation) -> Outcome:
        if self.rt.config.database is None:
            return Outcome.skip("no database configured for this service")
        return await self._guarded(op, promote, op.target)

    async def consistency(self, op: Operation) -> Outcome:
        """The data-loss verdict (engine.core.loss): zero only by proof (synchronous commit confirmed up to the
        end of the old primary), else an upper bound this engine can justify, else unknown since a point."""
        db = self.rt.config.database
        if db is None:
            return Outcome.skip("no database configured for this service")
        saved = self.ctx.journal_or_fail().get_state(op.service, "primary_commit")
        # only a commit point written on the old primary says what it had
        last_known = CommitPoint.from_dict(saved) if saved and saved.get("primary") in (None, op.source) else None
        fence = op.steps.get("fence") or {}
        fenced = (fence.get("data") or {})
        # the old site's engines: when last heard (wall clock), and whether one reported its database down
        release, last_heard = self.lease_remaining(op.service, op.source, op.epoch_from)
        heard = fenced.get("last_heard_at", last_heard)
        tick = self.ctx.config.instance.tick
        end = primary_end(
            fenced_at=fence.get("finished_at") if str(fence.get("state")) == "done" and "lease_s" not in fenced
            else None,
            reported_down_at=heard if fenced.get("released_by") or release.released_by else None,
            engine_silent_at=None if heard is None else silent_since(heard, 2 * tick, tick))
        sync = self.rt.database.sync.evidence() if self.rt.database is not None else SyncEvidence()
        verdict = await check_loss(db, op.target, last_known, end=end, sync=sync,
                                   lease_end_at=self._lease_end(fence, heard))
        data = verdict.to_dict()
        if verdict.alert:
            await self.ctx.record("rpo", f"{op.service}: {verdict.sentence}", service=op.service, data=data)
            await self.ctx.notify("rpo", f"{op.service}: {verdict.sentence}", op.service, data)
        return Outcome(verdict.sentence, data)

    def _lease_end(self, fence: dict[str, Any], heard: float | None) -> float | None:
        """When the old primary took its last write at the latest (wall clock): a cut-off holder's fence is done
        before the release that ended a waited-out fence step; else a lease after it was last heard here."""
        lease = self.rt.lease
        data = fence.get("data") or {}
        if lease is None:
            return None
        if "lease_s" in data and isinstance(fence.get("finished_at"), int | float):
            return float(fence["finished_at"])
        return None if heard is None else heard + lease.length

    async def reconcile(self, op: Operation) -> Outcome:
        db = self.rt.config.database
        if db is None:
            return Outcome.skip("no database configured for this service")
        unreachable = await publisher_reachable(db, op.source)
        if unreachable:
            return Outcome.skip(f"old primary {op.source} unreachable: {unreachable}")
        # replication has stopped: nothing is in flight, every difference is real; with the promotion point the
        # promote step recorded, each difference is classified lost / written after promotion / diverged
        point = ((op.steps.get("promote") or {}).get("data") or {}).get("promotion_point")
        promotion = PromotionPoint.from_dict(point) if isinstance(point, dict) else None
        result = await reconcile(db, service=op.service, primary=op.target, now=self.ctx.clock.now(),
                                 watermark=None, promotion=promotion)
        data = result.to_dict()
        await self.ctx.journal_or_fail().put_state(op.service, "last_reconciliation", data,
                                                   at=self.ctx.clock.now())
        causes = result.causes or {}
        lost, diverged = int(causes.get("lost", 0)), int(causes.get("diverged", 0))
        if lost or diverged:
            message = (f"{op.kind} of {op.service}: {lost} row(s) only on the old primary {op.source} from before "
                       f"promotion (lost at the failover) and {diverged} row(s) changed on both sides; they stay on "
                       f"{op.source} and are quarantined at failback")
            await self.ctx.record("rpo", message, service=op.service, data={"operation": op.id, "causes": causes})
            await self.ctx.notify("rpo", message, op.service, {"operation": op.id, "causes": causes})
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

"""The planned switchover runbook: both sites healthy, zero acknowledged writes lost.

precheck     as for a failover (DNS at our starting epoch, pointing at the source).
lower_ttl    the records' TTL down to ``switchover_ttl`` (values and epoch untouched), then wait out the
             old TTL, so that after the move resolvers forget the old answer within the low TTL. Skipped
             when the TTL is already that low.
weighted_failback  only for a move home with ``dns.weighted_failback``: home's share of the traffic in steps
             (e.g. 10 -> 50 -> 100 %) at the claimed epoch, held and checked, rolled back at the first
             failure before any database is touched (:mod:`engine.runtime.weighted_failback`).
fence        the source database read-only and its client sessions ended; this move needs it (no best
             effort, no lease: the source is healthy and reachable).
drain        a last heartbeat written on the fenced source, waited for on the target
             (:mod:`actions.database.switchover`): every write a client saw acknowledged is there.
promote      as for a failover (subscription disabled, sequences synced, reverse slot, writes allowed); when
             the drain proved the standby caught up after the fence, the apply worker is ended at once
             rather than waited for (:func:`engine.core.apply_stop.apply_stop`).
shift_dns    compare-and-set to the target at epoch N+1 (this also restores the configured TTLs).
verify_dns   every authoritative server answers the target; then the client sessions of the fenced old primary
             are ended once more (best effort): one opened between the fence and the DNS change is
             read-only, and a pool keeps such a connection (a read-only refusal does not break it) instead
             of reconnecting and following DNS.
reverse      the old primary becomes the standby: the reconciliation of the pair, then replication from
             the new primary through the slot the promotion made (see :mod:`actions.database.failback`).
             Rows only the old primary holds stop the step (nothing is resynchronised) unless the operator
             acknowledged the reconciliation for a failback: then they are copied into the quarantine
             schema first, never lost.
restore_ttl  the configured TTLs back if anything left them low.
reconcile    counts and checksums of the pair: the proof.
report       phase timings.

The same steps serve a planned failback and the moves of a full drill when both sites are healthy.
"""

from __future__ import annotations

import asyncio

from actions.database.failback import prepare_failback
from actions.database.fence import end_client_sessions
from actions.database.promote import promote
from actions.database.switchover import drain
from actions.dns.errors import DnsConflict
from actions.reconcile.runner import reconcile
from engine.core.apply_stop import apply_stop
from engine.core.operations import Operation, Outcome, StepFailed
from engine.runtime.database_watch import Reconciled
from engine.runtime.failover import FailoverSteps
from engine.runtime.weighted_failback import weighted_failback

RELEASE_TIMEOUT = 5.0  # seconds: ending the old primary's client sessions after the DNS change, at most


class SwitchoverSteps(FailoverSteps):
    """The switchover runbook's step functions (the table: engine.core.steps.switchover_plan)."""

    async def _retime(self, op: Operation, low: bool) -> Outcome:
        dns = self.rt.config.dns
        if dns is None:
            return Outcome.skip("no dns configured for this service")
        configured = {dns.fqdn(r.name): int(r.ttl) for r in dns.records}
        low_ttl = int(self.rt.config.policy.switchover_ttl)
        async with self._provider() as provider:
            try:
                state = await provider.read()
                stale = self._moved_by_another(op, state, "not changing TTLs", ours_done=not low)
                if stale is not None:
                    return stale
                want = {r.name: min(low_ttl, configured.get(r.name, r.ttl)) if low
                        else configured.get(r.name, r.ttl) for r in state.records}
                if all(r.ttl == want[r.name] for r in state.records):
                    if not low:
                        return Outcome(f"TTLs are the configured ones ({sorted(set(want.values()))}s)",
                                       {"changed": False})
                    if int(op.steps.get("lower_ttl", {}).get("attempts", 1)) <= 1:
                        return Outcome.skip(f"TTLs already {sorted(set(want.values()))}s")
                    # an earlier attempt lowered them and its wait was cut short: wait out the configured TTL
                    old = max(configured.values(), default=0)
                    await asyncio.sleep(old)
                    return Outcome(f"TTLs already lowered by an earlier attempt; waited out the configured {old}s",
                                   {"ttl": low_ttl, "waited_s": old})
                old = max(r.ttl for r in state.records)
                await provider.retime(state, want)
            except DnsConflict as exc:
                return Outcome(f"the zone changed under us: {exc.found}",
                               {"dns": exc.found}, stand_down=True)
        if not low:
            return Outcome(f"TTLs restored to {sorted(set(want.values()))}s", {"changed": True})
        await self.ctx.record("runbook", f"{op.kind} of {op.service}: TTL lowered from {old}s to {low_ttl}s; "
                                 f"waiting {old}s for resolvers to forget the old TTL", service=op.service,
                                 data={"operation": op.id})
        await asyncio.sleep(old)
        return Outcome(f"TTL lowered from {old}s to {low_ttl}s and the old TTL waited out",
                       {"old_ttl": old, "ttl": low_ttl, "waited_s": old})

    async def lower_ttl(self, op: Operation) -> Outcome:
        return await self._retime(op, low=True)

    async def restore_ttl(self, op: Operation) -> Outcome:
        return await self._retime(op, low=False)

    async def drain(self, op: Operation) -> Outcome:
        db = self.rt.config.database
        if db is None:
            return Outcome.skip("no database configured for this service")
        stale = await self._epoch_guard(op)
        if stale is not None:
            return stale
        result = await drain(db, op.source, op.target, writer_site=self.ctx.config.instance.site,
                             timeout=self.rt.config.policy.switchover_drain)
        if not result.ok:
            raise StepFailed(result.sentence, retry=False)
        return Outcome(result.sentence, result.to_dict())

    async def verify_dns(self, op: Operation) -> Outcome:
        """As for a failover; once DNS answers the target everywhere, the fenced old primary's client sessions are
        ended again, so pools holding a read-only connection there reconnect and follow DNS."""
        verified = await super().verify_dns(op)
        db = self.rt.config.database
        if verified.stand_down or verified.skipped or db is None or not db.fencing.enabled \
                or not db.fencing.terminate_sessions:
            return verified
        # within the step's slack beyond the verify deadline (engine.core.steps: deadline + 10 s)
        released = await end_client_sessions(db, op.source, timeout=min(db.fencing.timeout, RELEASE_TIMEOUT))
        return Outcome(f"{verified.summary}; {released.detail}" if released.status == "ok"
                       else f"{verified.summary}; client sessions on {op.source} not ended: {released.detail}",
                       {**verified.data, "clients_released": released.to_dict()})

    async def promote(self, op: Operation) -> Outcome:
        """As for a failover; the apply worker is ended at once when this operation's drain proved every
        acknowledged write applied after the fence (engine.core.apply_stop)."""
        if self.rt.config.database is None:
            return Outcome.skip("no database configured for this service")
        at_once = apply_stop(op.steps).at_once
        return await self._guarded(op, lambda db, site: promote(db, site, end_apply_worker=at_once), op.target)

    async def reconcile(self, op: Operation) -> Outcome:
        """The proof at the end: the pair compared with replication flowing new -> old (rows in flight are
        allowed for by the watermark); a difference is an alert, not a silent best effort."""
        db = self.rt.config.database
        if db is None:
            return Outcome.skip("no database configured for this service")
        now = self.ctx.clock.now()
        result = await reconcile(db, service=op.service, primary=op.target, now=now, watermark="auto")
        data = result.to_dict()
        await self.ctx.journal_or_fail().put_state(op.service, "last_reconciliation", data, at=now)
        if not data.get("identical"):
            message = f"{op.kind} of {op.service}: the pair differs after the move: {data.get('sentence')}"
            await self.ctx.record("alert", message, service=op.service, data={"operation": op.id})
            await self.ctx.notify("alert", message, op.service, {"operation": op.id})
        return Outcome(str(data.get("sentence", "")), data)

    async def reverse(self, op: Operation) -> Outcome:
        """The old primary becomes the standby (prepare_failback toward it: reconcile, quarantine what only it
        holds, replicate from the new primary)."""
        db = self.rt.config.database
        if db is None:
            return Outcome.skip("no database configured for this service")
        # replication has stopped and the source is fenced: nothing is in flight, every difference is real
        result = await reconcile(db, service=op.service, primary=op.target, now=self.ctx.clock.now(),
                                 watermark=None)
        reconciled = result.to_dict()
        prepared = await prepare_failback(db, op.target, Reconciled(reconciled),
                                          acknowledge=bool(op.evidence.get("acknowledged_reconciliation")))
        data = {"reconciliation": {k: reconciled.get(k) for k in ("identical", "sentence", "differences")},
                "prepare": prepared.to_dict()}
        if not prepared.ok:
            raise StepFailed(prepared.sentence, retry=False)
        return Outcome(f"{op.source} is now the standby of {op.target}: {prepared.sentence}", data)

    async def weighted_failback(self, op: Operation) -> Outcome:
        """A move home with ``dns.weighted_failback``: home's share in steps under this operation's claim,
        rolled back at the first unhealthy check (engine.runtime.weighted_failback); skipped otherwise."""
        if self.rt.config.dns is None or self.rt.config.dns.weighted_failback is None:
            return Outcome.skip("no dns.weighted_failback for this service")
        async with self._provider() as provider:
            return await weighted_failback(self.rt, op, provider, clock=self.ctx.clock)

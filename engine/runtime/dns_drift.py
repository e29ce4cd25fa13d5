"""DNS drift as the runtime sees it: compare every read with the expected state, say so once, block moves.

The coordinator hands each DNS read to :meth:`DriftWatch.check` (every verification cycle and right
after every move). The comparison is pure (:func:`actions.dns.drift.drift`): the engine's active site
and epoch, the configured values and TTLs, and the epoch record's text the engine saw at its epoch
(kept in the journal as ``dns_epoch_seen``). A drift raises one ``dns_drift`` event, an ``alert``
notification and the gauge ``failover_engine_dns_drift{service}`` = 1, once per distinct drift; its
clearing raises one event and sets the gauge to 0. While it stands unacknowledged,
:meth:`ServiceRuntime.unacknowledged_drift` feeds the core gates (every move is refused with
``dns_drift: ...``). :meth:`acknowledge` records an operator's acknowledgement of exactly the drift
seen now (journaled as ``dns_drift_ack``, audited); a different drift blocks again. The engine never
rewrites the records to repair a drift: that is the operator's decision.
"""

from __future__ import annotations

from typing import Any

import structlog

from actions.dns.drift import Drift, drift
from actions.dns.state import DnsState
from engine.core.ports import Refused, Reply
from engine.runtime.context import RuntimeContext
from engine.runtime.service import ServiceRuntime

log = structlog.get_logger("engine.dns_drift")

SEEN = "dns_epoch_seen"
ACK = "dns_drift_ack"


class DriftWatch:
    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self._loaded: set[str] = set()

    def _load(self, rt: ServiceRuntime) -> None:
        """Take the acknowledgement kept in the journal, once (it survives a restart)."""
        if rt.name in self._loaded:
            return
        self._loaded.add(rt.name)
        ack = self.ctx.journal_or_fail().get_state(rt.name, ACK)
        rt.dns_drift_ack = ack.get("key") if isinstance(ack, dict) else None

    async def check(self, rt: ServiceRuntime, state: DnsState, now: float) -> Drift:
        """Compare ``state`` with what the records should be now; event, alert and metric on a change."""
        dns = rt.config.dns
        assert dns is not None
        journal = self.ctx.journal_or_fail()
        configs = {dns.fqdn(r.name): r for r in dns.records}
        seen = journal.get_state(rt.name, SEEN)
        seen_text = seen.get("text") if isinstance(seen, dict) and seen.get("epoch") == rt.state.epoch else None
        found = drift(state, configs, active=rt.state.active, epoch=rt.state.epoch, seen=seen_text)
        if not found and seen_text is None and state.epoch.text is not None:
            # the first clean read at this epoch: the text any later read is held to
            await journal.put_state(rt.name, SEEN, {"epoch": rt.state.epoch, "text": state.epoch.text}, at=now)
        await self._note(rt, found, now)
        return found

    async def unreadable(self, rt: ServiceRuntime, why: str, now: float) -> None:
        """The records could not be understood (e.g. an epoch record that is not ``epoch=N ...``): a drift."""
        await self._note(rt, Drift((f"records unreadable: {why}",)), now)

    async def _note(self, rt: ServiceRuntime, found: Drift, now: float) -> None:
        ctx = self.ctx
        self._load(rt)
        before: Drift | None = rt.dns_drift
        rt.dns_drift = found if found else None
        rt.dns_drift_at = rt.dns_drift_at if before and found and before.key == found.key else (now if found else None)
        ctx.metrics.dns_drift.labels(rt.name).set(1 if found else 0)
        if (before.key if before else None) == (found.key if found else None):
            return
        if found:
            message = f"dns_drift: the records of {rt.name} differ from epoch {rt.state.epoch} in " \
                      f"{rt.state.active}: {found.summary}; moves are refused until an operator acknowledges it"
            log.warning("dns drift", service=rt.name, drift=found.summary)
            data: dict[str, Any] = {"drift": found.to_dict(), "epoch": rt.state.epoch, "active": rt.state.active}
            await ctx.record("dns_drift", message, service=rt.name, at=now, data=data)
            await ctx.notify("alert", message, rt.name, data)
        else:
            assert before is not None
            message = f"dns_drift cleared: the records of {rt.name} are as expected again ({before.summary} no more)"
            log.info("dns drift cleared", service=rt.name)
            await ctx.record("dns_drift", message, service=rt.name, at=now,
                             data={"cleared": before.to_dict(), "epoch": rt.state.epoch})
            await ctx.notify("alert", message, rt.name, {"cleared": before.to_dict()})
            if rt.dns_drift_ack is not None:  # the same drift coming back later blocks again
                rt.dns_drift_ack = None
                await ctx.journal_or_fail().put_state(rt.name, ACK, None, at=now)
        ctx.poke()

    async def acknowledge(self, rt: ServiceRuntime, *, actor: str, reason: str) -> Reply:
        """An operator accepts the drift seen now: moves may start again until the records drift differently."""
        found = rt.dns_drift
        if found is None:
            raise Refused("no_drift", f"the records of {rt.name} show no drift to acknowledge"
                          + (" (no DNS read yet)" if rt.dns_state is None else f": {rt.dns_state}"))
        ctx = self.ctx
        now = ctx.clock.now()
        already = rt.dns_drift_ack == found.key
        rt.dns_drift_ack = found.key
        await ctx.journal_or_fail().put_state(rt.name, ACK, {"key": found.key, "actor": actor, "reason": reason,
                                                             "at": now, "drift": found.to_dict()}, at=now)
        await ctx.record("operator", f"{actor} acknowledged the DNS drift of {rt.name} ({found.summary}): {reason}",
                         service=rt.name, actor=actor, at=now,
                         data={"action": "acknowledge_drift", "reason": reason, "drift": found.to_dict()})
        ctx.poke()
        return Reply({"service": rt.name, "acknowledged": found.to_dict(), "already": already})

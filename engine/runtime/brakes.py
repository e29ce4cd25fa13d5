"""The circuit breaker: automatic moves counted per service and per engine; past the limit, disarmed.

:meth:`Brakes.brake` turns an automatic move the breaker refuses into a page (the first refusal opens
it); :meth:`Brakes.arm` closes it again (an operator's ``arm``). Counts come from the journal's
operations, so a restart forgets nothing.
"""

from __future__ import annotations

import time
from typing import Any

from engine.config.base import format_duration
from engine.core.decide import DecisionKind
from engine.core.policy import ClusterDecision
from engine.runtime.context import RuntimeContext
from engine.runtime.service import ServiceRuntime
from engine.runtime.shared_operator import SharedOperatorState

GLOBAL = "*"  # the journal's service name for engine-wide state (the engine-wide circuit breaker)


def hms(at: Any) -> str:
    return "?" if not isinstance(at, int | float) else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


class Brakes:
    def __init__(self, ctx: RuntimeContext, shared: SharedOperatorState | None = None) -> None:
        self.ctx = ctx
        self.shared = shared  # peer mode: a trip or an arm is published to every voter, a peer's adopted

    def breaker(self, rt: ServiceRuntime, now: float) -> dict[str, Any]:
        """The circuit breaker of ``rt`` (and the engine-wide one): open or armed, with the counts."""
        journal = self.ctx.journal_or_fail()
        policy = rt.config.policy
        brakes = self.ctx.config.brakes
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

    async def brake(self, rt: ServiceRuntime, decision: ClusterDecision, now: float) -> ClusterDecision:
        """An automatic move the circuit breaker refuses becomes a page; the first refusal opens it."""
        state = self.breaker(rt, now)
        reason = None
        if state["open"]:
            reason = f"circuit breaker open since {hms(state['since'])} UTC ({state['reason']})"
        elif state["auto_failovers_in_window"] >= state["limit"]:
            reason = (f"{state['auto_failovers_in_window']} automatic failover(s) of {rt.name} in the last "
                      f"{format_duration(state['window_s'])} (limit {state['limit']})")
            await self.trip(rt.name, reason, now)
        elif state["engine_auto_failovers_in_window"] >= state["engine_limit"]:
            reason = (f"{state['engine_auto_failovers_in_window']} automatic failovers on this engine in the last "
                      f"{format_duration(self.ctx.config.brakes.window)} (limit {state['engine_limit']})")
            await self.trip(GLOBAL, reason, now)
        if reason is None:
            return decision
        reason += (f"; automatic action is disarmed until an operator re-arms it "
                   f"(`failover-engine arm {rt.name} --reason ...`)")
        message = decision.message.replace("; this instance acts", "")
        return ClusterDecision(DecisionKind.PAGE, f"paging: {message}; not moving: {reason}", decision.target, None,
                               False, (*decision.reasons, reason), decision.evidence)

    async def trip(self, service: str, reason: str, now: float) -> None:
        ctx = self.ctx
        await ctx.journal_or_fail().put_state(service, "breaker", {"open": True, "since": now, "reason": reason},
                                                 at=now)
        name = None if service == GLOBAL else service
        if self.shared is not None and name is not None:
            await self.shared.publish(ctx.services[name], "breaker", {"open": True, "since": now, "reason": reason},
                                      "engine")
        for rt in ctx.services.values():
            if name is None or rt.name == name:
                ctx.metrics.breaker_open.labels(rt.name).set(1)
        message = f"circuit breaker opened{' for ' + service if name else ' for every service'}: {reason}"
        await ctx.record("alert", message, service=name, at=now, data={"breaker": "open", "reason": reason})
        await ctx.notify("page", message, name, {"breaker": "open", "reason": reason})

    async def arm(self, rt: ServiceRuntime, now: float, by: str | None = None) -> None:
        """Close the breaker of ``rt`` and the engine-wide one; only moves after ``now`` count again."""
        journal = self.ctx.journal_or_fail()
        await journal.put_state(rt.name, "breaker", {"open": False, "armed_at": now}, at=now)
        self.ctx.metrics.breaker_open.labels(rt.name).set(0)
        glob = journal.get_state(GLOBAL, "breaker") or {}
        if glob.get("open"):
            await journal.put_state(GLOBAL, "breaker", {"open": False, "armed_at": now}, at=now)
        if self.shared is not None:
            await self.shared.publish(rt, "arm", {"armed_at": now}, by)

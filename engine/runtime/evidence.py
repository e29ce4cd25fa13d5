"""What an operation keeps of the moment it was decided: who saw what, when.

:func:`decision_context` adds to an operation's evidence (beside the votes and gates the decision
carries): every peer's latest verdict for the service with its age, this instance's own observations
of every signal (state, consecutive counts, the last
result with its reason and time), the replication lag and the RPO at decision time, the candidate
site and why it qualifies, and quorum. Kept in the journal with the operation (never rotated with
logs), served at ``/v1/operations/{id}`` and attached to the decision webhook.
"""

from __future__ import annotations

from typing import Any

from engine.runtime.context import RuntimeContext
from engine.runtime.peering import Peering
from engine.runtime.service import ServiceRuntime


def _signal(sig: Any) -> dict[str, Any]:
    m = sig.machine
    last = sig.last
    return {"signal": sig.key.name, "state": str(m.state), "since": m.since,
            "consecutive_failures": m.consecutive_failures, "consecutive_successes": m.consecutive_successes,
            "last": None if last is None else {"ok": last.ok, "reason": last.reason, "at": last.at,
                                               "latency_ms": round(last.latency_s * 1000, 1), "value": last.value}}


def observations(rt: ServiceRuntime) -> dict[str, Any]:
    out: dict[str, Any] = {site: [_signal(s) for s in sigs] for site, sigs in rt.signals.items()}
    if rt.replication is not None:
        out["(replication)"] = [_signal(rt.replication)]
    if rt.shared:
        out["(shared)"] = [_signal(s) for s in rt.shared.values()]
    return out


def decision_context(ctx: RuntimeContext, peering: Peering, rt: ServiceRuntime, target: str | None) -> dict[str, Any]:
    now = ctx.clock.now()
    snapshot = rt.snapshot(now)
    candidate = None
    if target is not None and target in snapshot.sites:
        view = snapshot.sites[target]
        candidate = {"site": target, "health": str(view.health), "why": view.why()}
    mono = ctx.clock.monotonic()
    votes = [{"voter": peer_id, "age_s": None if got is None else round(mono - got.received_at, 3),
              "view": None if got is None else got.view.model_dump()}
             for peer_id, got in peering.received_for(rt.name).items()]
    return {"observed_by": ctx.config.instance.id, "observed_at": now, "observations": observations(rt),
            "peer_verdicts": votes,
            "lag_s": rt.lag_s, "rpo_s": rt.config.policy.rpo if rt.config.database is not None else None,
            "candidate": candidate, "quorum": ctx.quorum_ok,
            "active": {"site": rt.state.active, "health": str(snapshot.sites[rt.state.active].health),
                       "why": snapshot.sites[rt.state.active].why()}}

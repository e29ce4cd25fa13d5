"""The cluster decision (pure): should service S move from A to B now, and who acts?

Rules, in order; the first that applies gives the sentence:

1. A is not DOWN for a majority of voters: hold. When this instance sees A down but too few voters
   answer to form a majority, it cannot tell "A is dead" from "I am cut off": hold and page,
   assuming a partition.
2. Gates (each returns its reason, never a bare bool): an operation or drill already under way;
   a standby UP for a majority; failback (a move away from a site other than the home site) is a
   human decision; automatic failover enabled; not in cool-down; no shared dependency down for a
   majority (it would fail there too); replication lag within the RPO (the worst fresh report, the
   last known value when the primary is unreachable); no unacknowledged DNS drift (a move would
   overwrite a foreign change).
3. The executor is the first engine in the executor order with a fresh verdict (by default the
   engines of the target site first: A's cloud may be gone). Only it acts; the DNS epoch makes any
   race harmless.

Pause wraps everything: the same evaluation, prefixed ``PAUSED:``, never acting. So does an operation of
this service halted here (``halted``): it blocks every new runbook until an operator retries or aborts
it, so a move the rules would start pages instead (``halted: ...``), and any other sentence says the
operation is halted; never "this instance acts" while nothing can act.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.config.base import format_duration
from engine.config.model import PolicyConfig
from engine.core.decide import DecisionKind, ServiceState, cooldown_reason
from engine.core.loss import SyncEvidence, rpo_gate, sync_confirmed_now
from engine.core.quorum import Tally, VoterInfo


@dataclass(frozen=True, slots=True)
class ClusterDecision:
    verdict: DecisionKind
    message: str
    target: str | None = None
    executor: str | None = None
    acting: bool = False
    reasons: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)


def executor_order(engines: Sequence[VoterInfo], target: str, configured: Sequence[str]) -> list[str]:
    """Instance ids in the order they should act: configured, else target-site engines first."""
    if configured:
        return [i for i in configured if any(e.id == i for e in engines)]
    return [e.id for e in engines if e.site == target] + [e.id for e in engines if e.site != target]


def _evidence(tally: Tally, active: str, target: str | None) -> dict[str, Any]:
    return {
        "voters": tally.voters,
        "majority": tally.majority,
        "votes": [{"voter": v.voter, "role": v.role, "site": v.site,
                   "age_s": None if v.age_s is None else round(v.age_s, 3),
                   "view": None if v.view is None else v.view.model_dump()} for v in tally.votes],
        "active_down": tally.who(active, "down"),
        "target_up": tally.who(target, "up") if target else [],
    }


def gate_results(state: ServiceState, home: str, target: str | None, tally: Tally, now: float,
                 policy: PolicyConfig, *, rpo_applies: bool, sync: SyncEvidence | None = None,
                 dns_drift: str | None = None) -> list[dict[str, Any]]:
    """Every gate of an automatic move with its result and reason (the evidence of a decision)."""
    busy = tally.busy()
    gates: list[dict[str, Any]] = [
        {"gate": "nothing_under_way", "ok": not busy, "detail": "; ".join(busy) or "no operation or drill announced"},
        {"gate": "standby_up", "ok": target is not None,
         "detail": f"{target} is up for a majority" if target else "no standby is up for a majority of voters"},
        {"gate": "leaving_home", "ok": state.active == home,
         "detail": f"{state.active} is the home site" if state.active == home else
         f"{state.active} is not the home site {home}: failback is a human decision"},
        {"gate": "auto_failover", "ok": policy.auto_failover,
         "detail": "enabled" if policy.auto_failover else "automatic failover is disabled for this service"},
    ]
    cooling = cooldown_reason(state, now, policy)
    gates.append({"gate": "cooldown", "ok": not cooling, "detail": cooling or "not cooling down"})
    shared = tally.shared_down()
    gates.append({"gate": "shared_dependencies", "ok": not shared,
                  "detail": f"shared dependency {', '.join(shared)} is down: it would fail there too" if shared
                  else "none down"})
    if rpo_applies and sync is not None and sync_confirmed_now(sync, now):
        # synchronous commit confirmed: no acknowledged write can be missing, whatever the lag says (issue 24)
        ok, detail = rpo_gate(tally.worst_lag(), policy.rpo, sync, now)
        gates.append({"gate": "rpo", "ok": ok, "detail": detail})
    elif rpo_applies:
        lag = tally.worst_lag()
        if lag is None:
            gates.append({"gate": "rpo", "ok": False, "detail": "replication lag is unknown"})
        else:
            ok = lag <= policy.rpo
            gates.append({"gate": "rpo", "ok": ok, "detail": f"standby lag {lag:.1f}s "
                          f"{'within' if ok else 'exceeds'} RPO {format_duration(policy.rpo)}"})
    gates.append({"gate": "dns_drift", "ok": dns_drift is None,
                  "detail": f"dns_drift: {dns_drift} (not acknowledged)" if dns_drift is not None
                  else "the DNS records are as expected (or the drift is acknowledged)"})
    return gates


def gate_reasons(state: ServiceState, home: str, target: str | None, tally: Tally, now: float,
                 policy: PolicyConfig, *, rpo_applies: bool, sync: SyncEvidence | None = None,
                 dns_drift: str | None = None) -> list[str]:
    """Every reason the move may not happen automatically (empty: all gates pass)."""
    reasons: list[str] = []
    for gate in gate_results(state, home, target, tally, now, policy, rpo_applies=rpo_applies, sync=sync,
                             dns_drift=dns_drift):
        if gate["ok"]:
            continue
        if gate["gate"] == "nothing_under_way":
            reasons.extend(tally.busy())
        else:
            reasons.append(gate["detail"])
    return reasons


def decide_cluster(state: ServiceState, service: str, home: str, tally: Tally, own_id: str,
                   engines: Sequence[VoterInfo], now: float, policy: PolicyConfig, *,
                   executors: Sequence[str] = (), rpo_applies: bool = False,
                   halted: tuple[str, str] | None = None, sync: SyncEvidence | None = None,
                   dns_drift: str | None = None) -> ClusterDecision:
    """``halted``: (id, message) of the operation of this service halted here, or None. ``sync``: what this
    voter knows of synchronous commit (engine.core.loss): confirmed, the RPO gate passes whatever the lag.
    ``dns_drift``: an unacknowledged foreign DNS change (never move over it)."""
    decision = _decide(state, service, home, tally, own_id, engines, now, policy, executors, rpo_applies, sync,
                       dns_drift)
    if halted is not None:
        decision = _blocked_by_halted(decision, service, halted)
    if state.paused:
        return ClusterDecision(DecisionKind.HOLD, f"PAUSED: {decision.message}", decision.target, None, False,
                               decision.reasons, decision.evidence)
    return decision


def _blocked_by_halted(decision: ClusterDecision, service: str, halted: tuple[str, str]) -> ClusterDecision:
    """A halted operation blocks every new runbook: a move the rules would start pages instead, naming it."""
    op_id, message = halted
    said = f"operation {op_id} is halted ({message})"
    if decision.verdict is not DecisionKind.FAILOVER:
        return ClusterDecision(decision.verdict, f"{decision.message}; {said}", decision.target, None, False,
                               decision.reasons, decision.evidence)
    grounds = decision.message.rsplit("; ", 1)[0]  # without "... acts": nobody does
    return ClusterDecision(DecisionKind.PAGE, f"halted: {said}; nothing moves for {service} until an operator "
                           f"retries or aborts it (`failover-engine operation {op_id} --retry` or `--abort`); "
                           "the rules say: "
                           f"{grounds}", decision.target, None, False, ("operation halted",), decision.evidence)


def _decide(state: ServiceState, service: str, home: str, tally: Tally, own_id: str,
            engines: Sequence[VoterInfo], now: float, policy: PolicyConfig, executors: Sequence[str],
            rpo_applies: bool, sync: SyncEvidence | None = None, dns_drift: str | None = None,
            ) -> ClusterDecision:
    active = state.active
    down_votes = tally.count(active, "down")
    own = next(v for v in tally.votes if v.voter == own_id).view
    sites = sorted({s for v in tally.fresh if v.view is not None for s in v.view.sites})
    standbys = [s for s in sites if s != active]
    target = next((s for s in standbys if tally.has(s, "up")), None)
    evidence = _evidence(tally, active, target)
    need = f"{down_votes} of {tally.voters} voters see {active} down (need {tally.majority})"
    if down_votes < tally.majority:
        if own is not None and own.sites.get(active) == "down" and len(tally.fresh) < tally.majority:
            missing = ", ".join(v.voter for v in tally.missing)
            reason = (f"holding: {active} looks down from here but only {len(tally.fresh)} of {tally.voters} "
                      f"voters answer ({missing} silent): cannot tell a dead site from a cut link, "
                      "assuming a partition")
            return ClusterDecision(DecisionKind.PAGE, reason, None, None, False, ("no quorum",), evidence)
        if down_votes:
            return ClusterDecision(DecisionKind.HOLD, f"holding: {need}", None, None, False, (), evidence)
        up_votes = tally.count(active, "up")
        if up_votes >= tally.majority:
            return ClusterDecision(DecisionKind.HOLD,
                                   f"holding: {active} is up for {up_votes} of {tally.voters} voters", None, None,
                                   False, (), evidence)
        return ClusterDecision(DecisionKind.HOLD, f"holding: {active} health not yet known ({up_votes} of "
                               f"{tally.voters} voters see it up, need {tally.majority})", None, None, False, (),
                               evidence)
    gates = gate_results(state, home, target, tally, now, policy, rpo_applies=rpo_applies, sync=sync,
                         dns_drift=dns_drift)
    evidence["gates"] = gates
    reasons = gate_reasons(state, home, target, tally, now, policy, rpo_applies=rpo_applies, sync=sync,
                           dns_drift=dns_drift)
    busy = tally.busy()
    if reasons and reasons == busy:  # only an operation or drill under way: it is being handled, no page
        return ClusterDecision(DecisionKind.HOLD, f"holding: {need}; {'; '.join(busy)}", target, None, False,
                               tuple(reasons), evidence)
    if reasons:
        return ClusterDecision(DecisionKind.PAGE, f"paging: {need}; not moving: {'; '.join(reasons)}", target, None,
                               False, tuple(reasons), evidence)
    assert target is not None
    fresh_ids = {v.voter for v in tally.fresh}
    order = executor_order(engines, target, executors)
    executor = next((i for i in order if i in fresh_ids), None)
    if executor is None:
        return ClusterDecision(DecisionKind.PAGE, f"paging: {need}; no engine able to act answers", target, None,
                               False, ("no executor",), evidence)
    up = tally.count(target, "up")
    message = (f"failover {service} {active} -> {target}: {need}, {up} see {target} up; "
               f"{'this instance acts' if executor == own_id else executor + ' acts'}")
    return ClusterDecision(DecisionKind.FAILOVER, message, target, executor, executor == own_id, (), evidence)

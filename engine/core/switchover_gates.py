"""A switchover's preconditions as gates: every check listed with its verdict, passed ones included.

:func:`engine.core.gates.switchover_preconditions` says only what fails (the refusal); a dry run shows
the whole checklist the same way a failover's gates are shown (``GATE  OK  BLOCKING  DETAIL``).
"""

from __future__ import annotations

from engine.core.gates import Gate, GateResult, ServiceFacts, switchover_preconditions

# gate name -> the refusal codes of switchover_preconditions that fail it (can_act: any other code)
_CODES = {
    "no_drill": {"drill_in_progress"},
    "source_healthy": {"source_unhealthy"},
    "target_healthy": {"target_unhealthy"},
    "quorum": {"no_quorum"},
    "replication": {"replication_down"},
    "standby_caught_up": {"standby_lagging"},
}


def switchover_gates(f: ServiceFacts, target: str) -> GateResult:
    """Every precondition of a switchover of ``f`` to ``target`` as a blocking gate (ok or with why not)."""
    problems = switchover_preconditions(f, target)
    known = set().union(*_CODES.values())
    passed = {
        "can_act": "no runbook in flight, not paused, no unacknowledged DNS drift",
        "no_drill": "no drill running",
        "source_healthy": f"{f.active} is up",
        "target_healthy": f"{target} is up",
        "quorum": "quorum held" if f.quorum_ok else "quorum not known yet (only a lost quorum blocks)",
        "replication": "replication to the standby is up",
        "standby_caught_up": (f"standby {f.lag_s:.1f}s behind, within switchover_max_lag {f.switchover_max_lag:g}s"
                              if f.lag_s is not None else "within switchover_max_lag"),
    }
    names = list(passed) if f.has_database else [n for n in passed if n not in ("replication", "standby_caught_up")]
    gates = []
    for name in names:
        failed = [p for p in problems if (p.code not in known if name == "can_act" else p.code in _CODES[name])]
        gates.append(Gate(name, not failed, "; ".join(p.detail for p in failed) if failed else passed[name]))
    if f.has_database and any(p.code == "replication_down" for p in problems):
        gates = [g if g.gate != "standby_caught_up" else Gate(g.gate, False, "unknown while replication is down")
                 for g in gates]
    return GateResult(tuple(gates))

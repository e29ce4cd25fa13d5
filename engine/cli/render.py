"""How the CLI shows what the engine answers: aligned tables, times, the status and an operation's steps."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from engine.cli.client import PROG


# -- formatting ----------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> str:
    """Plain-text aligned columns; the last column is not padded."""
    cells = [[_cell(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        line = "  ".join(c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r))
        lines.append(indent + line.rstrip())
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return " ".join(str(v).split())


def ts(at: Any) -> str:
    if not isinstance(at, int | float):
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def secs(v: Any) -> str:
    if not isinstance(v, int | float):
        return "-"
    if v < 1:
        return f"{v * 1000:.0f}ms"
    if v < 120:
        return f"{v:.1f}s"
    return f"{v / 60:.1f}m"


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _path(*parts: str) -> str:
    return "/".join(urllib.parse.quote(p, safe="") for p in parts)




def _brake_lines(s: dict[str, Any]) -> list[str]:
    """What holds the engine back: an open breaker, a pause's expiry, a cool-down, a self-fence, a DNS drift,
    a replication slot over its alert size, a plan."""
    lines = []
    breaker = s.get("breaker") or {}
    if breaker.get("open"):
        lines.append(f"CIRCUIT BREAKER OPEN since {ts(breaker.get('since'))}: {breaker.get('reason')} "
                     f"(re-arm: {PROG} arm SERVICE --reason ...)")
    if s.get("paused") and s.get("paused_until"):
        lines.append(f"paused until {ts(s['paused_until'])} UTC (then it resumes by itself)")
    if s.get("cooldown_until") and s["cooldown_until"] > time.time():
        lines.append(f"cool-down until {ts(s['cooldown_until'])} UTC: no automatic move before")
    fenced = s.get("self_fenced")
    if fenced:
        lines.append(f"SELF-FENCED at {ts(fenced.get('at'))}: {fenced.get('reason')} (unfence: {PROG} unfence ...)")
    drift = s.get("dns_drift")
    if drift:
        state = ("acknowledged" if drift.get("acknowledged")
                 else f"moves refused; acknowledge: {PROG} acknowledge-drift SERVICE --reason ...")
        lines.append(f"DNS DRIFT since {ts(drift.get('since'))} UTC ({state}): {drift.get('summary')}")
    for slot in s.get("replication_slots") or ():
        if slot.get("over"):
            lines.append(f"REPLICATION SLOT {slot.get('slot')} on {slot.get('site')} retains "
                         f"{slot.get('retained_bytes')} bytes of WAL (alert at {slot.get('alert_bytes')}): "
                         "see runbooks/replication-slot-retention.md")
    for seen in s.get("provider_vantage") or ():
        if seen.get("disagreement"):
            lines.append(f"PROVIDER DISAGREES ({seen.get('counts_as')}): {seen.get('disagreement')}")
    plan = s.get("scheduled_switchover")
    if plan:
        lines.append(f"switchover to {plan.get('target')} scheduled for {ts(plan.get('at'))} UTC "
                     f"by {plan.get('actor')}")
    return lines


def _rto_worst(rto: dict[str, Any]) -> str | None:
    """``289.74s / 300s``: the worst case the configuration allows beside the service's rto_slo."""
    if rto.get("worst_case_s") is None:
        return None
    slo = rto.get("rto_slo_s")
    return f"{secs(rto['worst_case_s'])} / {secs(slo)}" if slo is not None else secs(rto["worst_case_s"])


def render_status(data: dict[str, Any]) -> str:
    inst = data.get("instance") or {}
    quorum = data.get("quorum")
    out = [f"{inst.get('id', '?')} ({inst.get('role', '?')} in {inst.get('site', '?')}, "
           f"version {inst.get('version', '?')}) at {ts(data.get('time'))} UTC: "
           f"{'healthy' if data.get('healthy') else 'NOT HEALTHY'}, quorum "
           f"{'n/a' if quorum is None else ('yes' if quorum else 'LOST')}", ""]
    services: dict[str, Any] = data.get("services") or {}
    rows = []
    for name, s in services.items():
        op = s.get("operation")
        rto = s.get("rto") or {}
        rows.append([name, s.get("active"), s.get("epoch"), bool(s.get("paused")), secs(s.get("lag_s")),
                     f"{op.get('id')} {op.get('state')}" if op else None, s.get("dns"),
                     _rto_worst(rto), secs((rto.get("measured") or {}).get("seconds"))])
    out.append(table(["SERVICE", "ACTIVE", "EPOCH", "PAUSED", "LAG", "OPERATION", "DNS", "RTO WORST/SLO",
                      "RTO MEASURED"], rows))
    for name, s in services.items():
        out.append("")
        decision = s.get("decision") or {}
        out.append(f"{name}: {decision.get('message') or 'no decision yet'}")
        op = s.get("operation")
        if op and op.get("message"):
            out.append(f"  operation {op.get('id')} {op.get('state')}: {op['message']}")
        out.extend(f"  {line}" for line in _brake_lines(s))
        measured = (s.get("rto") or {}).get("measured")
        if measured:
            out.append(f"  RTO measured {secs(measured.get('seconds'))} in {measured.get('in')} "
                       f"({measured.get('from')}); worst case from the configuration {_rto_worst(s.get('rto') or {})}")
        rows = []
        for site, view in (s.get("sites") or {}).items():
            for sig in view.get("signals") or [{}]:
                rows.append([site, view.get("role"), view.get("health"), *_signal_row(sig)])
        for sig in s.get("shared_dependencies") or []:
            rows.append(["(shared)", None, None, *_signal_row(sig)])
        if s.get("replication"):
            rows.append(["(replication)", None, None, *_signal_row(s["replication"])])
        out.append(table(["SITE", "ROLE", "HEALTH", "SIGNAL", "STATE", "FAILS", "LATENCY", "LAST"], rows, "  "))
        rec = s.get("last_reconciliation")
        if isinstance(rec, dict) and rec:
            out.append(f"  {reconciliation_sentence(rec)}")
    peers = data.get("peers") or []
    if peers:
        out.append("")
        out.append(table(["PEER", "HEARD", "SENT", "LAST ERROR"],
                         [[p.get("id"), _ago(p.get("heard_age_s")), _ago(p.get("sent_age_s")), p.get("last_error")]
                          for p in peers]))
    return "\n".join(out)


def reconciliation_sentence(rec: dict[str, Any]) -> str:
    """The last reconciliation as one sentence: when, which pair, how long, and what it found."""
    pair = (f" of {rec['primary']} (primary) against {rec['standby']}"
            if rec.get("primary") and rec.get("standby") else "")
    took = f", took {secs(rec['seconds'])}" if isinstance(rec.get("seconds"), int | float) else ""
    when = f" at {ts(rec['at'])} UTC" if isinstance(rec.get("at"), int | float) else ""
    found = rec.get("sentence") or {True: "the databases were identical", False: "the databases differed",
                                    None: "no result recorded"}.get(rec.get("identical"), "no result recorded")
    return f"Last reconciliation{pair}{when}{took}: {str(found).rstrip('.')}."


def _signal_row(sig: dict[str, Any]) -> list[Any]:
    last = sig.get("last") or {}
    latency = last.get("latency_ms")
    return [sig.get("name"), sig.get("state"), sig.get("consecutive_failures"),
            None if latency is None else f"{latency:g}ms", last.get("reason")]


def _ago(v: Any) -> str:
    return "never" if v is None else f"{secs(v)} ago"




def render_operation(op: dict[str, Any]) -> str:
    took = ""
    if isinstance(op.get("finished_at"), int | float) and isinstance(op.get("created_at"), int | float):
        took = f", took {secs(op['finished_at'] - op['created_at'])}"
    out = [f"operation {op.get('id')}: {op.get('kind')} of {op.get('service')} {op.get('source')} -> "
           f"{op.get('target')} (epoch {op.get('epoch_from')} -> {op.get('epoch_to')}): {op.get('state')}{took}",
           f"  started {ts(op.get('created_at'))} UTC, trigger {op.get('trigger')}"
           + (f" by {op['actor']}" if op.get("actor") else "") + (f": {op['reason']}" if op.get("reason") else "")]
    if op.get("message"):
        out.append(f"  {op['message']}")
    steps = ordered_steps(op)
    if steps:
        out.append("")
        out.append(table(["STEP", "STATE", "ATTEMPTS", "DURATION", "RESULT"],
                         [[name, st.get("state"), st.get("attempts"), secs(st.get("duration_s")), _step_result(st)]
                          for name, st in steps], "  "))
    return "\n".join(out)


def ordered_steps(op: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Steps in the order they ran (the journal stores them with sorted keys)."""
    steps = [(str(k), v) for k, v in (op.get("steps") or {}).items() if isinstance(v, dict)]
    return sorted(steps, key=lambda kv: (not isinstance(kv[1].get("started_at"), int | float),
                                         kv[1].get("started_at") or 0.0))


def _step_result(st: dict[str, Any]) -> str:
    if st.get("state") == "failed" or (st.get("error") and not st.get("summary")):
        return f"error: {st.get('error')}"
    return str(st.get("summary") or "")

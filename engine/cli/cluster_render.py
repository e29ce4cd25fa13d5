"""``failover-engine status --cluster``: every voter's view side by side, as a table per service."""

from __future__ import annotations

from typing import Any

from engine.cli.render import secs, table

OPERATOR_KEYS = ("pause", "breaker", "arm", "drift_ack")


def _operator_cell(entry: dict[str, Any] | None) -> str:
    """One operator key as a voter holds it: its value in a word and its version@writer."""
    if entry is None:
        return "-"
    value = entry.get("value") or {}
    if "paused" in value:
        word = "paused" if value.get("paused") else "resumed"
    elif "open" in value:
        word = "open" if value.get("open") else "closed"
    elif "armed_at" in value:
        word = "armed"
    else:
        word = "acked" if value.get("key") else "set"
    return f"{word} v{entry.get('version')}@{entry.get('voter')}"


def render_cluster(data: dict[str, Any], only: str | None = None) -> str:
    voters = {v["id"]: v for v in data.get("voters") or []}
    out = [f"as seen by {data.get('instance')}"]
    for name, svc in sorted((data.get("services") or {}).items()):
        if only is not None and name != only:
            continue
        disagree = svc.get("disagree") or []
        out.append("")
        out.append(f"{name}: " + ("voters agree" if not disagree else "voters DISAGREE on " + ", ".join(disagree)))
        sites = sorted({s for view in svc["views"].values() if view for s in view.get("sites", {})})
        rows = []
        for voter_id, view in svc["views"].items():
            voter = voters.get(voter_id, {})
            who = voter_id + (" (self)" if voter.get("self") else "")
            age = secs(voter.get("age_s")) if voter.get("age_s") is not None else "never heard"
            if view is None:
                rows.append([who, age, *["-"] * (4 + len(sites) + len(OPERATOR_KEYS))])
                continue
            operator = view.get("operator") or {}
            rows.append([who, age, view.get("active"), view.get("epoch"),
                         *[view.get("sites", {}).get(s) for s in sites], secs(view.get("lag_s")),
                         view.get("paused"), *[_operator_cell(operator.get(k)) for k in OPERATOR_KEYS]])
        out.append(table(["voter", "age", "active", "epoch", *sites, "lag", "paused", *OPERATOR_KEYS], rows,
                         indent="  "))
        for conflict in svc.get("conflicts") or []:
            kept, lost = conflict["kept"], conflict["overruled"]
            out.append(f"  conflict on {conflict['key']} at version {conflict['version']}: {kept['voter']}'s "
                       f"{kept['value']} kept, {lost['voter']}'s {lost['value']} overruled")
    return "\n".join(out)

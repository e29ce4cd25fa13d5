"""``failover-engine drill run|list|report``: drills through a running engine's API.

    failover-engine drill run --kind shadow shop --reason "monthly check" --wait
    failover-engine drill list --service shop
    failover-engine drill report DRILL_ID --html report.html

``run`` exits 0 when the drill started (or, with ``--wait``, passed), 1 when refused or failed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli.client import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    PROG,
    Client,
    CliError,
    _connection_parent,
    _positive,
    _reason,
    run,
)
from engine.cli.render import (
    _path,
    emit_json,
    secs,
    table,
    ts,
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    conn = _connection_parent()
    drill = sub.add_parser("drill", help="run drills and read their reports (shadow: changes nothing; full: a real "
                                         "failover and failback)",
                           description="run drills and read their reports: `drill run --kind shadow|full SERVICE "
                                       "--reason R [--wait]`, `drill list`, `drill report ID [--html FILE]`")
    dsub = drill.add_subparsers(dest="drill_command", required=True, metavar="run|list|report")

    p = dsub.add_parser("run", parents=[conn], help="start a drill now (operator token)")
    p.add_argument("service")
    p.add_argument("--kind", choices=["shadow", "full"], required=True)
    p.add_argument("--reason", required=True, type=_reason, help="why (recorded in the audit log)")
    p.add_argument("--dry-run", action="store_true", help="would it start? (exit 1 if it would be refused)")
    p.add_argument("--wait", action="store_true", help="follow the drill to its end (exit 1 unless it passed)")
    p.add_argument("--wait-timeout", type=_positive, default=3600.0)
    p.add_argument("--poll", type=_positive, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=lambda args: run(args, cmd_run))

    p = dsub.add_parser("list", parents=[conn], help="drills, newest first")
    p.add_argument("--service")
    p.add_argument("--kind", choices=["shadow", "full"])
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=lambda args: run(args, cmd_list))

    p = dsub.add_parser("report", parents=[conn], help="one drill: checks and phases against their SLOs")
    p.add_argument("id")
    p.add_argument("--html", metavar="FILE", help="write the HTML report (phase timeline, inline SVG) to FILE")
    p.set_defaults(func=lambda args: run(args, cmd_report))


def cmd_run(args: argparse.Namespace, client: Client) -> int:
    body: dict[str, Any] = {"service": args.service, "kind": args.kind, "reason": args.reason}
    if args.dry_run:
        body["dry_run"] = True
    _, data = client.post("/v1/drills", body)
    if args.dry_run:
        if args.json:
            emit_json(data)
        else:
            print(f"{args.kind} drill of {args.service} would {data.get('would')}")
            for r in data.get("reasons") or []:
                print(f"  - {r.get('code')}: {r.get('detail')}")
        return EXIT_OK if data.get("would") == "start" else EXIT_REFUSED
    drill_id = str(data.get("drill"))
    if isinstance(data.get("hold_s"), int | float) and not args.json:
        print(f"note: a full drill holds {args.service} on the standby for {secs(data['hold_s'])} "
              "(drills.full.hold) before failing back; it takes at least that long", file=sys.stderr)
    if not args.wait:
        if args.json:
            emit_json(data)
        else:
            print(f"{args.kind} drill {drill_id} of {args.service} started; follow it: {PROG} drill report {drill_id}")
        return EXIT_OK
    if not args.json:
        print(f"{args.kind} drill {drill_id} of {args.service} started")
    deadline = time.monotonic() + args.wait_timeout
    seen = 0
    last: dict[str, bool] = {}  # per check (its round stripped): the result printed last
    while True:
        drill = client.get(f"/v1/drills/{_path(drill_id)}")
        checks = drill.get("checks") or []
        if not args.json:
            for line in new_check_lines(checks[seen:], last):
                print(line)
        seen = len(checks)
        if drill.get("state") != "running":
            break
        if time.monotonic() > deadline:
            raise CliError(EXIT_REFUSED, f"{PROG}: drill {drill_id} still running after {args.wait_timeout:g}s")
        time.sleep(args.poll)
    if args.json:
        emit_json(drill)
    else:
        print(render_drill(drill, checks=False))
    return EXIT_OK if drill.get("state") == "passed" else EXIT_REFUSED


def new_check_lines(checks: list[dict[str, Any]], last: dict[str, bool]) -> list[str]:
    """One line per change: a check repeated every round of the hold (``hold:17:serving``) is printed
    when it first appears and again only when its result changes, with the rounds it stayed the same."""
    out = []
    for c in checks:
        name = str(c.get("check"))
        key = re.sub(r":\d+:", ":", name)
        ok = bool(c.get("ok"))
        if last.get(key) is ok:
            continue
        last[key] = ok
        round_ = re.search(r":(\d+):", name)
        where = f" (from round {round_.group(1)})" if round_ else ""
        out.append(f"  {'ok    ' if ok else 'FAILED'} {key}{where}: {c.get('detail')}")
    return out


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    if not 1 <= args.limit <= 500:
        raise CliError(EXIT_USAGE, f"{PROG}: --limit must be between 1 and 500")
    data = client.get("/v1/drills", {"service": args.service, "kind": args.kind, "limit": args.limit})
    if args.json:
        emit_json(data)
        return EXIT_OK
    rows = [[d.get("id"), d.get("service"), d.get("kind"), d.get("state"), ts(d.get("started_at")),
             secs(d.get("duration_s")), "yes" if d.get("slo_met") else "NO", d.get("trigger")]
            for d in data.get("drills") or []]
    print(table(["DRILL", "SERVICE", "KIND", "STATE", "STARTED", "TOOK", "SLOS MET", "TRIGGER"], rows)
          if rows else "no drills yet")
    return EXIT_OK


def cmd_report(args: argparse.Namespace, client: Client) -> int:
    drill = client.get(f"/v1/drills/{_path(args.id)}")
    if args.html:
        from engine.http.drill_report import render_report

        try:
            Path(args.html).write_text(render_report(drill), encoding="utf-8")
        except OSError as exc:
            raise CliError(EXIT_USAGE, f"{PROG}: cannot write {args.html}: {exc.strerror or exc}") from None
        if not args.json:
            print(f"wrote {args.html}")
    if args.json:
        emit_json(drill)
    elif not args.html:
        print(render_drill(drill))
    return EXIT_OK


def render_drill(drill: dict[str, Any], *, checks: bool = True) -> str:
    out = [f"{drill.get('kind')} drill {drill.get('id')} of {drill.get('service')}: {drill.get('state')}",
           f"  {drill.get('sentence') or ''}",
           f"  started {ts(drill.get('started_at'))}, took {secs(drill.get('duration_s'))}"]
    phases = drill.get("phases") or []
    if phases:
        out.append("")
        out.append(table(["PHASE", "TOOK", "SLO", "MET"],
                         [[p.get("phase"), secs(p.get("seconds")), secs(p.get("slo_s")),
                           "yes" if p.get("met") else "NO"] for p in phases], "  "))
    if checks and drill.get("checks"):
        out.append("")
        out.append(table(["CHECK", "RESULT", "DETAIL"],
                         [[c.get("check"), "ok" if c.get("ok") else "FAILED", c.get("detail")]
                          for c in drill.get("checks") or []], "  "))
    return "\n".join(out)

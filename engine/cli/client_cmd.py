"""``failover-engine status|failover|failback|switchover|pause|resume|arm|acknowledge-drift|events|operation``: commands
that speak to a running engine's API (the client: :mod:`engine.cli.client`; output: :mod:`engine.cli.render`).

Output is plain aligned tables; ``--json`` prints the API's answers as they are.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from engine.cli.client import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    FINAL_STATES,
    PROG,
    Client,
    CliError,
    _connection_parent,
    _later,
    _positive,
    _reason,
    _when,
    run,
)
from engine.cli.cluster_render import render_cluster
from engine.cli.render import (
    _path,
    _step_result,
    emit_json,
    ordered_steps,
    render_operation,
    render_status,
    secs,
    table,
    ts,
)
from engine.core.event_kinds import EVENT_KINDS


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this module's subcommands."""
    conn = _connection_parent()

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace, Client], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[conn])
        p.set_defaults(func=lambda args: run(args, func))
        parser: argparse.ArgumentParser = p
        return parser

    p = add("status", "show a running engine's services, sites, signals, peers and quorum", cmd_status)
    p.add_argument("service", nargs="?", help="only this service")
    p.add_argument("--cluster", action="store_true",
                   help="every voter's view side by side (GET /v1/cluster), and where they disagree")

    _register_moves(add)

    for kind in ("pause", "resume"):
        what = ("stop automatic action on a service (it keeps observing)" if kind == "pause"
                else "let the engine act on a service again")
        p = add(kind, what, cmd_pause)
        p.add_argument("service")
        p.add_argument("--reason", required=True, type=_reason, help="why (recorded in the audit log)")
        if kind == "pause":
            expiry = p.add_mutually_exclusive_group()
            expiry.add_argument("--until", type=_later,
                                help="resume by itself then (epoch seconds, ISO 8601, or from now: 30m, 2h)")
            expiry.add_argument("--ttl", type=_positive, help="resume by itself after this long (10m, 2h, or seconds)")
            p.add_argument("--replace", action="store_true",
                           help="replace the pause in force (without it a second pause is refused)")
        p.set_defaults(kind=kind)

    for kind, what in (("arm", "re-arm automatic action after the circuit breaker opened"),
                       ("unfence", "allow writes again on the active site's database after a self-fence"),
                       ("acknowledge-drift", "accept the DNS drift seen now: moves may start again until the "
                                             "records drift differently")):
        p = add(kind, f"{what} (operator token)", cmd_simple)
        p.add_argument("service")
        p.add_argument("--reason", required=True, type=_reason, help="why (recorded in the audit log)")
        if kind == "unfence":
            p.add_argument("--force", action="store_true", help="even while this engine is cut off from the voters")
        p.set_defaults(kind=kind)

    p = add("events", "the audit log, newest first", cmd_events)
    p.add_argument("--service")
    p.add_argument("--kind", choices=EVENT_KINDS, metavar="KIND", help=f"one of: {', '.join(EVENT_KINDS)}")
    p.add_argument("--since", type=_when, help="epoch seconds, ISO 8601 (UTC) or an age (15m, 2h, 1d)")
    p.add_argument("--until", type=_when, help="same forms as --since")
    p.add_argument("--limit", type=int, default=50, help="events per page, 1..1000 (default 50)")
    p.add_argument("--before-id", type=int, help="older than this event id (the next page)")

    p = add("operation", "list runbooks, show one with its steps, or retry/abort a halted one", cmd_operation)
    p.add_argument("id", nargs="?", help="the operation id (without it: list operations)")
    p.add_argument("--service", help="list only this service's operations")
    p.add_argument("--limit", type=int, default=20, help="operations to list, 1..500 (default 20)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--retry", action="store_true", help="run a halted runbook again from where it stopped")
    action.add_argument("--abort", action="store_true", help="give up a halted runbook")
    p.add_argument("--reason", type=_reason, help="why (required with --retry or --abort)")
    _wait_args(p)


def _register_moves(add: Callable[[str, str, Callable[[argparse.Namespace, Client], int]],
                                   argparse.ArgumentParser]) -> None:
    for kind in ("failover", "failback", "switchover"):
        what = {"failover": "move a service to its standby site",
                "failback": "move a service back to its home site (a switchover when both sites are healthy)",
                "switchover": "planned move with both sites healthy: TTL lowered, writes fenced and drained, "
                              "standby promoted, old primary made the standby; nothing acknowledged is lost"}[kind]
        p = add(kind, f"{what} (needs an operator token and a reason)", cmd_move)
        p.add_argument("service")
        if kind == "switchover":
            p.add_argument("--target", help="the site to move to (default: the only other site)")
            p.add_argument("--scheduled-at", type=_later,
                           help="start then instead of now (epoch seconds, ISO 8601, or from now: 30m, 2h)")
            p.add_argument("--cancel", action="store_true", help="cancel the scheduled switchover")
        elif kind == "failover":
            p.add_argument("--target", help="the site to move to (default: the only other site)")
            p.add_argument("--force", action="store_true",
                           help="go ahead past blocking gates (recorded in the audit log with who and why)")
            p.add_argument("--fence-first", action="store_true",
                           help="the active site is healthy: fence its database first (the fence must succeed)")
        else:
            p.add_argument("--acknowledge-reconciliation", action="store_true",
                           help="go ahead although the last reconciliation found differences")
            p.add_argument("--prepare", action="store_true",
                           help="do not move yet: reconcile the pair and replicate the active database back to "
                                "the home site (waits up to max(--timeout, 300) s)")
        p.add_argument("--reason", required=True, type=_reason, help="why (recorded in the audit log)")
        p.add_argument("--dry-run", action="store_true",
                       help="show the plan and every gate, change nothing (exit 1 if it would be refused)")
        _wait_args(p)
        p.set_defaults(kind=kind)


def _wait_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="follow the runbook until it is done or halted, printing each step (exit 1 unless done)")
    p.add_argument("--wait-timeout", type=_positive, default=600.0, help="give up waiting after this many seconds")
    p.add_argument("--poll", type=_positive, default=0.5, help=argparse.SUPPRESS)




# -- status --------------------------------------------------------------------------------------
def _cluster_status(args: argparse.Namespace, client: Client) -> int:
    data = client.get("/v1/cluster")
    services: dict[str, Any] = data.get("services") or {}
    if args.service is not None and args.service not in services:
        raise CliError(EXIT_USAGE, f"{PROG}: no service named {args.service!r}; known: {sorted(services)}")
    if args.json:
        emit_json(data if args.service is None else {**data, "services": {args.service: services[args.service]}})
        return EXIT_OK
    print(render_cluster(data, args.service))
    return EXIT_OK


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    if args.cluster:
        return _cluster_status(args, client)
    data = client.get("/v1/status?signals=all")
    services: dict[str, Any] = data.get("services") or {}
    if args.service is not None:
        if args.service not in services:
            raise CliError(EXIT_USAGE, f"{PROG}: no service named {args.service!r}; known: {sorted(services)}")
        services = {args.service: services[args.service]}
        data = {**data, "services": services}
    if args.json:
        emit_json(data)
        return EXIT_OK
    print(render_status(data))
    return EXIT_OK




# -- events --------------------------------------------------------------------------------------
def cmd_events(args: argparse.Namespace, client: Client) -> int:
    if not 1 <= args.limit <= 1000:
        raise CliError(EXIT_USAGE, f"{PROG}: --limit must be between 1 and 1000")
    data = client.get("/v1/events", {"service": args.service, "kind": args.kind, "since": args.since,
                                     "until": args.until, "limit": args.limit, "before_id": args.before_id})
    if args.json:
        emit_json(data)
        return EXIT_OK
    events = data.get("events") or []
    if not events:
        print("no events")
        return EXIT_OK
    print(table(["ID", "TIME (UTC)", "SERVICE", "KIND", "ACTOR", "MESSAGE"],
                [[e.get("id"), ts(e.get("at")), e.get("service"), e.get("kind"), e.get("actor"), e.get("message")]
                 for e in events]))
    if data.get("next_before_id") is not None:
        print(f"\nolder events: add --before-id {data['next_before_id']}")
    return EXIT_OK


# -- pause and resume ----------------------------------------------------------------------------
def cmd_pause(args: argparse.Namespace, client: Client) -> int:
    body: dict[str, Any] = {"reason": args.reason}
    if getattr(args, "until", None) is not None:
        body["until"] = args.until
    if getattr(args, "ttl", None) is not None:
        body["ttl"] = args.ttl
    if getattr(args, "replace", False):
        body["replace"] = True
    _, data = client.post(f"/v1/services/{_path(args.service)}/{args.kind}", body)
    if args.json:
        emit_json(data)
        return EXIT_OK
    if data.get("paused"):
        until = f" until {ts(data['until'])} UTC (then it resumes by itself)" if data.get("until") else ""
        print(f"{data.get('service', args.service)} paused{until}: the engine keeps observing but will not act "
              f"(manual failover still works); undo with `{PROG} resume {args.service} --reason ...`")
    else:
        print(f"{data.get('service', args.service)} resumed: the engine acts on its decisions again")
    return EXIT_OK


def cmd_simple(args: argparse.Namespace, client: Client) -> int:
    body: dict[str, Any] = {"reason": args.reason}
    if getattr(args, "force", False):
        body["force"] = True
    _, data = client.post(f"/v1/services/{_path(args.service)}/{args.kind}", body)
    if args.json:
        emit_json(data)
    elif args.kind == "arm":
        print(f"{args.service}: automatic action armed" + (" (the circuit breaker was open)" if data.get("was_open")
                                                           else ""))
    elif args.kind == "acknowledge-drift":
        drift = data.get("acknowledged") or {}
        print(f"{args.service}: DNS drift acknowledged ({drift.get('summary')}); moves may start again until the "
              "records drift differently")
    else:
        print(f"{args.service}: database in {data.get('site')} accepts writes again: {data.get('detail')}")
    return EXIT_OK


# -- failover and failback -----------------------------------------------------------------------
def cmd_move(args: argparse.Namespace, client: Client) -> int:
    if getattr(args, "prepare", False):
        return _prepare_failback(args, client)
    body: dict[str, Any] = {"reason": args.reason}
    if args.dry_run:
        body["dry_run"] = True
    if getattr(args, "target", None):
        body["target"] = args.target
    if getattr(args, "force", False):
        body["force"] = True
    if getattr(args, "fence_first", False):
        body["fence_first"] = True
    if getattr(args, "scheduled_at", None) is not None:
        body["scheduled_at"] = args.scheduled_at
    if getattr(args, "cancel", False):
        body["cancel"] = True
    if getattr(args, "acknowledge_reconciliation", False):
        body["acknowledge_reconciliation"] = True
    try:
        status, data = client.post(f"/v1/services/{_path(args.service)}/{args.kind}", body)
    except CliError as exc:
        if isinstance(exc.body, dict) and exc.body.get("error") == "not_found":  # the route, not the service
            exc.message += f"\n  this engine has no {args.kind} endpoint: is it an older version?"
        raise
    if args.dry_run or data.get("dry_run"):
        return _print_dry_run(args, data)
    if "cancelled" in data:
        if args.json:
            emit_json(data)
        else:
            print(f"{args.service}: " + ("the scheduled switchover is cancelled" if data["cancelled"]
                                         else "no switchover was scheduled"))
        return EXIT_OK
    if data.get("scheduled_at") is not None:
        if args.json:
            emit_json(data)
        else:
            print(f"{args.kind} of {args.service} to {data.get('target')} scheduled for {ts(data['scheduled_at'])} "
                  f"UTC; cancel it with `{PROG} switchover {args.service} --cancel --reason ...`")
        return EXIT_OK
    op_id = data.get("operation")
    if not op_id:
        raise CliError(EXIT_REFUSED, f"{PROG}: the engine answered {status} without an operation id", data)
    if not args.json:
        print(f"{args.kind} of {data.get('service', args.service)} {data.get('source', '?')} -> "
              f"{data.get('target', '?')} started: operation {op_id}")
        for r in data.get("forced_past") or []:
            print(f"  forced past: {r}")
    if not args.wait:
        if args.json:
            emit_json(data)
        else:
            print(f"follow it: {PROG} operation {op_id} --wait")
        return EXIT_OK
    return wait_for(client, str(op_id), args)


def _prepare_failback(args: argparse.Namespace, client: Client) -> int:
    if args.dry_run or args.wait:
        raise CliError(EXIT_USAGE, f"{PROG}: --prepare goes alone (no --dry-run or --wait)")
    body: dict[str, Any] = {"reason": args.reason}
    if args.acknowledge_reconciliation:
        body["acknowledge_reconciliation"] = True
    _, data = client.post(f"/v1/services/{_path(args.service)}/prepare-failback", body,
                          timeout=max(args.timeout, 300.0))
    if args.json:
        emit_json(data)
        return EXIT_OK
    print(f"failback of {args.service} prepared: {data.get('sentence') or 'ok'}")
    if data.get("reconciliation"):
        print(f"  reconciliation: {data['reconciliation']}")
    print(f"next: {PROG} failback {args.service} --dry-run --reason ...")
    return EXIT_OK


def _print_dry_run(args: argparse.Namespace, data: dict[str, Any]) -> int:
    would = str(data.get("would", "?"))
    code = EXIT_OK if would == "start" else EXIT_REFUSED
    if args.json:
        emit_json(data)
        return code
    epoch = data.get("epoch") or {}
    span = f" (epoch {epoch.get('from')} -> {epoch.get('to')})" if epoch else ""
    print(f"dry run: {args.kind} of {data.get('service', args.service)} {data.get('source', '?')} -> "
          f"{data.get('target', '?')} would {would.upper()}{span}; nothing was changed")
    print()
    print(table(["GATE", "OK", "BLOCKING", "DETAIL"],
                [[g.get("gate"), g.get("ok"), g.get("blocking"), g.get("detail")] for g in data.get("gates") or []]))
    if data.get("plan"):
        print()
        print("plan: " + " -> ".join(str(s) for s in data["plan"]))
    reasons = data.get("reasons") or []
    if reasons:
        print()
        print("refused because:" if would != "start" else "blocking gates (forced past):")
        for r in reasons:
            print(f"  - {r}")
    return code


# -- operations ----------------------------------------------------------------------------------
def cmd_operation(args: argparse.Namespace, client: Client) -> int:
    if (args.retry or args.abort) and not args.id:
        raise CliError(EXIT_USAGE, f"{PROG}: --retry and --abort need an operation id")
    if (args.retry or args.abort) and not args.reason:
        raise CliError(EXIT_USAGE, f"{PROG}: --retry and --abort need --reason")
    if args.id is None:
        if args.wait:
            raise CliError(EXIT_USAGE, f"{PROG}: --wait needs an operation id")
        return _list_operations(args, client)
    if args.retry or args.abort:
        verb = "retry" if args.retry else "abort"
        _, data = client.post(f"/v1/operations/{_path(args.id)}/{verb}", {"reason": args.reason})
        if not args.json:
            print(f"operation {data.get('operation', args.id)} {'retried' if args.retry else 'aborted'}: "
                  f"{data.get('state', '?')}")
        if args.retry and args.wait:
            return wait_for(client, args.id, args)
        if args.json:
            emit_json(data)
        return EXIT_OK
    if args.wait:
        return wait_for(client, args.id, args)
    op = client.get(f"/v1/operations/{_path(args.id)}")
    if args.json:
        emit_json(op)
    else:
        print(render_operation(op))
    return EXIT_OK


def _list_operations(args: argparse.Namespace, client: Client) -> int:
    if not 1 <= args.limit <= 500:
        raise CliError(EXIT_USAGE, f"{PROG}: --limit must be between 1 and 500")
    data = client.get("/v1/operations", {"service": args.service, "limit": args.limit})
    if args.json:
        emit_json(data)
        return EXIT_OK
    ops = data.get("operations") or []
    if not ops:
        print("no operations")
        return EXIT_OK
    print(table(["ID", "SERVICE", "KIND", "MOVE", "STATE", "TRIGGER", "ACTOR", "CREATED (UTC)", "MESSAGE"],
                [[o.get("id"), o.get("service"), o.get("kind"), f"{o.get('source')} -> {o.get('target')}",
                  o.get("state"), o.get("trigger"), o.get("actor"), ts(o.get("created_at")), o.get("message")]
                 for o in ops]))
    return EXIT_OK




def wait_for(client: Client, op_id: str, args: argparse.Namespace) -> int:
    """Poll an operation until it is final, printing every step as it finishes; 0 only when done."""
    deadline = time.monotonic() + args.wait_timeout
    seen: dict[str, tuple[Any, Any]] = {}
    unreachable_since: float | None = None
    path = f"/v1/operations/{_path(op_id)}"
    while True:
        try:
            op = client.get(path)
            unreachable_since = None
        except CliError as exc:
            if exc.code != EXIT_UNREACHABLE:
                raise
            # the engine may be restarting (a runbook resumes from the journal): keep trying a while
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > max(10.0, 3 * args.timeout) or time.monotonic() > deadline:
                raise
            time.sleep(args.poll)
            continue
        for name, st in ordered_steps(op):
            state, attempts = st.get("state"), st.get("attempts")
            if state in ("done", "skipped", "failed") and seen.get(name) != (state, attempts) and not args.json:
                again = state == "failed" or (isinstance(attempts, int) and attempts > 1)
                retry = f"attempt {attempts}: " if again else ""
                print(f"  {name:<12} {state:<8} {secs(st.get('duration_s')):>7}  {retry}{_step_result(st)}",
                      flush=True)
            seen[name] = (state, attempts)
        state = op.get("state")
        if state in FINAL_STATES:
            if args.json:
                emit_json(op)
            else:
                print(f"operation {op_id} {state}: {op.get('message') or ''}".rstrip(": "))
            if state == "halted" and not args.json:
                print(f"  fix the cause, then: {PROG} operation {op_id} --retry --reason ... "
                      f"(or --abort)", file=sys.stderr)
            return EXIT_OK if state == "done" else EXIT_REFUSED
        if time.monotonic() > deadline:
            raise CliError(EXIT_REFUSED, f"{PROG}: operation {op_id} is still {state} after {args.wait_timeout:g}s; "
                                         f"follow it with `{PROG} operation {op_id} --wait`", op)
        time.sleep(args.poll)

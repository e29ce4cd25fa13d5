"""``failover-engine status|failover|failback|pause|resume|events|operation``: a client of a running
engine's API.

The engine is found with ``--url`` or ``FAILOVER_ENGINE_URL`` (default ``http://127.0.0.1:8080``); the
bearer token comes from ``--token``, ``--token-file`` or ``FAILOVER_ENGINE_TOKEN`` (the environment or a
file keep it out of the process list). HTTPS is verified against the system roots or ``--ca-file``;
``--insecure`` skips verification. Every request has a timeout (``--timeout``, default 10 s). Output is
plain aligned tables; ``--json`` prints the API's answers as they are. The token is never printed.

Exit codes: 0 ok; 1 the engine refused or the action failed (its reasons are printed: 401/403/409/429,
a halted runbook, a dry run that would be refused); 2 bad arguments, whether the CLI or the engine found
them (400, 404 unknown service/site/operation, 413, 422); 3 the engine cannot be reached (one line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http.client import HTTPException
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
FINAL_STATES = ("done", "halted", "stood_down", "aborted")
MAX_RESPONSE = 32 * 1024 * 1024
PROG = "failover-engine"


class CliError(Exception):
    """Stop the command with ``code`` after printing ``message`` (one or more lines) to stderr."""

    def __init__(self, code: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.body = code, message, body


# -- talking to the engine -----------------------------------------------------------------------
class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it could carry the bearer token to another host."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


class Client:
    """A small blocking JSON client; every failure becomes a :class:`CliError` with the right exit code."""

    def __init__(self, url: str, token: str | None, *, timeout: float, ca_file: str | None = None,
                 insecure: bool = False) -> None:
        self.base = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
        if self.base.startswith("https://"):
            context = ssl.create_default_context(cafile=ca_file)
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:  # never show the token, even in a debugger or a traceback
        return f"Client({self.base!r})"

    def get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            path += "?" + urllib.parse.urlencode(params)
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> tuple[int, Any]:
        return self.request_status("POST", path, body, timeout)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request_status(method, path, body)[1]

    def request_status(self, method: str, path: str, body: dict[str, Any] | None = None,
                       timeout: float | None = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json", "User-Agent": f"{PROG}-cli"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=timeout or self.timeout) as resp:
                status, raw = resp.status, resp.read(MAX_RESPONSE)
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                raw = exc.read(MAX_RESPONSE)
            except (OSError, HTTPException):
                raw = b""
            finally:
                exc.close()
        except (urllib.error.URLError, OSError, HTTPException, ValueError) as exc:
            hint = ""
            if method == "POST" and not isinstance(exc, urllib.error.URLError | ConnectionRefusedError):
                hint = f" (the request may have been applied: check `{PROG} status`)"
            raise CliError(EXIT_UNREACHABLE,
                           f"{PROG}: cannot reach the engine at {self.base}: {_why(exc)}{hint}") from None
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise CliError(EXIT_UNREACHABLE, f"{PROG}: {self.base}{path.partition('?')[0]} answered {status} "
                                             "without a JSON object: is this a failover-engine API?")
        if status >= 400:
            raise api_error(status, payload)
        return status, payload


def _why(exc: BaseException) -> str:
    reason: Any = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({reason.verify_message}); give --ca-file, or --insecure"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed ({reason.reason or reason})"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    text = str(reason) or type(reason).__name__
    return text.splitlines()[0] if text else type(reason).__name__


def api_error(status: int, body: dict[str, Any]) -> CliError:
    code = str(body.get("error") or "error")
    detail = str(body.get("detail") or body.get("sentence") or "")
    lines = [f"{PROG}: {code.replace('_', ' ')} ({status}): {detail}".rstrip(": ")]
    reasons = [f"{r.get('code')}: {r.get('detail')}" if isinstance(r, dict) else str(r)
               for r in body.get("reasons") or body.get("problems") or []]
    if len(reasons) > 1 or (reasons and reasons[0] not in detail):
        lines.extend(f"  - {r}" for r in reasons)
    if status == 401:
        lines.append("  check the token: --token-file, FAILOVER_ENGINE_TOKEN or --token")
    elif status == 403:
        lines.append("  this needs an operator token")
    exit_code = EXIT_USAGE if status in (400, 404, 405, 413, 422) else EXIT_REFUSED
    return CliError(exit_code, "\n".join(lines), body)


# -- arguments -----------------------------------------------------------------------------------
def _connection_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--url", help=f"engine API URL (env FAILOVER_ENGINE_URL, default {DEFAULT_URL})")
    g.add_argument("--token", help="bearer token (visible in the process list: prefer --token-file or "
                                   "FAILOVER_ENGINE_TOKEN)")
    g.add_argument("--token-file", help="file holding the bearer token (env FAILOVER_ENGINE_TOKEN_FILE)")
    g.add_argument("--ca-file", help="CA bundle that signed the engine's HTTPS certificate")
    g.add_argument("--insecure", action="store_true", help="do not verify the engine's HTTPS certificate")
    g.add_argument("--timeout", type=_positive, default=10.0, help="seconds per request (default 10)")
    g.add_argument("--json", action="store_true", help="print the API's JSON answers instead of tables")
    return p


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"must be positive: {raw!r}")
    return value


def _reason(raw: str) -> str:
    text = raw.strip()
    if not 3 <= len(text) <= 500:
        raise argparse.ArgumentTypeError("give a reason of 3 to 500 characters (it goes in the audit log)")
    return text


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def _when(raw: str, *, ahead: bool = False) -> float:
    """A time: epoch seconds, ISO 8601 (UTC unless it says otherwise), or a duration such as ``15m``, ``2h``:
    that long ago, or with ``ahead`` that long from now."""
    text = raw.strip()
    m = _DURATION.match(text)
    if m:
        span = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return time.time() + span if ahead else time.time() - span
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {raw!r} (epoch seconds, ISO 8601 like 2026-01-31T03:00, or a duration: 15m, 2h)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _later(raw: str) -> float:
    """A time in the future: epoch seconds, ISO 8601, or a duration from now (``30m``, ``2h``)."""
    return _when(raw, ahead=True)


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
            expiry.add_argument("--ttl", type=_positive, help="resume by itself after this many seconds")
        p.set_defaults(kind=kind)

    for kind, what in (("arm", "re-arm automatic action after the circuit breaker opened"),
                       ("unfence", "allow writes again on the active site's database after a self-fence")):
        p = add(kind, f"{what} (operator token)", cmd_simple)
        p.add_argument("service")
        p.add_argument("--reason", required=True, type=_reason, help="why (recorded in the audit log)")
        if kind == "unfence":
            p.add_argument("--force", action="store_true", help="even while this engine is cut off from the voters")
        p.set_defaults(kind=kind)

    p = add("events", "the audit log, newest first", cmd_events)
    p.add_argument("--service")
    p.add_argument("--kind", help="e.g. decision, operator, runbook, alert")
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


def _token(args: argparse.Namespace) -> str | None:
    """--token, then --token-file, then FAILOVER_ENGINE_TOKEN, then FAILOVER_ENGINE_TOKEN_FILE."""
    token: str | None = args.token
    if token is None and args.token_file:
        token = _read_token(args.token_file)
    if token is None:
        token = os.environ.get("FAILOVER_ENGINE_TOKEN")
    if token is None and os.environ.get("FAILOVER_ENGINE_TOKEN_FILE"):
        token = _read_token(os.environ["FAILOVER_ENGINE_TOKEN_FILE"])
    if token is None:
        return None
    token = token.strip()
    if not token:
        raise CliError(EXIT_USAGE, f"{PROG}: the token is empty")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token):
        raise CliError(EXIT_USAGE, f"{PROG}: the token contains whitespace or control characters")
    return token


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise CliError(EXIT_USAGE, f"{PROG}: cannot read the token file {path}: {why.lower()}") from None


def make_client(args: argparse.Namespace) -> Client:
    url = (args.url or os.environ.get("FAILOVER_ENGINE_URL") or DEFAULT_URL).strip()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CliError(EXIT_USAGE, f"{PROG}: the engine URL must look like http://host:port or https://host:port, "
                                   f"got {urllib.parse.urlunsplit(parsed._replace(netloc=parsed.hostname or ''))!r}")
    if parsed.username or parsed.password:
        raise CliError(EXIT_USAGE, f"{PROG}: put credentials in --token-file or FAILOVER_ENGINE_TOKEN, "
                                   "not in the URL")
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise CliError(EXIT_USAGE, f"{PROG}: no CA file at {args.ca_file}")
    try:
        port = parsed.port
    except ValueError:
        raise CliError(EXIT_USAGE, f"{PROG}: bad port in the engine URL") from None
    del port
    try:
        return Client(url, _token(args), timeout=args.timeout, ca_file=args.ca_file, insecure=args.insecure)
    except ssl.SSLError as exc:
        raise CliError(EXIT_USAGE, f"{PROG}: cannot use the CA file {args.ca_file}: {exc.reason or exc}") from None


def run(args: argparse.Namespace, func: Callable[[argparse.Namespace, Client], int]) -> int:
    try:
        return func(args, make_client(args))
    except CliError as exc:
        if getattr(args, "json", False) and exc.body is not None:
            print(json.dumps(exc.body, indent=2, default=str))
        print(exc.message, file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `| head`
        return EXIT_OK
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # an answer of an unexpected shape
        print(f"{PROG}: unexpected answer from the engine ({type(exc).__name__}: {exc}); try --json",
              file=sys.stderr)
        return EXIT_REFUSED


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


# -- status --------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, client: Client) -> int:
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


def _brake_lines(s: dict[str, Any]) -> list[str]:
    """What holds the engine back: an open breaker, a pause's expiry, a cool-down, a self-fence, a plan."""
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
    plan = s.get("scheduled_switchover")
    if plan:
        lines.append(f"switchover to {plan.get('target')} scheduled for {ts(plan.get('at'))} UTC "
                     f"by {plan.get('actor')}")
    return lines


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
        rows.append([name, s.get("active"), s.get("epoch"), bool(s.get("paused")), secs(s.get("lag_s")),
                     f"{op.get('id')} {op.get('state')}" if op else None, s.get("dns")])
    out.append(table(["SERVICE", "ACTIVE", "EPOCH", "PAUSED", "LAG", "OPERATION", "DNS"], rows))
    for name, s in services.items():
        out.append("")
        decision = s.get("decision") or {}
        out.append(f"{name}: {decision.get('message') or 'no decision yet'}")
        op = s.get("operation")
        if op and op.get("message"):
            out.append(f"  operation {op.get('id')} {op.get('state')}: {op['message']}")
        out.extend(f"  {line}" for line in _brake_lines(s))
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
            out.append("  last reconciliation: " + ", ".join(f"{k} {_cell(v)}" for k, v in rec.items()
                                                              if not isinstance(v, dict | list)))
    peers = data.get("peers") or []
    if peers:
        out.append("")
        out.append(table(["PEER", "HEARD", "SENT", "LAST ERROR"],
                         [[p.get("id"), _ago(p.get("heard_age_s")), _ago(p.get("sent_age_s")), p.get("last_error")]
                          for p in peers]))
    return "\n".join(out)


def _signal_row(sig: dict[str, Any]) -> list[Any]:
    last = sig.get("last") or {}
    latency = last.get("latency_ms")
    return [sig.get("name"), sig.get("state"), sig.get("consecutive_failures"),
            None if latency is None else f"{latency:g}ms", last.get("reason")]


def _ago(v: Any) -> str:
    return "never" if v is None else f"{secs(v)} ago"


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
                  f"UTC; cancel it through POST /v1/services/{args.service}/switchover with cancel: true")
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

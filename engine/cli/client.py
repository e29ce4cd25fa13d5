"""The CLI's HTTP client of a running engine: connection options, the token, errors and exit codes.

The engine is found with ``--url`` or ``FAILOVER_ENGINE_URL`` (default ``http://127.0.0.1:8080``); the
bearer token comes from ``--token``, ``--token-file`` or ``FAILOVER_ENGINE_TOKEN`` (the environment or a
file keep it out of the process list). HTTPS is verified against the system roots or ``--ca-file``;
``--insecure`` skips verification. Every request has a timeout (``--timeout``, default 10 s). The token is
never printed.

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
from collections.abc import Callable
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


_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SPAN_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _positive(raw: str) -> float:
    """A positive span of time: seconds (``90``, ``2.5``) or a duration (``10m``, ``1h30m``, ``250ms``)."""
    text = raw.strip().replace(" ", "")
    try:
        value = float(text)
    except ValueError:
        pos, value = 0, 0.0
        for match in _SPAN_PART.finditer(text):
            if match.start() != pos:
                break
            value += float(match.group(1)) * _SPAN_UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise argparse.ArgumentTypeError(
                f"not a duration: {raw!r} (seconds, or e.g. 30s, 10m, 1h30m)") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"must be positive and under 1e6 seconds: {raw!r}")
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

"""The HTTP API of an engine (aiohttp).

Open: ``/healthz`` (the decision loop is ticking), ``/readyz``, ``/metrics``. Read-only views:
``GET /v1/status``, ``GET /v1/services/{name}``, ``GET /v1/events``, ``GET /v1/operations[/{id}]``.
Peers: ``POST /v1/peer/verdict`` (HMAC-signed, see :mod:`engine.peer_auth`). Every error is JSON
(``{"error": ..., "detail": ...}``); bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

import json
import math
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from engine.auth import AuthError
from engine.http import guards

if TYPE_CHECKING:
    from engine.daemon import Engine

log = structlog.get_logger("engine.api")
failures = guards.QuietLog(log)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ENGINE: web.AppKey[Engine] = web.AppKey("engine")
MAX_BODY = 64 * 1024


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status, content_type="application/json")


def error(status: int, code: str, detail: str) -> web.Response:
    return _json({"error": code, "detail": detail}, status)


PRINCIPAL: web.RequestKey[object] = web.RequestKey("principal", object)
COUNTERS: web.AppKey[dict[tuple[str, str, int], Any]] = web.AppKey("counters", dict)


def _authorize(request: web.Request, engine: Engine) -> web.Response | None:
    """Bearer tokens on /v1 (not on peer endpoints), optionally on /metrics; see :mod:`engine.auth`.
    None when the request may go on, else the refusal."""
    path = request.path
    guarded = (path.startswith("/v1/") and not path.startswith("/v1/peer/")) or path == "/" or (
        path == "/metrics" and engine.config.metrics.requires_token)
    if not guarded:
        return None
    try:
        request[PRINCIPAL] = engine.auth.authorize(request.headers.get("Authorization"),
                                                   mutation=request.method == "POST", now=engine.clock.monotonic())
    except AuthError as exc:
        response = error(exc.status, exc.code, exc.detail)
        if path == "/" and exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="failover-engine", charset="UTF-8"'
        return response
    return None


def _count(request: web.Request, engine: Engine, status: int) -> None:
    resource = request.match_info.route.resource
    key = (request.method, resource.canonical if resource else "unmatched", status)
    counters = request.app[COUNTERS]
    counter = counters.get(key)
    if counter is None:  # a label lookup per request was a visible share of a status poll's cost
        counter = counters[key] = engine.metrics.api_requests.labels(key[0], key[1], str(status))
    counter.inc()


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request: authorization, JSON errors (never a traceback, never an HTML page) and the
    request counter, in one layer (each middleware layer costs a coroutine per request)."""
    engine = request.app[ENGINE]
    status = 500
    try:
        response: web.StreamResponse | None = _authorize(request, engine) or await guards.screen(request)
        if response is None:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    status = exc.status
                    raise
                refusal = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
                if "Allow" in exc.headers:  # a 405 names the methods that are allowed (RFC 9110)
                    refusal.headers["Allow"] = exc.headers["Allow"]
                response = refusal
            except Exception:
                failures.failure(request.path)
                response = error(500, "internal_error", "the engine failed to answer; see its log")
        assert response is not None
        status = response.status
        return response
    finally:
        _count(request, engine, status)


async def status_page(request: web.Request) -> web.Response:
    from engine.status_page import render_page

    return web.Response(text=render_page(request.app[ENGINE]), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def openapi(_request: web.Request) -> web.Response:
    from engine.openapi import build

    return _json(build())


async def healthz(request: web.Request) -> web.Response:
    ok, why = request.app[ENGINE].healthy()
    return _json({"ok": ok, "detail": why}, 200 if ok else 503)


async def readyz(request: web.Request) -> web.Response:
    ok, reasons = request.app[ENGINE].ready()
    return _json({"ready": ok, "reasons": reasons}, 200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if not engine.config.metrics.enabled:
        return error(404, "not_found", "metrics are disabled in the config")
    return web.Response(body=engine.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


async def status(request: web.Request) -> web.Response:
    """Every service; each site lists its signals that are not up (``?signals=all``: every signal)."""
    _only(request, {"signals"})
    listing = request.query.get("signals", "attention")
    if listing not in ("attention", "all"):
        return error(400, "bad_query", f"signals must be 'attention' or 'all', not {listing!r}")
    return web.Response(body=request.app[ENGINE].status_json(all_signals=listing == "all"),
                        content_type="application/json")


async def service(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    services = request.app[ENGINE].status()["services"]
    if name not in services:
        return error(404, "unknown_service", f"no service named {name!r}; known: {sorted(services)}")
    return _json({"name": name, **services[name]})


_INT = re.compile(r"^-?[0-9]{1,18}$")
_FLOAT = re.compile(r"^-?[0-9]{1,18}(\.[0-9]+)?([eE][-+]?[0-9]{1,3})?$")


def _number(request: web.Request, name: str, kind: type[int] | type[float]) -> Any:
    """A plain ASCII number from the query string (no underscores, spaces or other digits)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (_INT if kind is int else _FLOAT).match(raw):
        raise web.HTTPBadRequest(text=f"query parameter {name} must be a number, got {raw!r}")
    value = kind(raw)
    if not math.isfinite(value):
        raise web.HTTPBadRequest(text=f"query parameter {name} must be finite")
    return value


def _only(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown query parameter(s) {unknown}; allowed: {sorted(allowed)}")


async def events(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    assert engine.journal is not None
    _only(request, {"service", "kind", "since", "until", "limit", "before_id"})
    limit = _number(request, "limit", int)
    if limit is not None and not 1 <= limit <= 1000:
        return error(400, "bad_request", "limit must be between 1 and 1000")
    svc = request.query.get("service")
    if svc is not None and svc not in engine.services:
        return error(404, "unknown_service", f"no service named {svc!r}")
    rows = engine.journal.events(
        service=svc, kind=request.query.get("kind"), since=_number(request, "since", float),
        until=_number(request, "until", float), before_id=_number(request, "before_id", int),
        limit=limit or 100)
    body: dict[str, Any] = {"events": [e.to_dict() for e in rows]}
    if rows and len(rows) == (limit or 100):
        body["next_before_id"] = rows[-1].id
    return _json(body)


async def peer_verdict(request: web.Request) -> web.Response:
    """A peer's signed verdict: verified (signature, replay window, sequence, schema) or refused."""
    from engine.peer_auth import MAX_BODY, Rejected

    engine = request.app[ENGINE]
    if request.content_length is not None and request.content_length > MAX_BODY:
        return error(413, "too_large", f"a verdict is at most {MAX_BODY} bytes")
    body = await request.read()
    try:
        verdict = engine.peering.receive(request.headers, body, peer_common_name(request))
    except Rejected as exc:
        return error(401, "rejected", str(exc))
    return _json({"accepted": True, "seq": verdict.seq})


def peer_common_name(request: web.Request) -> str | None:
    """The CN of a verified client certificate, if the connection presented one."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


async def operation(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    op = engine.journal_or_fail().operation(request.match_info["id"])
    if op is None:
        return error(404, "unknown_operation", f"no operation {request.match_info['id']!r}")
    return _json(op)


async def operations(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    _only(request, {"service", "limit"})
    svc = request.query.get("service")
    if svc is not None and svc not in engine.services:
        return error(404, "unknown_service", f"no service named {svc!r}")
    limit = _number(request, "limit", int)
    limit = 50 if limit is None else limit
    if not 1 <= limit <= 500:
        return error(400, "bad_request", "limit must be between 1 and 500")
    return _json({"operations": engine.journal_or_fail().operations(service=svc, limit=limit)})


def build_app(engine: Engine) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[ENGINE] = engine
    app[COUNTERS] = {}
    app.router.add_get("/", status_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/services/{name}", service)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/v1/operations", operations)
    app.router.add_get("/v1/operations/{id}", operation)
    app.router.add_post("/v1/peer/verdict", peer_verdict)
    from engine import drills_api, operator

    operator.add_routes(app)
    drills_api.add_routes(app)
    return app


class ApiServer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._runner: web.AppRunner | None = None

    async def start(self, listen: str) -> str:
        host, _, port = listen.rpartition(":")
        tls = self.engine.config.instance.tls
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            if tls.client_ca_file:
                context.load_verify_locations(tls.client_ca_file)
                context.verify_mode = ssl.CERT_OPTIONAL  # operators may come without one; peers may not
        self._runner = web.AppRunner(build_app(self.engine), access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0, **guards.server_settings())
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, int(port), ssl_context=context)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        bound = self._runner.addresses[0]
        return f"{'https' if context else 'http'}://{host}:{bound[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

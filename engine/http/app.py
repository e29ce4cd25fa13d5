"""The HTTP API of an engine (aiohttp).

Open: ``/healthz`` (the decision loop is ticking), ``/readyz``, ``/metrics``. Read-only views:
``GET /v1/status``, ``GET /v1/services/{name}``, ``GET /v1/events``, ``GET /v1/operations[/{id}]``.
Peers: ``POST /v1/peer/verdict`` and ``POST /v1/peer/claim`` (HMAC-signed, see :mod:`engine.core.peer_auth`
and :mod:`engine.core.claims`). Every error is JSON
(``{"error": ..., "detail": ...}``); bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from engine.core.event_kinds import EVENT_KINDS
from engine.core.peer_auth import MAX_BODY as MAX_VERDICT
from engine.core.peer_auth import Rejected
from engine.core.ports import EnginePorts
from engine.http import drill_routes, guards, operator_routes
from engine.http.auth import Authenticator, AuthError
from engine.http.common import MAX_BODY, PORTS, PRINCIPAL, error, json_response, known_service, number, only, ports
from engine.http.openapi import build
from engine.http.status_page import render_page

log = structlog.get_logger("engine.api")
failures = guards.QuietLog(log)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
COUNTERS: web.AppKey[dict[tuple[str, str, int], Any]] = web.AppKey("counters", dict)


def _authorize(request: web.Request, p: EnginePorts) -> web.Response | None:
    """Bearer tokens on /v1 (not on peer endpoints), optionally on /metrics; see :mod:`engine.http.auth`.
    None when the request may go on, else the refusal."""
    path = request.path
    guarded = (path.startswith("/v1/") and not path.startswith("/v1/peer/")) or path == "/" or (
        path == "/metrics" and p.config.metrics.requires_token)
    if not guarded:
        return None
    try:
        request[PRINCIPAL] = request.app[AUTH].authorize(request.headers.get("Authorization"),
                                                         mutation=request.method == "POST", now=p.clock.monotonic())
    except AuthError as exc:
        response = error(exc.status, exc.code, exc.detail)
        if path == "/" and exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="failover-engine", charset="UTF-8"'
        return response
    return None


def _count(request: web.Request, p: EnginePorts, status: int) -> None:
    resource = request.match_info.route.resource
    key = (request.method, resource.canonical if resource else "unmatched", status)
    counters = request.app[COUNTERS]
    counter = counters.get(key)
    if counter is None:  # a label lookup per request was a visible share of a status poll's cost
        counter = counters[key] = p.view.api_counter(key[0], key[1], str(status))
    counter.inc()


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request: authorization, JSON errors (never a traceback, never an HTML page) and the
    request counter, in one layer (each middleware layer costs a coroutine per request)."""
    p = request.app[PORTS]
    status = 500
    try:
        response: web.StreamResponse | None = _authorize(request, p) or await guards.screen(request)
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
        _count(request, p, status)


async def status_page(request: web.Request) -> web.Response:
    p = ports(request)
    return web.Response(text=render_page(p.view, p.journal), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def openapi(_request: web.Request) -> web.Response:
    return json_response(build())


async def healthz(request: web.Request) -> web.Response:
    ok, why = ports(request).view.healthy()
    return json_response({"ok": ok, "detail": why}, 200 if ok else 503)


async def readyz(request: web.Request) -> web.Response:
    ok, reasons = ports(request).view.ready()
    return json_response({"ready": ok, "reasons": reasons}, 200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    p = ports(request)
    if not p.config.metrics.enabled:
        return error(404, "not_found", "metrics are disabled in the config")
    return web.Response(body=p.view.metrics_text(), headers={"Content-Type": "text/plain; version=0.0.4"})


async def status(request: web.Request) -> web.Response:
    """Every service; each site lists its signals that are not up (``?signals=all``: every signal)."""
    only(request, {"signals"})
    listing = request.query.get("signals", "attention")
    if listing not in ("attention", "all"):
        return error(400, "bad_query", f"signals must be 'attention' or 'all', not {listing!r}")
    return web.Response(body=ports(request).view.status_json(all_signals=listing == "all"),
                        content_type="application/json")


async def cluster(request: web.Request) -> web.Response:
    """Every voter's view of every service side by side, with ages, and the fields they disagree on."""
    only(request, set())
    return json_response(ports(request).cluster.cluster())


async def service(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    services = ports(request).view.status()["services"]
    if name not in services:
        return error(404, "unknown_service", f"no service named {name!r}; known: {sorted(services)}")
    return json_response({"name": name, **services[name]})


async def events(request: web.Request) -> web.Response:
    only(request, {"service", "kind", "since", "until", "limit", "before_id"})
    limit = number(request, "limit", int)
    if limit is not None and not 1 <= limit <= 1000:
        return error(400, "bad_request", "limit must be between 1 and 1000")
    svc = request.query.get("service")
    unknown = known_service(request, svc)
    if unknown is not None:
        return unknown
    kind = request.query.get("kind")
    if kind is not None and kind not in EVENT_KINDS:
        return error(400, "bad_request", f"no event kind {kind!r}; the kinds are: {', '.join(EVENT_KINDS)}")
    rows = ports(request).journal.events(
        service=svc, kind=request.query.get("kind"), since=number(request, "since", float),
        until=number(request, "until", float), before_id=number(request, "before_id", int),
        limit=limit or 100)
    body: dict[str, Any] = {"events": [e.to_dict() for e in rows]}
    if rows and len(rows) == (limit or 100):
        body["next_before_id"] = rows[-1].id
    return json_response(body)


async def peer_verdict(request: web.Request) -> web.Response:
    """A peer's signed verdict: verified (signature, replay window, sequence, schema) or refused."""
    if request.content_length is not None and request.content_length > MAX_VERDICT:
        return error(413, "too_large", f"a verdict is at most {MAX_VERDICT} bytes")
    body = await request.read()
    try:
        verdict = ports(request).peers.receive(request.headers, body, peer_common_name(request))
    except Rejected as exc:
        return error(401, "rejected", str(exc))
    return json_response({"accepted": True, "seq": verdict.seq})


async def peer_claim(request: web.Request) -> web.Response:
    """A peer engine's signed claim on a service (or its release): granted, or refused naming the winner (409)."""
    if request.content_length is not None and request.content_length > MAX_VERDICT:
        return error(413, "too_large", f"a claim is at most {MAX_VERDICT} bytes")
    body = await request.read()
    try:
        answer = await ports(request).claims.receive(request.headers, body)
    except Rejected as exc:
        return error(401, "rejected", str(exc))
    return json_response(answer, status=200 if answer["granted"] else 409)


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
    op = ports(request).journal.operation(request.match_info["id"])
    if op is None:
        return error(404, "unknown_operation", f"no operation {request.match_info['id']!r}")
    return json_response(op)


async def operations(request: web.Request) -> web.Response:
    only(request, {"service", "limit"})
    svc = request.query.get("service")
    unknown = known_service(request, svc)
    if unknown is not None:
        return unknown
    limit = number(request, "limit", int)
    limit = 50 if limit is None else limit
    if not 1 <= limit <= 500:
        return error(400, "bad_request", "limit must be between 1 and 500")
    return json_response({"operations": ports(request).journal.operations(service=svc, limit=limit)})


def build_app(p: EnginePorts) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[PORTS] = p
    app[AUTH] = Authenticator(p.config.api)
    app[COUNTERS] = {}
    app.router.add_get("/", status_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/services/{name}", service)
    app.router.add_get("/v1/cluster", cluster)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/v1/operations", operations)
    app.router.add_get("/v1/operations/{id}", operation)
    app.router.add_post("/v1/peer/verdict", peer_verdict)
    app.router.add_post("/v1/peer/claim", peer_claim)
    operator_routes.add_routes(app)
    drill_routes.add_routes(app)
    return app


class ApiServer:
    def __init__(self, p: EnginePorts) -> None:
        self.ports = p
        self._runner: web.AppRunner | None = None

    async def start(self, listen: str) -> str:
        host, _, port = listen.rpartition(":")
        tls = self.ports.config.instance.tls
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            if tls.client_ca_file:
                context.load_verify_locations(tls.client_ca_file)
                context.verify_mode = ssl.CERT_OPTIONAL  # operators may come without one; peers may not
        self._runner = web.AppRunner(build_app(self.ports), access_log=None, handle_signals=False,
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

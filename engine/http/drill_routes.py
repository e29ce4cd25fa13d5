"""The drill endpoints: ``POST /v1/drills`` (run one now), ``GET /v1/drills`` (newest first),
``GET /v1/drills/{id}`` (the report as JSON) and ``GET /v1/drills/{id}/report`` (as HTML).

Starting a drill needs an operator token and a reason, like every action; a refusal is a 409 with
machine-readable reasons (``{"code": "paused", "detail": ...}``).
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from engine.core.drill import summary
from engine.core.ports import Refused
from engine.http.common import (
    BadInput,
    Body,
    actor,
    error,
    json_response,
    known_service,
    number,
    only,
    ports,
    read_body,
    refused,
    reply,
)
from engine.http.drill_report import render_report


class DrillBody(Body):
    service: str = Field(max_length=64)
    kind: Literal["shadow", "full"]
    reason: str = Field(min_length=3, max_length=500)
    dry_run: bool = Field(False, description="say whether it would start and why not, start nothing")


async def run_drill(request: web.Request) -> web.Response:
    p = ports(request)
    try:
        body = await read_body(request, DrillBody)
    except BadInput as exc:
        return exc.response
    known = p.view.service_names()
    if body.service not in known:
        return error(404, "unknown_service", f"no service named {body.service!r}; known: {sorted(known)}")
    try:
        if body.dry_run:
            reasons = [r.to_dict() for r in p.drills.refusals(body.service, body.kind)]
            return json_response({"dry_run": True, "service": body.service, "kind": body.kind,
                                  "would": "refuse" if reasons else "start", "reasons": reasons})
        return reply(await p.drills.start(body.service, body.kind, actor=actor(request), reason=body.reason))
    except Refused as exc:
        return refused(exc)


async def list_drills(request: web.Request) -> web.Response:
    only(request, {"service", "kind", "limit"})
    svc = request.query.get("service")
    unknown = known_service(request, svc)
    if unknown is not None:
        return unknown
    kind = request.query.get("kind")
    if kind is not None and kind not in ("shadow", "full"):
        return error(400, "bad_query", f"kind must be shadow or full, not {kind!r}")
    limit = number(request, "limit", int)
    limit = 50 if limit is None else limit
    if not 1 <= limit <= 500:
        return error(400, "bad_request", "limit must be between 1 and 500")
    drills = ports(request).journal.drills(service=svc, kind=kind, limit=limit)
    return json_response({"drills": [summary(d) for d in drills]})


def _drill(request: web.Request) -> dict[str, Any] | web.Response:
    drill_id = request.match_info["id"]
    drill = ports(request).journal.drill(drill_id)
    if drill is None:
        return error(404, "unknown_drill", f"no drill {drill_id!r}")
    return drill


async def get_drill(request: web.Request) -> web.Response:
    drill = _drill(request)
    return drill if isinstance(drill, web.Response) else json_response(drill)


async def drill_report(request: web.Request) -> web.Response:
    drill = _drill(request)
    if isinstance(drill, web.Response):
        return drill
    return web.Response(text=render_report(drill), content_type="text/html", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/drills", run_drill)
    app.router.add_get("/v1/drills", list_drills)
    app.router.add_get("/v1/drills/{id}", get_drill)
    app.router.add_get("/v1/drills/{id}/report", drill_report)

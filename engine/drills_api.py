"""The drill endpoints: ``POST /v1/drills`` (run one now), ``GET /v1/drills`` (newest first),
``GET /v1/drills/{id}`` (the report as JSON) and ``GET /v1/drills/{id}/report`` (as HTML).

Starting a drill needs an operator token and a reason, like every action; a refusal is a 409 with
machine-readable reasons (``{"code": "paused", "detail": ...}``).
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from engine.api import ENGINE, _json, _number, _only, error
from engine.drills import DrillRefused, summary
from engine.operator import BadInput, _actor, _Body, read_body


class DrillBody(_Body):
    service: str = Field(max_length=64)
    kind: Literal["shadow", "full"]
    reason: str = Field(min_length=3, max_length=500)
    dry_run: bool = Field(False, description="say whether it would start and why not, start nothing")


async def run_drill(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    try:
        body = await read_body(request, DrillBody)
    except BadInput as exc:
        return exc.response
    rt = engine.services.get(body.service)
    if rt is None:
        return error(404, "unknown_service", f"no service named {body.service!r}; known: {sorted(engine.services)}")
    if body.dry_run:
        reasons = engine.drills.refusals(rt, body.kind)
        return _json({"dry_run": True, "service": rt.name, "kind": body.kind,
                      "would": "refuse" if reasons else "start", "reasons": reasons})
    try:
        drill = await engine.drills.start(rt, body.kind, trigger="manual", actor=_actor(request), reason=body.reason)
    except DrillRefused as exc:
        return _json({"error": "refused", "detail": f"{body.kind} drill of {rt.name} refused: {exc}",
                      "reasons": exc.reasons}, 409)
    return _json({"drill": drill.id, "service": rt.name, "kind": drill.kind, "state": drill.state}, 202)


async def list_drills(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    _only(request, {"service", "kind", "limit"})
    svc = request.query.get("service")
    if svc is not None and svc not in engine.services:
        return error(404, "unknown_service", f"no service named {svc!r}")
    kind = request.query.get("kind")
    if kind is not None and kind not in ("shadow", "full"):
        return error(400, "bad_query", f"kind must be shadow or full, not {kind!r}")
    limit = _number(request, "limit", int)
    limit = 50 if limit is None else limit
    if not 1 <= limit <= 500:
        return error(400, "bad_request", "limit must be between 1 and 500")
    drills = engine.journal_or_fail().drills(service=svc, kind=kind, limit=limit)
    return _json({"drills": [summary(d) for d in drills]})


def _drill(request: web.Request) -> dict[str, object] | web.Response:
    drill_id = request.match_info["id"]
    drill = request.app[ENGINE].journal_or_fail().drill(drill_id)
    if drill is None:
        return error(404, "unknown_drill", f"no drill {drill_id!r}")
    return drill


async def get_drill(request: web.Request) -> web.Response:
    drill = _drill(request)
    return drill if isinstance(drill, web.Response) else _json(drill)


async def drill_report(request: web.Request) -> web.Response:
    from engine.drill_report import render_report

    drill = _drill(request)
    if isinstance(drill, web.Response):
        return drill
    return web.Response(text=render_report(drill), content_type="text/html", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/drills", run_drill)
    app.router.add_get("/v1/drills", list_drills)
    app.router.add_get("/v1/drills/{id}", get_drill)
    app.router.add_get("/v1/drills/{id}/report", drill_report)

"""What every route shares: the app's keys, JSON answers and errors, request bodies, query numbers,
and the one mapping from a core refusal to an HTTP status.

Bad input is a 4xx with a JSON error naming the field, never a 5xx.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from engine.core.ports import EnginePorts, Refused, Reply

PORTS: web.AppKey[EnginePorts] = web.AppKey("ports", EnginePorts)
PRINCIPAL: web.RequestKey[object] = web.RequestKey("principal", object)
MAX_BODY = 64 * 1024
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.Response]]

STATUS_OF_KIND = {"not_found": 404, "invalid": 422, "conflict": 409, "precondition": 412, "unavailable": 503}
STATUS_OF_REPLY = {"ok": 200, "accepted": 202, "failed": 409}


def ports(request: web.Request) -> EnginePorts:
    return request.app[PORTS]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status, content_type="application/json")


def error(status: int, code: str, detail: str, **extra: Any) -> web.Response:
    return json_response({"error": code, "detail": detail, **extra}, status)


def refused(exc: Refused) -> web.Response:
    """A core refusal as its answer: the kind picks the status (404, 409, 412, 422, 503)."""
    r = exc.refusal
    return error(STATUS_OF_KIND[r.kind], r.code, r.detail, **exc.extra)


def reply(answer: Reply) -> web.Response:
    return json_response(dict(answer.body), STATUS_OF_REPLY[answer.status])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # "yes" is not a boolean


class BadInput(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def read_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise BadInput(error(400, "bad_json", "the body is not JSON")) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
        raise BadInput(error(422, "invalid", "; ".join(problems), problems=problems)) from None


def actor(request: web.Request) -> str:
    principal = request.get(PRINCIPAL)
    return str(getattr(principal, "name", "anonymous"))


_INT = re.compile(r"^-?[0-9]{1,18}$")
_FLOAT = re.compile(r"^-?[0-9]{1,18}(\.[0-9]+)?([eE][-+]?[0-9]{1,3})?$")


def number(request: web.Request, name: str, kind: type[int] | type[float]) -> Any:
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


def only(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown query parameter(s) {unknown}; allowed: {sorted(allowed)}")


def known_service(request: web.Request, name: str | None) -> web.Response | None:
    """None when ``name`` is None or a service of this engine, else the 404."""
    if name is None or name in ports(request).view.service_names():
        return None
    return error(404, "unknown_service", f"no service named {name!r}")

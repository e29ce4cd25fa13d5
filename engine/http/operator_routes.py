"""The operator's routes: pause and resume, arm, unfence, acknowledge a DNS drift, manual failover, failback,
switchover, prepare-failback, retry or abort a halted runbook.

Thin by design: each route validates its body (the models below are also the OpenAPI schemas), names
the actor from the token, and calls :class:`engine.core.ports.OperatorPort`; the gates and the moves
live in the core and the runtime. Every action needs an operator token and a reason. Manual failover is
allowed without quorum (that is what it is for) but refused with 409 and the reasons when the target
site is unhealthy or the standby lags beyond the RPO, unless ``force`` is set, which is recorded.
``dry_run`` returns the plan and every gate with its verdict and changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import Field

from engine.core.ports import Refused, Reply
from engine.http.common import BadInput, Body, Handler, actor, error, ports, read_body, refused, reply

M = TypeVar("M", bound=Body)
ActionFn = Callable[[web.Request, str, M], Awaitable[Reply]]


class ReasonBody(Body):
    reason: str = Field(min_length=3, max_length=500)


class PauseBody(Body):
    reason: str = Field(min_length=3, max_length=500)
    until: float | None = Field(None, description="resume by itself at this time (epoch seconds)")
    ttl: float | None = Field(None, gt=0, le=30 * 86400, description="resume by itself after this many seconds")
    replace: bool = Field(False, description="replace the pause in force (else a second pause is refused, 409)")


class FailbackBody(Body):
    reason: str = Field(min_length=3, max_length=500)
    dry_run: bool = False
    acknowledge_reconciliation: bool = Field(False, description="go on although the last reconciliation differed")


class PrepareFailbackBody(Body):
    reason: str = Field(min_length=3, max_length=500)
    acknowledge_reconciliation: bool = Field(
        False, description="go on although rows the old primary holds are not explained by writes since promotion")


class FailoverBody(Body):
    target: str | None = Field(None, max_length=64)
    reason: str = Field(min_length=3, max_length=500)
    dry_run: bool = False
    force: bool = False
    fence_first: bool = Field(False, description=(
        "the active site is healthy: go ahead only once its database is fenced (the fence step must succeed)"))


class SwitchoverBody(Body):
    target: str | None = Field(None, max_length=64)
    reason: str = Field(min_length=3, max_length=500)
    dry_run: bool = False
    scheduled_at: float | None = Field(None, description="start at this time (epoch seconds) instead of now")
    cancel: bool = Field(False, description="cancel the scheduled switchover")


class UnfenceBody(Body):
    reason: str = Field(min_length=3, max_length=500)
    force: bool = Field(False, description="unfence although this engine does not hold the lease right now")


def action(model: type[M]) -> Callable[[ActionFn[M]], Handler]:
    """An operator action on ``/v1/services/{name}/...``: the service (known, else 404 before the body is
    read) and the validated body are handed to it; a refusal is its 4xx."""
    def wrap(fn: ActionFn[M]) -> Handler:
        @functools.wraps(fn)
        async def handler(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            known = ports(request).view.service_names()
            if name not in known:
                return error(404, "unknown_service", f"no service named {name!r}; known: {sorted(known)}")
            try:
                body = await read_body(request, model)
                return reply(await fn(request, name, body))
            except BadInput as exc:
                return exc.response
            except Refused as exc:
                return refused(exc)
        return handler
    return wrap


@action(PauseBody)
async def pause(request: web.Request, service: str, body: PauseBody) -> Reply:
    return await ports(request).operator.pause(service, actor=actor(request), reason=body.reason, until=body.until,
                                               ttl=body.ttl, replace=body.replace)


@action(ReasonBody)
async def resume(request: web.Request, service: str, body: ReasonBody) -> Reply:
    return await ports(request).operator.resume(service, actor=actor(request), reason=body.reason)


@action(ReasonBody)
async def arm(request: web.Request, service: str, body: ReasonBody) -> Reply:
    return await ports(request).operator.arm(service, actor=actor(request), reason=body.reason)


@action(UnfenceBody)
async def unfence(request: web.Request, service: str, body: UnfenceBody) -> Reply:
    return await ports(request).operator.unfence(service, actor=actor(request), reason=body.reason, force=body.force)


@action(ReasonBody)
async def acknowledge_drift(request: web.Request, service: str, body: ReasonBody) -> Reply:
    return await ports(request).operator.acknowledge_drift(service, actor=actor(request), reason=body.reason)


@action(FailoverBody)
async def failover(request: web.Request, service: str, body: FailoverBody) -> Reply:
    return await ports(request).operator.failover(service, actor=actor(request), reason=body.reason,
                                                  target=body.target, dry_run=body.dry_run, force=body.force,
                                                  fence_first=body.fence_first)


@action(FailbackBody)
async def failback(request: web.Request, service: str, body: FailbackBody) -> Reply:
    return await ports(request).operator.failback(service, actor=actor(request), reason=body.reason,
                                                  dry_run=body.dry_run,
                                                  acknowledge_reconciliation=body.acknowledge_reconciliation)


@action(SwitchoverBody)
async def switchover(request: web.Request, service: str, body: SwitchoverBody) -> Reply:
    """A planned move with both sites healthy: zero acknowledged writes lost (see engine.runtime.switchover)."""
    return await ports(request).operator.switchover(service, actor=actor(request), reason=body.reason,
                                                    target=body.target, dry_run=body.dry_run,
                                                    scheduled_at=body.scheduled_at, cancel=body.cancel)


@action(PrepareFailbackBody)
async def prepare_failback(request: web.Request, service: str, body: PrepareFailbackBody) -> Reply:
    return await ports(request).operator.prepare_failback(
        service, actor=actor(request), reason=body.reason, acknowledge_reconciliation=body.acknowledge_reconciliation)


def halted_action(fn: Callable[[web.Request, str, ReasonBody], Awaitable[Reply]]) -> Handler:
    """A request about the halted operation named in the path (404/409 before the body is read)."""
    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.Response:
        op_id = request.match_info["id"]
        try:
            ports(request).operator.find_halted(op_id)
            body = await read_body(request, ReasonBody)
            return reply(await fn(request, op_id, body))
        except BadInput as exc:
            return exc.response
        except Refused as exc:
            return refused(exc)
    return handler


@halted_action
async def retry(request: web.Request, op_id: str, body: ReasonBody) -> Reply:
    return await ports(request).operator.retry(op_id, actor=actor(request), reason=body.reason)


@halted_action
async def abort(request: web.Request, op_id: str, body: ReasonBody) -> Reply:
    return await ports(request).operator.abort(op_id, actor=actor(request), reason=body.reason)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/services/{name}/pause", pause)
    app.router.add_post("/v1/services/{name}/arm", arm)
    app.router.add_post("/v1/services/{name}/unfence", unfence)
    app.router.add_post("/v1/services/{name}/resume", resume)
    app.router.add_post("/v1/services/{name}/acknowledge-drift", acknowledge_drift)
    app.router.add_post("/v1/services/{name}/failover", failover)
    app.router.add_post("/v1/services/{name}/failback", failback)
    app.router.add_post("/v1/services/{name}/switchover", switchover)
    app.router.add_post("/v1/services/{name}/prepare-failback", prepare_failback)
    app.router.add_post("/v1/operations/{id}/retry", retry)
    app.router.add_post("/v1/operations/{id}/abort", abort)

"""What an operator can do through the API: pause and resume, manual failover, retry or abort a halted
runbook. Every action needs an operator token and a reason, and is recorded with who and why.

Manual failover is allowed without quorum (that is what it is for) but refused with 409 and the
reasons when the target site is unhealthy or the standby lags beyond the RPO, unless ``force`` is
set, which is recorded. ``dry_run`` returns the plan and every gate with its verdict and changes
nothing. Bad input is a 4xx with a JSON error naming the field, never a 5xx.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.decide import ServiceState, Verdict
from engine.failover import step_specs
from engine.policy import ClusterDecision
from engine.runbook import OpState

if TYPE_CHECKING:
    from engine.daemon import Engine, ServiceRuntime

M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReasonBody(_Body):
    reason: str = Field(min_length=3, max_length=500)


class FailoverBody(_Body):
    target: str | None = Field(None, max_length=64)
    reason: str = Field(min_length=3, max_length=500)
    dry_run: bool = False
    force: bool = False


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status, content_type="application/json")


def _error(status: int, code: str, detail: str, **extra: Any) -> web.Response:
    return _json({"error": code, "detail": detail, **extra}, status)


class BadInput(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def read_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise BadInput(_error(400, "bad_json", "the body is not JSON")) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
        raise BadInput(_error(422, "invalid", "; ".join(problems), problems=problems)) from None


def _engine(request: web.Request) -> Engine:
    from engine.api import ENGINE

    return request.app[ENGINE]


def _actor(request: web.Request) -> str:
    from engine.api import PRINCIPAL

    principal = request.get(PRINCIPAL)
    return str(getattr(principal, "name", "anonymous"))


def _service(request: web.Request) -> ServiceRuntime:
    engine = _engine(request)
    name = request.match_info["name"]
    rt = engine.services.get(name)
    if rt is None:
        raise BadInput(_error(404, "unknown_service", f"no service named {name!r}; known: {sorted(engine.services)}"))
    return rt


# -- pause and resume ----------------------------------------------------------------------------
async def pause(request: web.Request) -> web.Response:
    return await _set_paused(request, True)


async def resume(request: web.Request) -> web.Response:
    return await _set_paused(request, False)


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    try:
        rt = _service(request)
        body = await read_body(request, ReasonBody)
    except BadInput as exc:
        return exc.response
    engine, actor = _engine(request), _actor(request)
    now = engine.clock.now()
    word = "paused" if paused else "resumed"
    if rt.state.paused != paused:
        state = ServiceState(rt.state.active, rt.state.epoch, paused, rt.state.last_move_at)
        await engine.set_state(rt, state, now, f"{rt.name} {word} by {actor}: {body.reason}")
    await engine.record("operator", f"{actor} {word} {rt.name}: {body.reason}", service=rt.name, actor=actor,
                        at=now, data={"action": word, "reason": body.reason})
    engine.poke()
    return _json({"service": rt.name, "paused": paused})


# -- manual failover -----------------------------------------------------------------------------
def failover_gates(engine: Engine, rt: ServiceRuntime, target: str) -> list[dict[str, Any]]:
    """Every check with its verdict; ``blocking`` ones refuse the move unless forced."""
    snapshot = rt.snapshot(engine.clock.now())
    view = snapshot.sites[target]
    gates: list[dict[str, Any]] = [
        {"gate": "target_healthy", "blocking": True, "ok": str(view.health) == "up",
         "detail": f"{target} is {view.health} ({view.why()})"},
    ]
    if rt.config.database is not None:
        lag, rpo = rt.lag_s, rt.config.policy.rpo
        gates.append({"gate": "lag_within_rpo", "blocking": True, "ok": lag is not None and lag <= rpo,
                      "detail": "replication lag unknown" if lag is None else f"lag {lag:.1f}s, RPO {rpo:g}s"})
    active_view = snapshot.sites[rt.state.active]
    gates.append({"gate": "active_site", "blocking": False, "ok": True,
                  "detail": f"{rt.state.active} is {active_view.health} ({active_view.why()})"})
    quorum = engine.coordinator.quorum_ok
    gates.append({"gate": "quorum", "blocking": False, "ok": True,
                  "detail": "not required for a manual failover" + ("" if quorum in (None, True) else
                                                                     " (quorum is lost right now)")})
    gates.append({"gate": "paused", "blocking": False, "ok": True,
                  "detail": "paused: automatic action is off; manual action is allowed" if rt.state.paused
                  else "not paused"})
    return gates


async def failover(request: web.Request) -> web.Response:
    try:
        rt = _service(request)
        body = await read_body(request, FailoverBody)
    except BadInput as exc:
        return exc.response
    engine, actor = _engine(request), _actor(request)
    others = [s for s in rt.config.sites if s != rt.state.active]
    target = body.target or (others[0] if len(others) == 1 else None)
    if target is None:
        return _error(422, "invalid", f"target: choose one of {others}")
    if target not in rt.config.sites:
        return _error(404, "unknown_site", f"{target!r} is not a site of {rt.name}: {sorted(rt.config.sites)}")
    if target == rt.state.active:
        return _error(409, "already_active", f"{rt.name} is already active in {target}")
    if engine.config.instance.role != "engine":
        return _error(409, "witness", "a witness never acts: send this to an engine")
    if rt.operation is not None:
        return _error(409, "operation_in_progress",
                      f"operation {rt.operation.id} is {rt.operation.state}: retry or abort it first")
    gates = failover_gates(engine, rt, target)
    blocked = [g for g in gates if g["blocking"] and not g["ok"]]
    reasons = [f"{g['gate']}: {g['detail']}" for g in blocked]
    plan = [s.name for s in step_specs(rt)]
    if body.dry_run:
        return _json({"dry_run": True, "service": rt.name, "source": rt.state.active, "target": target,
                      "would": "refuse" if blocked and not body.force else "start", "plan": plan,
                      "gates": gates, "reasons": reasons, "epoch": {"from": rt.state.epoch, "to": rt.state.epoch + 1}})
    if blocked and not body.force:
        return _error(409, "refused", f"failover of {rt.name} to {target} refused: {'; '.join(reasons)}",
                      reasons=reasons, gates=gates)
    now = engine.clock.now()
    forced = f"; forced past: {'; '.join(reasons)}" if blocked else ""
    message = f"manual failover by {actor}: {body.reason}{forced}"
    await engine.record("operator", f"{actor} started a failover of {rt.name} to {target}: {body.reason}{forced}",
                        service=rt.name, actor=actor, at=now,
                        data={"action": "failover", "target": target, "reason": body.reason, "force": body.force,
                              "forced_past": reasons})
    decision = ClusterDecision(Verdict.FAILOVER, message, target, engine.config.instance.id, True, (),
                               {"gates": gates, "actor": actor, "reason": body.reason, "force": body.force})
    op = await engine.coordinator.start_operation(rt, decision, now, trigger="manual", actor=actor,
                                                  reason=body.reason)
    return _json({"operation": op.id, "service": rt.name, "source": op.source, "target": op.target,
                  "forced_past": reasons}, 202)


# -- halted runbooks -----------------------------------------------------------------------------
def _halted(request: web.Request) -> tuple[ServiceRuntime, Any]:
    engine = _engine(request)
    op_id = request.match_info["id"]
    for rt in engine.services.values():
        if rt.operation is not None and rt.operation.id == op_id:
            return rt, rt.operation
    if engine.journal_or_fail().operation(op_id) is None:
        raise BadInput(_error(404, "unknown_operation", f"no operation {op_id!r}"))
    raise BadInput(_error(409, "not_halted", f"operation {op_id} is not halted on this instance"))


async def retry(request: web.Request) -> web.Response:
    try:
        rt, op = _halted(request)
        body = await read_body(request, ReasonBody)
    except BadInput as exc:
        return exc.response
    if op.state is not OpState.HALTED:
        return _error(409, "not_halted", f"operation {op.id} is {op.state}")
    engine, actor = _engine(request), _actor(request)
    await engine.record("operator", f"{actor} retried {op.id}: {body.reason}", service=rt.name, actor=actor,
                        data={"action": "retry", "operation": op.id, "reason": body.reason})
    op.state = OpState.RUNNING
    op.message = ""
    await engine.journal_or_fail().save_operation(op)
    engine.coordinator.relaunch(rt, op)
    return _json({"operation": op.id, "state": str(op.state)}, 202)


async def abort(request: web.Request) -> web.Response:
    try:
        rt, op = _halted(request)
        body = await read_body(request, ReasonBody)
    except BadInput as exc:
        return exc.response
    if op.state is not OpState.HALTED:
        return _error(409, "not_halted", f"operation {op.id} is {op.state}: only a halted runbook can be aborted")
    engine, actor = _engine(request), _actor(request)
    now = engine.clock.now()
    op.state = OpState.ABORTED
    op.finished_at = now
    op.message = f"{op.kind} of {op.service} aborted by {actor}: {body.reason}"
    await engine.journal_or_fail().save_operation(op)
    rt.operation = None
    await engine.record("operator", op.message, service=rt.name, actor=actor, at=now,
                        data={"action": "abort", "operation": op.id, "reason": body.reason})
    await engine.coordinator.sync_dns(rt, now)  # believe whatever the interrupted runbook left in DNS
    return _json({"operation": op.id, "state": str(op.state)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/services/{name}/pause", pause)
    app.router.add_post("/v1/services/{name}/resume", resume)
    app.router.add_post("/v1/services/{name}/failover", failover)
    app.router.add_post("/v1/operations/{id}/retry", retry)
    app.router.add_post("/v1/operations/{id}/abort", abort)

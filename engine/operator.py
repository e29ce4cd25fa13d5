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

from engine.api import _json
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


class FailbackBody(_Body):
    reason: str = Field(min_length=3, max_length=500)
    dry_run: bool = False
    acknowledge_reconciliation: bool = Field(False, description="go on although the last reconciliation differed")


class PrepareFailbackBody(_Body):
    reason: str = Field(min_length=3, max_length=500)
    acknowledge_reconciliation: bool = Field(
        False, description="go on although rows the old primary holds are not explained by writes since promotion")


class FailoverBody(_Body):
    target: str | None = Field(None, max_length=64)
    reason: str = Field(min_length=3, max_length=500)
    dry_run: bool = False
    force: bool = False


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


def _cannot_act(engine: Engine, rt: ServiceRuntime) -> web.Response | None:
    """Refusals every move shares: a witness never acts; one runbook per service."""
    if engine.config.instance.role != "engine":
        return _error(409, "witness", "a witness never acts: send this to an engine")
    if rt.operation is not None:
        return _error(409, "operation_in_progress",
                      f"operation {rt.operation.id} is {rt.operation.state}: retry or abort it first")
    return None


async def _move(request: web.Request, rt: ServiceRuntime, *, kind: str, target: str, gates: list[dict[str, Any]],
                reason: str, dry_run: bool, force: bool, audit: dict[str, Any]) -> web.Response:
    """The common end of a manual move: dry run, refusal, or an audited start of the runbook."""
    engine, actor = _engine(request), _actor(request)
    blocked = [g for g in gates if g["blocking"] and not g["ok"]]
    reasons = [f"{g['gate']}: {g['detail']}" for g in blocked]
    if dry_run:
        return _json({"dry_run": True, "service": rt.name, "source": rt.state.active, "target": target,
                      "would": "refuse" if blocked and not force else "start",
                      "plan": [s.name for s in step_specs(rt)], "gates": gates, "reasons": reasons,
                      "epoch": {"from": rt.state.epoch, "to": rt.state.epoch + 1}})
    if blocked and not force:
        return _error(409, "refused", f"{kind} of {rt.name} to {target} refused: {'; '.join(reasons)}",
                      reasons=reasons, gates=gates)
    now = engine.clock.now()
    forced = f"; forced past: {'; '.join(reasons)}" if blocked else ""
    await engine.record("operator", f"{actor} started a {kind} of {rt.name} to {target}: {reason}{forced}",
                        service=rt.name, actor=actor, at=now,
                        data={"action": kind, "target": target, "reason": reason, "force": force,
                              "forced_past": reasons, **audit})
    decision = ClusterDecision(Verdict.FAILOVER, f"manual {kind} by {actor}: {reason}{forced}", target,
                               engine.config.instance.id, True, (),
                               {"gates": gates, "actor": actor, "reason": reason, "force": force})
    op = await engine.coordinator.start_operation(rt, decision, now, trigger="manual", actor=actor, reason=reason,
                                                  kind=kind)
    return _json({"operation": op.id, "service": rt.name, "source": op.source, "target": op.target,
                  "forced_past": reasons}, 202)


async def failover(request: web.Request) -> web.Response:
    try:
        rt = _service(request)
        body = await read_body(request, FailoverBody)
    except BadInput as exc:
        return exc.response
    engine = _engine(request)
    others = [s for s in rt.config.sites if s != rt.state.active]
    target = body.target or (others[0] if len(others) == 1 else None)
    if target is None:
        return _error(422, "invalid", f"target: choose one of {others}")
    if target not in rt.config.sites:
        return _error(404, "unknown_site", f"{target!r} is not a site of {rt.name}: {sorted(rt.config.sites)}")
    if target == rt.state.active:
        return _error(409, "already_active", f"{rt.name} is already active in {target}")
    refused = _cannot_act(engine, rt)
    if refused is not None:
        return refused
    return await _move(request, rt, kind="failover", target=target, gates=failover_gates(engine, rt, target),
                       reason=body.reason, dry_run=body.dry_run, force=body.force, audit={})


# -- failback ------------------------------------------------------------------------------------
def failback_gates(engine: Engine, rt: ServiceRuntime, body: FailbackBody) -> list[dict[str, Any]]:
    """Home healthy long enough, reverse replication caught up, last reconciliation clean (or acknowledged)."""
    now = engine.clock.now()
    home = rt.config.active
    signals = rt.signals.get(home, [])
    up = bool(signals) and all(str(sig.machine.state) == "up" for sig in signals)
    since = max((sig.machine.since or now for sig in signals), default=now)
    need = rt.config.policy.failback_healthy_for
    healthy_for = now - since if up else 0.0
    gates: list[dict[str, Any]] = [
        {"gate": "home_healthy", "blocking": True, "ok": up and healthy_for >= need,
         "detail": (f"{home} up for {healthy_for:.0f}s (need {need:g}s)" if up
                    else f"{home} is not up: {rt.snapshot(now).sites[home].why()}")}]
    if rt.config.database is not None:
        rep = rt.replication
        lag = rt.lag_s
        caught_up = (rep is not None and str(rep.machine.state) == "up" and lag is not None
                     and lag <= rt.config.policy.rpo)
        why = rep.machine.describe() if rep is not None else "no replication signal"
        gates.append({"gate": "reverse_replication", "blocking": True, "ok": caught_up,
                      "detail": f"{rt.state.active} -> {home}: " + (f"lag {lag:.1f}s" if caught_up else why
                                                                   + " (POST .../prepare-failback sets it up)")})
        last = engine.journal_or_fail().get_state(rt.name, "last_reconciliation")
        clean = bool(last and last.get("identical"))
        gates.append({"gate": "reconciliation", "blocking": not body.acknowledge_reconciliation, "ok": clean,
                      "detail": (last or {}).get("sentence", "no reconciliation yet")
                      + (" (acknowledged)" if body.acknowledge_reconciliation and not clean else "")})
    return gates


async def failback(request: web.Request) -> web.Response:
    try:
        rt = _service(request)
        body = await read_body(request, FailbackBody)
    except BadInput as exc:
        return exc.response
    engine = _engine(request)
    home = rt.config.active
    if rt.state.active == home:
        return _error(409, "already_home", f"{rt.name} is already active in its home site {home}")
    refused = _cannot_act(engine, rt)
    if refused is not None:
        return refused
    gates = failback_gates(engine, rt, body)
    reverse = next((g for g in gates if g["gate"] == "reverse_replication"), None)
    if reverse is not None and reverse["ok"] and rt.database is not None:
        await rt.database.reconcile_now()  # with replication flowing back, the pair should now agree
        gates = failback_gates(engine, rt, body)
    return await _move(request, rt, kind="failback", target=home, gates=gates, reason=body.reason,
                       dry_run=body.dry_run, force=False,
                       audit={"acknowledged_reconciliation": body.acknowledge_reconciliation})


async def prepare_failback(request: web.Request) -> web.Response:
    """Reconcile, then replicate the current primary to the other site through the slot its promotion
    created: after a failover that prepares the failback; after a failback it re-protects the service."""
    try:
        rt = _service(request)
        body = await read_body(request, PrepareFailbackBody)
    except BadInput as exc:
        return exc.response
    engine, actor = _engine(request), _actor(request)
    if rt.config.database is None or rt.database is None:
        return _error(409, "no_database", f"{rt.name} has no database pair on this instance")
    if rt.operation is not None:
        return _error(409, "operation_in_progress", f"operation {rt.operation.id} is {rt.operation.state}")
    from actions.database.failback import prepare_failback as prepare

    reconciled = await rt.database.reconcile_now(watermark=None)  # nothing flows back yet: no rows in flight
    result = await prepare(rt.config.database, rt.state.active, _Reconciled(reconciled),
                           acknowledge=body.acknowledge_reconciliation)
    await engine.record("operator", f"{actor} prepared failback of {rt.name}: {result.sentence} ({body.reason})",
                        service=rt.name, actor=actor, data={"action": "prepare_failback", **result.to_dict()})
    return _json({"ok": result.ok, "sentence": result.sentence, "result": result.to_dict(),
                  "reconciliation": reconciled.get("sentence")}, 200 if result.ok else 409)


class _Reconciled:
    """The reconciliation as prepare_failback reads it (the full result: tables and differences)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.identical = bool(data.get("identical"))
        self.sentence = str(data.get("sentence", ""))


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


async def _halted_request(request: web.Request, refusal: str) -> tuple[ServiceRuntime, Any, ReasonBody]:
    """The halted operation named in the path and the reason in the body, or BadInput."""
    rt, op = _halted(request)
    body = await read_body(request, ReasonBody)
    if op.state is not OpState.HALTED:
        raise BadInput(_error(409, "not_halted", f"operation {op.id} is {op.state}{refusal}"))
    return rt, op, body


async def retry(request: web.Request) -> web.Response:
    try:
        rt, op, body = await _halted_request(request, "")
    except BadInput as exc:
        return exc.response
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
        rt, op, body = await _halted_request(request, ": only a halted runbook can be aborted")
    except BadInput as exc:
        return exc.response
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
    app.router.add_post("/v1/services/{name}/failback", failback)
    app.router.add_post("/v1/services/{name}/prepare-failback", prepare_failback)
    app.router.add_post("/v1/operations/{id}/retry", retry)
    app.router.add_post("/v1/operations/{id}/abort", abort)

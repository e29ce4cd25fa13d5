"""What an operator can do through the API: pause and resume, manual failover, retry or abort a halted
runbook. Every action needs an operator token and a reason, and is recorded with who and why.

Manual failover is allowed without quorum (that is what it is for) but refused with 409 and the
reasons when the target site is unhealthy or the standby lags beyond the RPO, unless ``force`` is
set, which is recorded. ``dry_run`` returns the plan and every gate with its verdict and changes
nothing. Bad input is a 4xx with a JSON error naming the field, never a 5xx.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.api import _json
from engine.decide import ServiceState, Verdict
from engine.evidence import decision_context
from engine.failover import step_specs
from engine.policy import ClusterDecision
from engine.runbook import OpState

if TYPE_CHECKING:
    from engine.daemon import Engine, ServiceRuntime

M = TypeVar("M", bound=BaseModel)
ActionFn = Callable[[web.Request, "ServiceRuntime", M], Awaitable[web.Response]]
Handler = Callable[[web.Request], Awaitable[web.Response]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # "yes" is not a boolean


class ReasonBody(_Body):
    reason: str = Field(min_length=3, max_length=500)


class PauseBody(_Body):
    reason: str = Field(min_length=3, max_length=500)
    until: float | None = Field(None, description="resume by itself at this time (epoch seconds)")
    ttl: float | None = Field(None, gt=0, le=30 * 86400, description="resume by itself after this many seconds")


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
    fence_first: bool = Field(False, description=(
        "the active site is healthy: go ahead only once its database is fenced (the fence step must succeed)"))


class SwitchoverBody(_Body):
    target: str | None = Field(None, max_length=64)
    reason: str = Field(min_length=3, max_length=500)
    dry_run: bool = False
    scheduled_at: float | None = Field(None, description="start at this time (epoch seconds) instead of now")
    cancel: bool = Field(False, description="cancel the scheduled switchover")


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


def action(model: type[M]) -> Callable[[ActionFn[M]], Handler]:
    """An operator action on ``/v1/services/{name}/...``: the service and the validated body are handed
    to it; bad input anywhere (unknown service, bad JSON, a refusal raised as BadInput) is its 4xx."""
    def wrap(fn: ActionFn[M]) -> Handler:
        @functools.wraps(fn)
        async def handler(request: web.Request) -> web.Response:
            try:
                rt = _service(request)
                body = await read_body(request, model)
                return await fn(request, rt, body)
            except BadInput as exc:
                return exc.response
        return handler
    return wrap


def _service(request: web.Request) -> ServiceRuntime:
    engine = _engine(request)
    name = request.match_info["name"]
    rt = engine.services.get(name)
    if rt is None:
        raise BadInput(_error(404, "unknown_service", f"no service named {name!r}; known: {sorted(engine.services)}"))
    return rt


def _target(rt: ServiceRuntime, requested: str | None) -> str:
    """The site a move goes to: the one asked for, else the only other site; BadInput when that is wrong."""
    others = [s for s in rt.config.sites if s != rt.state.active]
    target = requested or (others[0] if len(others) == 1 else None)
    if target is None:
        raise BadInput(_error(422, "invalid", f"target: choose one of {others}"))
    if target not in rt.config.sites:
        raise BadInput(_error(404, "unknown_site", f"{target!r} is not a site of {rt.name}: {sorted(rt.config.sites)}"))
    if target == rt.state.active:
        raise BadInput(_error(409, "already_active", f"{rt.name} is already active in {target}"))
    return target


# -- pause and resume ----------------------------------------------------------------------------
@action(PauseBody)
async def pause(request: web.Request, rt: ServiceRuntime, body: PauseBody) -> web.Response:
    """Pause, optionally with an expiry (``until`` or ``ttl``): the engine then resumes by itself."""
    engine = _engine(request)
    now = engine.clock.now()
    if body.until is not None and body.ttl is not None:
        return _error(422, "invalid", "give until or ttl, not both")
    until = body.until if body.until is not None else (now + body.ttl if body.ttl is not None else None)
    if until is not None and not now < until <= now + 30 * 86400:
        return _error(422, "invalid", "until must be in the future, at most 30 days ahead")
    return await _set_paused(request, rt, True, body.reason, until)


@action(ReasonBody)
async def resume(request: web.Request, rt: ServiceRuntime, body: ReasonBody) -> web.Response:
    return await _set_paused(request, rt, False, body.reason, None)


async def _set_paused(request: web.Request, rt: ServiceRuntime, paused: bool, reason: str,
                      until: float | None) -> web.Response:
    engine, actor = _engine(request), _actor(request)
    now = engine.clock.now()
    word = "paused" if paused else "resumed"
    expiry = f" until {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(until))} UTC" if until is not None else ""
    rt.paused_until = until
    await engine.journal_or_fail().put_state(rt.name, "paused_until", until, at=now)
    if rt.state.paused != paused:
        state = ServiceState(rt.state.active, rt.state.epoch, paused, rt.state.last_move_at)
        await engine.set_state(rt, state, now, f"{rt.name} {word}{expiry} by {actor}: {reason}")
    await engine.record("operator", f"{actor} {word} {rt.name}{expiry}: {reason}", service=rt.name, actor=actor,
                        at=now, data={"action": word, "reason": reason, "until": until})
    engine.poke()
    return _json({"service": rt.name, "paused": paused, "until": until})


# -- the circuit breaker and the self-fence --------------------------------------------------------
@action(ReasonBody)
async def arm(request: web.Request, rt: ServiceRuntime, body: ReasonBody) -> web.Response:
    """Re-arm automatic action after the circuit breaker opened (only moves from now on count)."""
    engine, actor = _engine(request), _actor(request)
    now = engine.clock.now()
    before = engine.coordinator.breaker(rt, now)
    await engine.coordinator.arm(rt, now)
    was = f"breaker was open since {before['since']}: {before['reason']}" if before["open"] else "breaker was closed"
    await engine.record("operator", f"{actor} re-armed automatic action for {rt.name} ({was}): {body.reason}",
                        service=rt.name, actor=actor, at=now, data={"action": "arm", "reason": body.reason,
                                                                    "was_open": before["open"]})
    engine.poke()
    return _json({"service": rt.name, "armed": True, "was_open": before["open"]})


class UnfenceBody(_Body):
    reason: str = Field(min_length=3, max_length=500)
    force: bool = Field(False, description="unfence although this engine does not hold the lease right now")


@action(UnfenceBody)
async def unfence(request: web.Request, rt: ServiceRuntime, body: UnfenceBody) -> web.Response:
    """Allow writes again on the active site's database after a self-fence (never done by the engine itself)."""
    engine, actor = _engine(request), _actor(request)
    if rt.config.database is None:
        return _error(409, "no_database", f"{rt.name} has no database pair")
    if rt.operation is not None:
        return _error(409, "operation_in_progress", f"operation {rt.operation.id} is {rt.operation.state}")
    if engine.config.instance.site != rt.state.active:
        return _error(409, "not_here", f"send this to the engine in {rt.state.active}: it keeps the self-fence "
                      "mark of its database")
    if engine.coordinator.grant_lost_at is not None and not body.force:
        return _error(409, "refused", "this engine is cut off from a majority of voters right now: unfencing could "
                      "let both sites take writes (force: true to do it anyway)",
                      reasons=[{"code": "no_lease", "detail": "a majority of voters does not hear this engine"}])
    from actions.database.fence import unfence as allow_writes

    site = rt.state.active
    step = await allow_writes(rt.config.database, site)
    now = engine.clock.now()
    ok = step.status == "ok"
    if ok:
        rt.self_fenced = None
        await engine.journal_or_fail().put_state(rt.name, "self_fenced", None, at=now)
    await engine.record("operator", f"{actor} unfenced the database of {rt.name} in {site}: {step.detail} "
                        f"({body.reason})", service=rt.name, actor=actor, at=now,
                        data={"action": "unfence", "site": site, "ok": ok, "force": body.force})
    return _json({"service": rt.name, "site": site, "ok": ok, "detail": step.detail}, 200 if ok else 409)


# -- manual failover -----------------------------------------------------------------------------
def failover_gates(engine: Engine, rt: ServiceRuntime, target: str, *, fence_first: bool | None = None,
                   ) -> list[dict[str, Any]]:
    """Every check with its verdict; ``blocking`` ones refuse the move unless forced. ``fence_first``:
    None for a move that does not ask (a drill), else whether the operator asked to fence a healthy
    active site before promoting."""
    snapshot = rt.snapshot(engine.clock.now())
    view = snapshot.sites[target]
    gates: list[dict[str, Any]] = [
        {"gate": "target_healthy", "blocking": True, "ok": str(view.health) == "up",
         "detail": f"{target} is {view.health} ({view.why()})"},
    ]
    if fence_first is not None:
        active_view = snapshot.sites[rt.state.active]
        healthy = str(active_view.health) == "up"
        gates.append({"gate": "active_not_healthy", "blocking": True, "ok": not healthy or fence_first,
                      "detail": (f"{rt.state.active} is {active_view.health}" if not healthy else
                                 f"{rt.state.active} is healthy: the runbook fences it first (fence_first)"
                                 if fence_first else
                                 f"{rt.state.active} is healthy: a planned move is a switchover (POST "
                                 f".../switchover); else fence_first: true (the fence must succeed), or force")})
    if rt.config.database is not None:
        lag, rpo = rt.lag_s, rt.config.policy.rpo
        gates.append({"gate": "lag_within_rpo", "blocking": True, "ok": lag is not None and lag <= rpo,
                      "detail": "replication lag unknown" if lag is None else f"lag {lag:.1f}s, RPO {rpo:g}s"})
    active_view = snapshot.sites[rt.state.active]
    gates.append({"gate": "active_site", "blocking": False, "ok": True,
                  "detail": f"{rt.state.active} is {active_view.health} ({active_view.why()})"})
    quorum = engine.coordinator.quorum_ok
    if rt.lease is not None and quorum is False:
        # from a minority the old site's engines look silent, yet the old primary may keep its lease through
        # the others and never fence itself: waiting out the lease proves nothing from here
        gates.append({"gate": "quorum", "blocking": True, "ok": False,
                      "detail": "quorum is lost: from a minority the old primary may still hold its lease and take "
                                "writes; fence it by hand first, then force"})
    else:
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
    if rt.operation is not None and rt.operation.state in (OpState.RUNNING, OpState.HALTED):
        return _error(409, "operation_in_progress",
                      f"operation {rt.operation.id} is {rt.operation.state}: retry or abort it first")
    drill = engine.drills.running.get(rt.name)
    if drill is not None and drill.kind == "full":
        return _error(409, "drill_in_progress", f"full drill {drill.id} is moving {rt.name}: let it finish")
    return None


async def _move(request: web.Request, rt: ServiceRuntime, *, kind: str, target: str, gates: list[dict[str, Any]],
                reason: str, dry_run: bool, force: bool, audit: dict[str, Any],
                evidence: dict[str, Any] | None = None) -> web.Response:
    """The common end of a manual move: dry run, refusal, or an audited start of the runbook."""
    engine, actor = _engine(request), _actor(request)
    blocked = [g for g in gates if g["blocking"] and not g["ok"]]
    reasons = [f"{g['gate']}: {g['detail']}" for g in blocked]
    if dry_run:
        from engine.switchover import switchover_specs

        specs = switchover_specs(rt) if (evidence or {}).get("planned") else step_specs(rt)
        return _json({"dry_run": True, "service": rt.name, "source": rt.state.active, "target": target,
                      "would": "refuse" if blocked and not force else "start",
                      "plan": [s.name for s in specs], "gates": gates, "reasons": reasons,
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
                               {"gates": gates, "actor": actor, "reason": reason, "force": force,
                                **decision_context(engine, rt, target), **(evidence or {})})
    op = await engine.coordinator.start_operation(rt, decision, now, trigger="manual", actor=actor, reason=reason,
                                                  kind=kind)
    return _json({"operation": op.id, "service": rt.name, "source": op.source, "target": op.target,
                  "forced_past": reasons}, 202)


@action(FailoverBody)
async def failover(request: web.Request, rt: ServiceRuntime, body: FailoverBody) -> web.Response:
    engine = _engine(request)
    target = _target(rt, body.target)
    refused = _cannot_act(engine, rt)
    if refused is not None:
        return refused
    return await _move(request, rt, kind="failover", target=target,
                       gates=failover_gates(engine, rt, target, fence_first=body.fence_first),
                       reason=body.reason, dry_run=body.dry_run, force=body.force,
                       audit={"fence_first": body.fence_first},
                       evidence={"require_fence": True} if body.fence_first else None)


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


@action(FailbackBody)
async def failback(request: web.Request, rt: ServiceRuntime, body: FailbackBody) -> web.Response:
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
    # both sites healthy: fail back as a switchover (fence, drain, promote, re-protect), losing nothing
    snapshot = rt.snapshot(engine.clock.now())
    both_up = all(str(snapshot.sites[s].health) == "up" for s in (home, rt.state.active))
    return await _move(request, rt, kind="failback", target=home, gates=gates, reason=body.reason,
                       dry_run=body.dry_run, force=False,
                       audit={"acknowledged_reconciliation": body.acknowledge_reconciliation, "planned": both_up},
                       evidence={"planned": True, "require_fence": True,
                                 "acknowledged_reconciliation": body.acknowledge_reconciliation} if both_up else None)


# -- planned switchover --------------------------------------------------------------------------
def switchover_preconditions(engine: Engine, rt: ServiceRuntime, target: str) -> list[dict[str, Any]]:
    """Why a switchover to ``target`` may not start now: ``{"code", "detail", "status"}`` (412: a
    precondition of the service's health; 409: the engine's own state). Empty: it may."""
    out: list[dict[str, Any]] = []
    refused = _cannot_act(engine, rt)
    if refused is not None:
        body = json.loads(refused.text or "{}")
        out.append({"code": body.get("error"), "detail": body.get("detail"), "status": 409})
    if rt.name in engine.drills.running:
        out.append({"code": "drill_in_progress", "detail": f"drill {engine.drills.running[rt.name].id} is running",
                    "status": 409})
    snapshot = rt.snapshot(engine.clock.now())
    for site, code in ((rt.state.active, "source_unhealthy"), (target, "target_unhealthy")):
        view = snapshot.sites[site]
        if str(view.health) != "up":
            out.append({"code": code, "detail": f"{site} is {view.health} ({view.why()}): a switchover needs both "
                        "sites healthy (else: failover)", "status": 412})
    if engine.coordinator.quorum_ok is False:
        out.append({"code": "no_quorum", "detail": "quorum is lost: the other voters could not follow the move",
                    "status": 412})
    if rt.config.database is not None:
        rep, lag, limit = rt.replication, rt.lag_s, rt.config.policy.switchover_max_lag
        if rep is None or str(rep.machine.state) != "up":
            out.append({"code": "replication_down", "detail": "replication to the standby is not up: " +
                        (rep.machine.describe() if rep is not None else "no replication signal"), "status": 412})
        elif lag is None or lag > limit:
            out.append({"code": "standby_lagging", "detail": ("replication lag unknown" if lag is None else
                        f"standby {lag:.1f}s behind, more than switchover_max_lag {limit:g}s"), "status": 412})
    return out


@action(SwitchoverBody)
async def switchover(request: web.Request, rt: ServiceRuntime, body: SwitchoverBody) -> web.Response:
    """A planned move with both sites healthy: zero acknowledged writes lost (see engine.switchover)."""
    engine, actor = _engine(request), _actor(request)
    now = engine.clock.now()
    journal = engine.journal_or_fail()
    if body.cancel:
        pending = journal.get_state(rt.name, "scheduled_switchover")
        await journal.put_state(rt.name, "scheduled_switchover", None, at=now)
        if pending:
            await engine.record("operator", f"{actor} cancelled the switchover of {rt.name} scheduled for "
                                f"{_utc(pending['at'])}: {body.reason}", service=rt.name, actor=actor,
                                data={"action": "cancel_switchover", "reason": body.reason})
        return _json({"service": rt.name, "cancelled": bool(pending)})
    target = _target(rt, body.target)
    if body.scheduled_at is not None and not body.dry_run:
        if not now < body.scheduled_at <= now + 30 * 86400:
            return _error(422, "invalid", "scheduled_at must be in the future, at most 30 days ahead")
        plan = {"at": body.scheduled_at, "target": target, "reason": body.reason, "actor": actor}
        await journal.put_state(rt.name, "scheduled_switchover", plan, at=now)
        await engine.record("operator", f"{actor} scheduled a switchover of {rt.name} to {target} at "
                            f"{_utc(body.scheduled_at)}: {body.reason}", service=rt.name, actor=actor,
                            data={"action": "schedule_switchover", **plan})
        return _json({"service": rt.name, "target": target, "scheduled_at": body.scheduled_at}, 202)
    return await start_switchover(engine, rt, target, actor=actor, reason=body.reason, dry_run=body.dry_run)


async def start_switchover(engine: Engine, rt: ServiceRuntime, target: str, *, actor: str, reason: str,
                           dry_run: bool = False, trigger: str = "manual") -> web.Response:
    from engine.switchover import switchover_specs

    if target == rt.state.active or target not in rt.config.sites:  # a scheduled plan the world overtook
        return _error(409, "already_active", f"{rt.name} is already active in {target}")
    problems = switchover_preconditions(engine, rt, target)
    if dry_run:
        return _json({"dry_run": True, "service": rt.name, "source": rt.state.active, "target": target,
                      "would": "refuse" if problems else "start", "plan": [s.name for s in switchover_specs(rt)],
                      "gates": [], "reasons": [f"{p['code']}: {p['detail']}" for p in problems],
                      "preconditions": problems})
    if problems:
        status = 409 if any(p["status"] == 409 for p in problems) else 412
        return _error(status, problems[0]["code"] if len(problems) == 1 else "preconditions_failed",
                      f"switchover of {rt.name} to {target} refused: " + "; ".join(p["detail"] for p in problems),
                      reasons=[{"code": p["code"], "detail": p["detail"]} for p in problems])
    now = engine.clock.now()
    await engine.record("operator", f"{actor} started a switchover of {rt.name} to {target}: {reason}",
                        service=rt.name, actor=actor, at=now,
                        data={"action": "switchover", "target": target, "reason": reason, "trigger": trigger})
    decision = ClusterDecision(Verdict.FAILOVER, f"switchover by {actor}: {reason}", target,
                               engine.config.instance.id, True, (),
                               {"actor": actor, "reason": reason, "planned": True, "require_fence": True,
                                **decision_context(engine, rt, target)})
    op = await engine.coordinator.start_operation(rt, decision, now, trigger=trigger, actor=actor, reason=reason,
                                                  kind="switchover")
    return _json({"operation": op.id, "service": rt.name, "source": op.source, "target": op.target}, 202)


def _utc(at: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if isinstance(at, int | float) else "?"


@action(PrepareFailbackBody)
async def prepare_failback(request: web.Request, rt: ServiceRuntime, body: PrepareFailbackBody) -> web.Response:
    """Reconcile, then replicate the current primary to the other site through the slot its promotion
    created: after a failover that prepares the failback; after a failback it re-protects the service."""
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
    op.evidence["deadline_from"] = engine.clock.now()  # an operator's retry gets a fresh runbook deadline
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
    app.router.add_post("/v1/services/{name}/arm", arm)
    app.router.add_post("/v1/services/{name}/unfence", unfence)
    app.router.add_post("/v1/services/{name}/resume", resume)
    app.router.add_post("/v1/services/{name}/failover", failover)
    app.router.add_post("/v1/services/{name}/failback", failback)
    app.router.add_post("/v1/services/{name}/switchover", switchover)
    app.router.add_post("/v1/services/{name}/prepare-failback", prepare_failback)
    app.router.add_post("/v1/operations/{id}/retry", retry)
    app.router.add_post("/v1/operations/{id}/abort", abort)

"""Gates: may this move, switchover or drill start now? Pure functions over plain facts.

Every manual move, a scheduled switchover, a drill and the coordinator read the same answers here;
HTTP turns them into responses (:mod:`engine.http.operator_routes`), nothing else decides.

- :func:`cannot_act`: refusals every move shares (a witness never acts; one open operation per
  service; no move while a full drill moves the service; no move over an unacknowledged DNS drift,
  :func:`drift_refusal`).
- :func:`failover_gates`: a manual failover; each :class:`Gate` is ``blocking`` (refuses unless
  forced) or informative.
- :func:`failback_gates`: home healthy long enough, reverse replication caught up, the last
  reconciliation clean (or acknowledged).
- :func:`switchover_preconditions`: why a zero-loss switchover may not start (``precondition``:
  the service's health, 412; ``conflict``: the engine's own state, 409).
- :func:`drill_refusals`: why a drill may not start.
- :func:`choose_target`: the site a move goes to.

The facts come from the runtime as a :class:`ServiceFacts` built once per request; the functions
return values (:class:`GateResult`, :class:`Refusal`), never raise for a refusal, and do no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.core.decide import SiteView

RefusalKind = Literal["conflict", "precondition", "invalid", "not_found", "unavailable"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why something may not happen: a machine-readable code, a sentence, and its kind (HTTP maps the kind)."""

    code: str
    detail: str
    kind: RefusalKind = "conflict"

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Gate:
    gate: str
    ok: bool
    detail: str
    blocking: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "blocking": self.blocking, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class GateResult:
    """Every gate with its verdict; ``allowed`` when no blocking gate failed."""

    gates: tuple[Gate, ...]

    @property
    def blocked(self) -> tuple[Gate, ...]:
        return tuple(g for g in self.gates if g.blocking and not g.ok)

    @property
    def allowed(self) -> bool:
        return not self.blocked

    @property
    def reasons(self) -> list[str]:
        return [f"{g.gate}: {g.detail}" for g in self.blocked]

    def get(self, name: str) -> Gate | None:
        return next((g for g in self.gates if g.gate == name), None)

    def to_list(self) -> list[dict[str, Any]]:
        return [g.to_dict() for g in self.gates]


@dataclass(frozen=True, slots=True)
class ServiceFacts:
    """What the gates read about one service, as plain values (the runtime builds it)."""

    service: str
    active: str
    home: str
    sites: Mapping[str, SiteView]  # every site's health now (this instance's view)
    role: str = "engine"  # this instance's role: a witness never acts
    paused: bool = False
    operation: tuple[str, str] | None = None  # (id, state) of the open operation of the service
    drill: tuple[str, str] | None = None  # (id, kind) of the drill this instance runs for the service
    quorum_ok: bool | None = None  # None: not known yet
    has_peers: bool = True
    has_lease: bool = False
    has_database: bool = False
    lag_s: float | None = None
    rpo: float = 30.0
    replication: str | None = None  # the replication signal's health ("up", ...); None: no signal
    replication_detail: str = "no replication signal"
    switchover_max_lag: float = 5.0
    home_up_for: float | None = None  # how long every signal of the home site has been up; None: not all up
    failback_healthy_for: float = 300.0
    last_reconciliation: Mapping[str, Any] | None = None
    peer_busy: Sequence[str] = field(default_factory=tuple)  # what peers announce (a drill, a runbook)
    sync_confirmed: str | None = None  # synchronous commit confirmed now: the sentence saying so (engine.core.loss)
    dns_drift: str | None = None  # what the DNS records differ in, not acknowledged by an operator; None: no drift

    def health(self, site: str) -> str:
        return str(self.sites[site].health)


def drift_refusal(f: ServiceFacts) -> Refusal | None:
    """A move over DNS records someone else changed would overwrite that change: refused until acknowledged."""
    if f.dns_drift is None:
        return None
    return Refusal("dns_drift", f"dns_drift: {f.dns_drift}; check who changed the records, then acknowledge it "
                   f"(`failover-engine acknowledge-drift {f.service} --reason ...`)")


def cannot_act(f: ServiceFacts) -> Refusal | None:
    """Refusals every move shares: a witness never acts; one runbook per service; not during a full drill;
    not over an unacknowledged DNS drift."""
    if f.role != "engine":
        return Refusal("witness", "a witness never acts: send this to an engine")
    drifted = drift_refusal(f)
    if drifted is not None:
        return drifted
    if f.operation is not None:
        op_id, state = f.operation
        return Refusal("operation_in_progress", f"operation {op_id} is {state}: retry or abort it first")
    if f.drill is not None and f.drill[1] == "full":
        return Refusal("drill_in_progress", f"full drill {f.drill[0]} is moving {f.service}: let it finish")
    return None


def choose_target(f: ServiceFacts, requested: str | None) -> str | Refusal:
    """The site a move goes to: the one asked for, else the only other site."""
    others = [s for s in f.sites if s != f.active]
    target = requested or (others[0] if len(others) == 1 else None)
    if target is None:
        return Refusal("invalid", f"target: choose one of {others}", "invalid")
    if target not in f.sites:
        return Refusal("unknown_site", f"{target!r} is not a site of {f.service}: {sorted(f.sites)}", "not_found")
    if target == f.active:
        return Refusal("already_active", f"{f.service} is already active in {target}")
    return target


def failover_gates(f: ServiceFacts, target: str, *, fence_first: bool | None = None) -> GateResult:
    """A manual failover to ``target``. ``fence_first``: None for a move that does not ask (a drill),
    else whether the operator asked to fence a healthy active site before promoting."""
    view = f.sites[target]
    gates = [Gate("target_healthy", str(view.health) == "up", f"{target} is {view.health} ({view.why()})")]
    active_view = f.sites[f.active]
    if fence_first is not None:
        healthy = str(active_view.health) == "up"
        gates.append(Gate("active_not_healthy", not healthy or fence_first,
                          f"{f.active} is {active_view.health}" if not healthy else
                          f"{f.active} is healthy: the runbook fences it first (fence_first)" if fence_first else
                          f"{f.active} is healthy: a planned move is a switchover (POST .../switchover); else "
                          "fence_first: true (the fence must succeed), or force"))
    if f.has_database and f.sync_confirmed is not None:
        gates.append(Gate("lag_within_rpo", True, f.sync_confirmed))
    elif f.has_database:
        lag = f.lag_s
        gates.append(Gate("lag_within_rpo", lag is not None and lag <= f.rpo,
                          "replication lag unknown" if lag is None else f"lag {lag:.1f}s, RPO {f.rpo:g}s"))
    gates.append(Gate("active_site", True, f"{f.active} is {active_view.health} ({active_view.why()})",
                      blocking=False))
    if f.has_lease and f.quorum_ok is False:
        # from a minority the old site's engines look silent, yet the old primary may keep its lease through
        # the others and never fence itself: waiting out the lease proves nothing from here
        gates.append(Gate("quorum", False, "quorum is lost: from a minority the old primary may still hold its lease "
                          "and take writes; fence it by hand first, then force"))
    else:
        gates.append(Gate("quorum", True, "not required for a manual failover"
                          + ("" if f.quorum_ok in (None, True) else " (quorum is lost right now)"), blocking=False))
    gates.append(Gate("paused", True, "paused: automatic action is off; manual action is allowed" if f.paused
                      else "not paused", blocking=False))
    return GateResult(tuple(gates))


def failback_gates(f: ServiceFacts, *, acknowledge_reconciliation: bool = False) -> GateResult:
    """Home healthy long enough, reverse replication caught up, last reconciliation clean (or acknowledged)."""
    home, need = f.home, f.failback_healthy_for
    up_for = f.home_up_for
    gates = [Gate("home_healthy", up_for is not None and up_for >= need,
                  f"{home} up for {up_for:.0f}s (need {need:g}s)" if up_for is not None
                  else f"{home} is not up: {f.sites[home].why()}")]
    if f.has_database:
        lag = f.lag_s
        caught_up = f.replication == "up" and lag is not None and lag <= f.rpo
        gates.append(Gate("reverse_replication", caught_up, f"{f.active} -> {home}: " + (
            f"lag {lag:.1f}s" if caught_up and lag is not None
            else f.replication_detail + " (POST .../prepare-failback sets it up)")))
        last = f.last_reconciliation
        clean = bool(last and last.get("identical"))
        gates.append(Gate("reconciliation", clean, str((last or {}).get("sentence", "no reconciliation yet"))
                          + (" (acknowledged)" if acknowledge_reconciliation and not clean else ""),
                          blocking=not acknowledge_reconciliation))
    return GateResult(tuple(gates))


def switchover_preconditions(f: ServiceFacts, target: str) -> list[Refusal]:
    """Why a switchover to ``target`` may not start now (empty: it may)."""
    out: list[Refusal] = []
    refused = cannot_act(f)
    if refused is not None:
        out.append(refused)
    if f.drill is not None:
        out.append(Refusal("drill_in_progress", f"drill {f.drill[0]} is running"))
    for site, code in ((f.active, "source_unhealthy"), (target, "target_unhealthy")):
        view = f.sites[site]
        if str(view.health) != "up":
            out.append(Refusal(code, f"{site} is {view.health} ({view.why()}): a switchover needs both sites healthy "
                               "(else: failover)", "precondition"))
    if f.quorum_ok is False:
        out.append(Refusal("no_quorum", "quorum is lost: the other voters could not follow the move", "precondition"))
    if f.has_database:
        lag, limit = f.lag_s, f.switchover_max_lag
        if f.replication != "up":
            out.append(Refusal("replication_down", "replication to the standby is not up: " + f.replication_detail,
                               "precondition"))
        elif lag is None or lag > limit:
            out.append(Refusal("standby_lagging", "replication lag unknown" if lag is None else
                               f"standby {lag:.1f}s behind, more than switchover_max_lag {limit:g}s", "precondition"))
    return out


def drill_refusals(f: ServiceFacts, kind: str, *, running_drill: str | None = None) -> list[Refusal]:
    """Why a drill of ``kind`` may not start now (empty: it may)."""
    out: list[Refusal] = []
    if f.role != "engine":
        out.append(Refusal("witness", "a witness never drills: send this to an engine"))
    if running_drill is not None:
        out.append(Refusal("drill_in_progress", f"drill {running_drill} is running for {f.service}"))
    if f.operation is not None:
        out.append(Refusal("operation_in_progress", f"operation {f.operation[0]} is {f.operation[1]}: a real failover "
                           "comes first"))
    if f.paused:
        out.append(Refusal("paused", f"{f.service} is paused: no drill while in maintenance"))
    if f.quorum_ok is False or (f.quorum_ok is None and f.has_peers):
        out.append(Refusal("no_quorum", "quorum is lost or not known yet: a drill must not run blind"))
    out.extend(Refusal("peer_busy", b) for b in f.peer_busy)
    drifted = drift_refusal(f)
    if kind == "full" and drifted is not None:  # a shadow drill moves nothing
        out.append(drifted)
    if kind == "full" and f.active != f.home:
        out.append(Refusal("not_home", f"{f.service} is active in {f.active}, not its home {f.home}: fail back "
                           "before a full drill"))
    return out

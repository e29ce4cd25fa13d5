"""Every voter's view side by side (``GET /v1/cluster``): this engine's own, and each peer's latest verdict.

Implements :class:`engine.core.ports.ClusterPort`. Per service and per voter: the active site and
epoch it believes in, the health it sees of each site, the replication lag it knows, whether it is
paused, the operator state it holds with versions (:mod:`engine.core.operator_state`), and how old
that view is here; then the fields on which the voters that have a view disagree, and the operator
state conflicts this engine came across. A voter never heard from is listed with no view.
"""

from __future__ import annotations

from typing import Any

from engine.core.operator_state import disagreements
from engine.core.verdict import ServiceVerdict
from engine.runtime.context import RuntimeContext
from engine.runtime.peering import Peering
from engine.runtime.service import ServiceRuntime
from engine.runtime.shared_operator import SharedOperatorState


def _row(view: ServiceVerdict) -> dict[str, Any]:
    operator = {key: {"value": dict(s.value), "version": s.version, "voter": s.voter, "at": s.at, "by": s.by}
                for key, s in sorted((view.operator or {}).items())}
    return {"active": view.active, "epoch": view.epoch, "sites": dict(sorted(view.sites.items())),
            "lag_s": view.lag_s, "paused": view.paused, "operator": operator}


def _compared(row: dict[str, Any]) -> dict[str, Any]:
    """The fields compared across voters: the operator state by each key's version and writer."""
    flat = {k: v for k, v in row.items() if k not in ("operator", "lag_s")}
    for key, entry in row["operator"].items():
        flat[f"operator.{key}"] = (entry["version"], entry["voter"])
    return flat


class ClusterView:
    def __init__(self, ctx: RuntimeContext, peering: Peering, shared: SharedOperatorState) -> None:
        self.ctx = ctx
        self.peering = peering
        self.shared = shared

    def _own(self, rt: ServiceRuntime, now: float) -> ServiceVerdict:
        return ServiceVerdict(active=rt.state.active, epoch=rt.state.epoch,
                              sites={s: v.health.value for s, v in rt.snapshot(now).sites.items()},
                              lag_s=rt.lag_s, paused=rt.state.paused, operator=self.shared.stamps(rt.name))

    def cluster(self) -> dict[str, Any]:
        ctx, now, mono = self.ctx, self.ctx.clock.now(), self.ctx.clock.monotonic()
        me = ctx.config.instance
        own_age = None if ctx.last_tick is None else round(max(0.0, mono - ctx.last_tick), 3)
        voters: list[dict[str, Any]] = [{"id": me.id, "site": me.site, "role": me.role, "self": True,
                                         "age_s": own_age}]
        for peer in self.peering.peers.values():
            heard, verdict = peer.effective_heard(), peer.verdict
            voters.append({"id": peer.id, "site": None if verdict is None else verdict.site,
                           "role": None if verdict is None else verdict.role, "self": False,
                           "age_s": None if heard is None else round(max(0.0, mono - heard), 3)})
        services: dict[str, Any] = {}
        for rt in ctx.services.values():
            views: dict[str, dict[str, Any] | None] = {me.id: _row(self._own(rt, now))}
            for peer in self.peering.peers.values():
                got = None if peer.verdict is None else peer.verdict.services.get(rt.name)
                views[peer.id] = None if got is None else _row(got)
            seen = {voter: _compared(row) for voter, row in views.items() if row is not None}
            services[rt.name] = {
                "views": views,
                "disagree": disagreements(seen),
                "conflicts": [c.to_dict() for c in self.shared.conflicts.get(rt.name, [])],
            }
        return {"instance": me.id, "at": now, "voters": voters, "services": services}

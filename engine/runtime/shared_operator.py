"""Cluster-wide operator state in peer mode: publish a local change, adopt a peer's, apply the merged state.

An operator's pause or resume, an arm, a DNS drift acknowledgement, or the circuit breaker tripping is
written here as a versioned entry (:mod:`engine.core.operator_state`), journaled (state key
``operator_state``), and sent with every verdict of this voter. Each tick the coordinator hands the
peers' entries to :meth:`SharedOperatorState.adopt`: the merge keeps the higher version per key, and a
key a peer changed is applied here too (the service paused or resumed, the breaker opened or re-armed,
the drift acknowledged), so every voter refuses or allows automatic action alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.core.decide import ServiceState
from engine.core.operator_state import Conflict, Stamped, breaker_open, merge, paused, write
from engine.core.verdict import OperatorStamp
from engine.runtime.context import RuntimeContext
from engine.runtime.peering import Peering
from engine.runtime.service import ServiceRuntime

JOURNAL_KEY = "operator_state"


class SharedOperatorState:
    def __init__(self, ctx: RuntimeContext, peering: Peering) -> None:
        self.ctx = ctx
        self.peering = peering
        self.states: dict[str, dict[str, Stamped]] = {}
        self.conflicts: dict[str, list[Conflict]] = {}
        self.seen = 0  # the highest version this voter has seen (its Lamport clock)

    def load(self) -> None:
        """The journaled state of every service (after a restart the versions continue where they were)."""
        journal = self.ctx.journal_or_fail()
        for name in self.ctx.services:
            raw = journal.get_state(name, JOURNAL_KEY) or {}
            state = {key: Stamped.from_dict(entry) for key, entry in raw.items()}
            self.states[name] = state
            self.seen = max([self.seen, *(s.version for s in state.values())])

    def state(self, service: str) -> dict[str, Stamped]:
        return self.states.get(service, {})

    def stamps(self, service: str) -> dict[Any, OperatorStamp] | None:
        """This voter's entries of ``service`` as a verdict carries them (None: nothing set yet)."""
        state = self.state(service)
        if not state:
            return None
        return {key: OperatorStamp(value=dict(s.value), version=s.version, voter=s.voter, at=s.at, by=s.by)
                for key, s in state.items()}

    async def publish(self, rt: ServiceRuntime, key: str, value: Mapping[str, Any], by: str | None) -> Stamped:
        """Set ``key`` of ``rt`` from this voter (already applied here by the caller); peers adopt it."""
        now = self.ctx.clock.now()
        state = write(self.state(rt.name), self.seen, key, value, self.ctx.instance_id, now, by)
        entry = state[key]
        self.seen = entry.version
        self.states[rt.name] = state
        await self._save(rt.name, now)
        return entry

    async def _save(self, service: str, now: float) -> None:
        await self.ctx.journal_or_fail().put_state(
            service, JOURNAL_KEY, {k: s.to_dict() for k, s in self.state(service).items()}, at=now)

    async def adopt(self, rt: ServiceRuntime, now: float) -> list[str]:
        """Merge every fresh peer verdict's entries of ``rt``; apply and journal the keys that changed."""
        mine = self.state(rt.name)
        merged: dict[str, Stamped] = dict(mine)
        found: list[Conflict] = []
        for got in self.peering.received_for(rt.name).values():
            if got is None or not got.view.operator:
                continue
            theirs: dict[str, Stamped] = {key: Stamped(dict(s.value), s.version, s.voter, s.at, s.by)
                      for key, s in got.view.operator.items()}
            merged, conflicts = merge(merged, theirs)
            found.extend(conflicts)
        self.seen = max([self.seen, *(s.version for s in merged.values())])
        await self._note_conflicts(rt, found, now)
        return await self.keep_merged(rt, mine, merged, now)

    async def keep_merged(self, rt: ServiceRuntime, mine: dict[str, Stamped], merged: dict[str, Stamped],
                          now: float, *, versions: str = "version", skip_own: bool = False) -> list[str]:
        """Keep ``merged`` where it differs from ``mine`` (saved, each adopted key journaled, then applied); the
        changed keys. ``skip_own``: a write of this voter coming back unchanged is not journaled again."""
        changed = [key for key, s in merged.items() if mine.get(key) != s]
        if not changed:
            return []
        self.states[rt.name] = merged
        await self._save(rt.name, now)
        for key in changed:
            entry = merged[key]
            if skip_own and entry.voter == self.ctx.instance_id and mine.get(key) is not None \
                    and dict(mine[key].value) == dict(entry.value):
                continue  # our own write coming back
            await self.ctx.record("operator", f"{rt.name}: adopted {key} {dict(entry.value)} at {versions} "
                                  f"{entry.version} from {entry.voter}", service=rt.name, actor=entry.by, at=now,
                                  data={"action": "adopt", "key": key, **entry.to_dict()})
        await self.apply(rt, changed, now)
        return changed

    async def _note_conflicts(self, rt: ServiceRuntime, found: list[Conflict], now: float) -> None:
        known = {(c.key, c.kept.order, c.overruled.order) for c in self.conflicts.get(rt.name, [])}
        for conflict in found:
            mark = (conflict.key, conflict.kept.order, conflict.overruled.order)
            if mark in known:  # seen before, or from another peer in this same round
                continue
            known.add(mark)
            self.conflicts.setdefault(rt.name, []).append(conflict)
            del self.conflicts[rt.name][:-16]  # the latest few are shown
            await self.ctx.record("alert", f"{rt.name}: conflicting {conflict.key} at version "
                                  f"{conflict.kept.version}: {conflict.kept.voter}'s {dict(conflict.kept.value)} "
                                  f"kept, {conflict.overruled.voter}'s {dict(conflict.overruled.value)} overruled",
                                  service=rt.name, at=now, data={"conflict": conflict.to_dict()})

    async def apply(self, rt: ServiceRuntime, keys: list[str], now: float) -> None:
        """Make this voter act on the merged values of ``keys`` (a peer changed them)."""
        ctx, journal, state = self.ctx, self.ctx.journal_or_fail(), self.state(rt.name)
        if "pause" in keys:
            is_paused, until = paused(state, now)
            rt.paused_until = until
            await journal.put_state(rt.name, "paused_until", until, at=now)
            if rt.state.paused != is_paused:
                entry = state["pause"]
                word = "paused" if is_paused else "resumed"
                await ctx.set_state(rt, ServiceState(rt.state.active, rt.state.epoch, is_paused,
                                                     rt.state.last_move_at), now,
                                    f"{rt.name} {word} cluster-wide by {entry.by} on {entry.voter}: "
                                    f"{entry.value.get('reason')}")
        if "breaker" in keys or "arm" in keys:
            trip = breaker_open(state)
            if trip is not None:
                record: dict[str, Any] = {"open": True, "since": trip.get("since"), "reason": trip.get("reason")}
            else:
                armed = state.get("arm")
                record = {"open": False, "armed_at": None if armed is None else armed.value.get("armed_at")}
            await journal.put_state(rt.name, "breaker", record, at=now)
            ctx.metrics.breaker_open.labels(rt.name).set(1 if trip is not None else 0)
        if "drift_ack" in keys:
            ack = state["drift_ack"].value
            rt.dns_drift_ack = None if ack.get("key") is None else str(ack["key"])
            await journal.put_state(rt.name, "dns_drift_ack", dict(ack), at=now)

"""The synchronous replication watch of one service: one step of :mod:`engine.core.sync_mode` per tick.

Every engine with the service's ``database:`` runs one: each tick it reads the current primary
(:func:`actions.database.synchronous.observe`), steps the pure machine, and, **only when it may act**
(the engine runs in the active site, like reconciliation), carries out the machine's action: name the
standby or stop naming it (:func:`actions.database.synchronous.set_standby_name`). An engine that may
not act keeps the same machine as an observer: its state and ``confirmed_at`` are what *it* saw, on
its own clock, and that is the synchronous evidence its loss verdict uses after a failover
(:meth:`SyncWatch.evidence`). Every change of state, and every action with its result, is handed to
``record(sentence, data, alert)`` (journal + event; ``alert`` for a degrade, strict waiting, and a
failed action); :meth:`status` is the status line; :func:`export_state` sets the metric.

The reads and the setter come in as functions (defaults: the real actions), so tests pass fakes.
After a move, :meth:`primary_changed` starts the machine again for the new primary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from actions.database.results import Step
from actions.database.synchronous import observe, set_standby_name, standby_name
from engine.config.database import DatabaseConfig
from engine.core.loss import SyncEvidence, write_stall
from engine.core.sync_mode import SyncObservation, SyncSettings, SyncState, Transition, initial, step

Observe = Callable[[DatabaseConfig, str], Awaitable[SyncObservation]]
SetName = Callable[[DatabaseConfig, str, "str | None"], Awaitable[Step]]
Record = Callable[[str, dict[str, Any], bool], Awaitable[None]]

KINDS = ("off", "engaging", "sync", "at_risk", "waiting", "degraded")


def settings_of(config: DatabaseConfig) -> SyncSettings:
    d = config.synchronous_degrade
    return SyncSettings(config.synchronous, d.after, d.commit_wait_limit, d.restore_lag, d.check_interval)


def export_state(gauge: Any, service: str, kind: str) -> None:
    """Set ``failover_engine_synchronous_state{service, state}``: 1 for ``kind``, 0 for the others."""
    for each in KINDS:
        gauge.labels(service=service, state=each).set(1 if each == kind else 0)


class SyncWatch:
    def __init__(self, config: DatabaseConfig, *, service: str, primary: str, clock: Callable[[], float],
                 record: Record, may_act: Callable[[], bool], observe_fn: Observe = observe,
                 set_name: SetName = set_standby_name, gauge: Any = None) -> None:
        config.other_site(primary)
        self.config, self.service, self.primary = config, service, primary
        self.settings = settings_of(config)
        self.clock, self.record, self.may_act = clock, record, may_act
        self._observe, self._set_name = observe_fn, set_name
        self.gauge = gauge  # failover_engine_synchronous_state, set after every tick when given
        self.state: SyncState = initial(self.settings.mode, clock())
        self.last: Transition | None = None

    def primary_changed(self, site: str) -> None:
        """After a move: watch the new primary from the start (nothing it saw of the old one carries over)."""
        self.config.other_site(site)
        self.primary = site
        self.state = initial(self.settings.mode, self.clock())

    def evidence(self) -> SyncEvidence:
        """What this engine saw of synchronous commit on the primary (for :func:`engine.core.loss.judge`)."""
        return self.state.evidence(self.settings)

    def status(self) -> dict[str, Any]:
        """The status line of the mode: state, since, last confirmation, and what a lost standby costs."""
        _, stall = write_stall(self.settings.mode, self.settings.degrade_after)
        return {"mode": self.settings.mode, "state": self.state.kind, "since": self.state.since,
                "confirmed_at": self.state.confirmed_at, "primary": self.primary,
                "sentence": self.last.sentence if self.last else f"synchronous {self.settings.mode}: not checked yet",
                "standby_lost": stall}

    async def tick(self) -> Transition:
        """Observe, step, act (when allowed), record what changed."""
        seen = await self._observe(self.config, self.primary)
        now = self.clock()
        before = self.state
        move = step(before, seen, self.settings, now)
        self.state, self.last = move.state, move
        if self.gauge is not None:
            export_state(self.gauge, self.service, move.state.kind)
        data: dict[str, Any] = {"service": self.service, "primary": self.primary, "from": before.kind,
                                "to": move.state.kind, "condition": move.condition, "action": move.action}
        if move.action != "none" and self.may_act():
            name = standby_name(self.config) if move.action == "name" else None
            done = await self._set_name(self.config, self.primary, name)
            data["result"] = done.to_dict()
            if done.status == "failed":
                await self.record(f"{move.sentence}; FAILED: {done.detail}", data, True)
                return move
            await self.record(f"{move.sentence} ({done.detail})", data,
                              move.action == "clear" and self.settings.mode == "on")
            return move
        if move.action != "none":
            data["acted"] = False  # an observer: the engine of the active site acts
        if move.state.kind != before.kind:
            await self.record(move.sentence, data, move.state.kind in ("waiting", "at_risk", "degraded"))
        return move

    async def run(self) -> None:
        """Tick every ``check_interval`` until cancelled; a failed tick is recorded, never fatal."""
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self.tick()
            except Exception as exc:  # the watch must outlive a bad tick; it says why
                await self.record(f"synchronous watch tick failed: {type(exc).__name__}: {exc}",
                                  {"service": self.service}, True)
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, self.settings.check_interval - elapsed))

"""The self-fencing lease, as this engine keeps it (the arithmetic: :mod:`engine.config.lease`).

Each tick the coordinator hands :meth:`LeaseWatch.check` the voter count: grants are the fresh voters
that hear this engine. Cut off from a majority for ``self_fence_after``, an engine in the active site
fences its own database (retried every ``SELF_FENCE_RETRY`` while it fails, paged once). The runbook's
fence step asks :meth:`LeaseWatch.lease_remaining` how long the old site's engines must still stay
silent before the standby may be promoted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actions.database.fence import fence
from engine.runtime.context import RuntimeContext
from engine.runtime.peering import Peering
from engine.runtime.service import ServiceRuntime

SELF_FENCE_RETRY = 30.0  # seconds between attempts when fencing our own database failed


class LeaseWatch:
    def __init__(self, ctx: RuntimeContext, peering: Peering) -> None:
        self.ctx = ctx
        self.peering = peering
        self.started_mono: float | None = None
        self._self_fencing: set[str] = set()
        self._ever_granted = False
        self._self_fence_retry_at: dict[str, float] = {}  # monotonic: when a failed self-fence is tried again
        self._tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def check(self, now: float, mono: float, voters: int, majority: int) -> None:
        """Count the grants (fresh voters that hear us); cut off from a majority for ``self_fence_after``,
        an engine in the active site fences its own database. Only with 3 or more voters: with two,
        the other side never moves by itself, so there is nothing to fence against."""
        ctx = self.ctx
        if voters < 3 or ctx.config.instance.role != "engine":
            return
        started = self.started_mono if self.started_mono is not None else mono
        if mono - started < 3 * ctx.config.instance.tick + 1.0:
            return  # the peers' first verdicts (and their grants) are still on the way
        granted = 1 + len(self.peering.granted_by())
        ctx.metrics.lease_granted.set(1 if granted >= majority else 0)
        if granted >= majority:
            self._ever_granted = True
            if self.ctx.grant_lost_at is not None:
                message = f"lease regained: {granted} of {voters} voters hear this engine"
                await ctx.record("lease", message, at=now, data={"granted": granted})
                await ctx.notify("quorum", message, None, {"granted": granted})
            self.ctx.grant_lost_at = None
            return
        if self.ctx.grant_lost_at is None:
            # never granted since this process started: count from the start (a restart while cut off still fences)
            self.ctx.grant_lost_at = started if not self._ever_granted else mono
            message = (f"lease lost: only {granted} of {voters} voters hear this engine (need {majority}); an engine "
                       "in the active site fences its database if this lasts")
            await ctx.record("lease", message, at=now, data={"granted": granted})
            await ctx.notify("quorum", message, None, {"granted": granted})
        lost_for = mono - self.ctx.grant_lost_at
        for rt in ctx.services.values():
            lease = ctx.config.lease(rt.name)
            if (lease is None or rt.state.active != ctx.config.instance.site or rt.self_fenced is not None
                    or lost_for < lease.self_fence_after or rt.name in self._self_fencing
                    or mono < self._self_fence_retry_at.get(rt.name, 0.0)):
                continue
            self._self_fencing.add(rt.name)
            task = asyncio.create_task(self._self_fence(rt, now, granted, voters, lost_for),
                                       name=f"self-fence {rt.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _self_fence(self, rt: ServiceRuntime, now: float, granted: int, voters: int, lost_for: float) -> None:
        ctx = self.ctx
        site = ctx.config.instance.site
        assert rt.config.database is not None
        try:
            result = await fence(rt.config.database, site)
        finally:
            self._self_fencing.discard(rt.name)
        reason = (f"cut off from the voters for {lost_for:.1f}s (only {granted} of {voters} hear this engine): "
                  f"the other side may promote once the lease has passed")
        data = {"site": site, "epoch": rt.state.epoch, "reason": reason, "result": result.to_dict()}
        failed_before = rt.name in self._self_fence_retry_at
        if result.ok and not result.skipped:
            self._self_fence_retry_at.pop(rt.name, None)
            rt.self_fenced = {"at": ctx.clock.now(), "epoch": rt.state.epoch, "reason": reason}
            await ctx.journal_or_fail().put_state(rt.name, "self_fenced", rt.self_fenced, at=ctx.clock.now())
            message = (f"{rt.name}: self-fenced the database in {site} ({result.sentence}); {reason}. It stays "
                       f"fenced until an operator unfences it (POST /v1/services/{rt.name}/unfence)")
        else:
            self._self_fence_retry_at[rt.name] = ctx.clock.monotonic() + SELF_FENCE_RETRY
            message = (f"{rt.name}: self-fencing the database in {site} FAILED: {result.sentence}; {reason}; "
                       f"trying again every {SELF_FENCE_RETRY:g}s")
        await ctx.record("fence", message, service=rt.name, data=data)
        if not failed_before:  # one page per streak of failures, not one per attempt
            await ctx.notify("page", message, rt.name, data)

    def lease_remaining(self, site: str, lease_wait: float) -> tuple[float, list[str], float | None]:
        """How long before every engine of ``site`` has been silent for ``lease_wait`` (0: now), what was heard
        of each, and (wall clock) when the last of them was last heard. An engine never heard since this
        process started counts from the start."""
        ctx = self.ctx
        mono = ctx.clock.monotonic()
        started = self.started_mono if self.started_mono is not None else mono
        remaining = 0.0
        notes = []
        latest: float | None = None
        for peer_cfg in ctx.config.peers:
            if peer_cfg.site != site or peer_cfg.role != "engine":
                continue
            heard = self.peering.peers[peer_cfg.id].effective_heard()
            since = heard if heard is not None else started
            remaining = max(remaining, lease_wait - (mono - since))
            latest = since if latest is None else max(latest, since)
            notes.append(f"{peer_cfg.id} last heard {mono - since:.1f}s ago"
                         + ("" if heard is not None else " (never since this engine started)"))
        wall = None if latest is None else ctx.clock.now() - (mono - latest)
        return max(0.0, remaining), notes, wall

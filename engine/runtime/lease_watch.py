"""The self-fencing lease, as this engine keeps it (the arithmetic: :mod:`engine.config.lease`).

Each tick the coordinator hands :meth:`LeaseWatch.check` the voter count: grants are the fresh voters
that hear this engine. Cut off from a majority for ``self_fence_after``, an engine in the active site
fences its own database (retried every ``SELF_FENCE_RETRY`` while it fails, paged once). The runbook's
fence step asks :meth:`LeaseWatch.release` whether the old site's engines have given the lease up
(their verdicts report their primary not writable) or stayed silent long enough for the standby to
be promoted (:func:`engine.core.lease_rules.lease_release`).

The lease is about a writable database: :meth:`LeaseWatch.local_primary` turns this engine's heartbeats
on its local primary into the ``primary_writable`` of its verdict, and journals the moment it gives
the lease up (its primary stopped taking writes) or takes it back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actions.database.fence import fence
from engine.core.lease_rules import LeaseRelease, OldSiteEngine, lease_release
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
        self._given_up: dict[str, bool] = {}  # service -> this engine has given its write lease up

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
                       f"fenced until an operator unfences it (`failover-engine unfence {rt.name} --reason ...`)")
        else:
            self._self_fence_retry_at[rt.name] = ctx.clock.monotonic() + SELF_FENCE_RETRY
            message = (f"{rt.name}: self-fencing the database in {site} FAILED: {result.sentence}; {reason}; "
                       f"trying again every {SELF_FENCE_RETRY:g}s")
        await ctx.record("fence", message, service=rt.name, data=data)
        if not failed_before:  # one page per streak of failures, not one per attempt
            await ctx.notify("page", message, rt.name, data)

    # -- the lease is about a writable database (issue 17, item 3) -------------------------------------
    async def local_primary(self, rt: ServiceRuntime, now: float) -> bool | None:
        """``primary_writable`` for this engine's verdict: what its heartbeats say of its local primary while
        its site is the active one (None elsewhere, or unknown). Journals giving the lease up and taking it back."""
        ctx = self.ctx
        site = ctx.config.instance.site
        watch = rt.database
        if ctx.config.instance.role != "engine" or watch is None or rt.state.active != site:
            self._given_up.pop(rt.name, None)
            return None
        writable: bool | None = watch.writability.writable(ctx.clock.monotonic())
        given_up = writable is False
        if given_up != self._given_up.get(rt.name, False):
            self._given_up[rt.name] = given_up
            said = watch.writability.describe(ctx.clock.monotonic())
            if given_up:
                message = (f"{rt.name}: the database in {site} is {said}: this engine gives up the write lease, so "
                           "the other site may promote its standby without waiting out the lease")
            else:
                message = f"{rt.name}: the database in {site} is {said} again: this engine holds the write lease"
            await ctx.record("lease", message, service=rt.name, at=now,
                             data={"site": site, "primary_writable": writable})
            if given_up:
                await ctx.notify("alert", message, rt.name, {"site": site})
        return writable

    def given_up(self, service: str) -> bool:
        return self._given_up.get(service, False)

    def release(self, service: str, site: str, epoch: int, lease_wait: float) -> tuple[LeaseRelease, float | None]:
        """Whether the standby may be promoted although the old primary in ``site`` was not fenced from here
        (:func:`~engine.core.lease_rules.lease_release`), and (wall clock) when its engines were last heard."""
        ctx = self.ctx
        mono = ctx.clock.monotonic()
        started = self.started_mono if self.started_mono is not None else mono
        received = self.peering.received_for(service)
        engines = []
        latest: float | None = None
        for peer_cfg in ctx.config.peers:
            if peer_cfg.site != site or peer_cfg.role != "engine":
                continue
            heard = self.peering.peers[peer_cfg.id].effective_heard()
            since = heard if heard is not None else started
            latest = since if latest is None else max(latest, since)
            got = received.get(peer_cfg.id)
            fresh = got is not None and mono - got.received_at <= 2 * got.interval
            engines.append(OldSiteEngine(peer_cfg.id, mono - since, heard is not None,
                                         got.view if fresh and got is not None else None))
        wall = None if latest is None else ctx.clock.now() - (mono - latest)
        return lease_release(engines, site, epoch, lease_wait), wall

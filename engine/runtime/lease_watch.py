"""The self-fencing lease, as this engine keeps it (the arithmetic: :mod:`engine.core.lease_echo`).

Each tick the coordinator hands :meth:`LeaseWatch.check` the voter count. The lease is measured on this
engine's own monotonic clock: every peer echoes the newest verdict of this process it received, and the
(majority-1)-th newest echoed stamp + the service's lease length is when the lease ends. An engine in the
active site starts fencing its own database ``fencing.timeout + HOLDER_MARGIN`` before that (a timer
wakes it on the dot, not at the next tick; retried every ``SELF_FENCE_RETRY`` while it fails, paged
once). Right after a start it holds a lease from its start (no echoes can have come back yet). The
runbook's fence step asks :meth:`LeaseWatch.release` whether the old site's engines have given the lease
up (their verdicts report their primary not writable) or are certified silent by enough voters
(:func:`engine.core.lease_rules.lease_release`).

The lease is about a writable database: :meth:`LeaseWatch.local_primary` turns this engine's heartbeats
on its local primary into the ``primary_writable`` of its verdict, and journals the moment it gives
the lease up (its primary stopped taking writes) or takes it back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from actions.database.fence import fence
from engine.config.lease import DEFAULT_LENGTH, Lease
from engine.core.lease_echo import HolderLease, certifiers_needed, certify_silent, judge_holder_lease
from engine.core.lease_rules import LeaseRelease, OldSiteEngine, lease_release
from engine.runtime.context import RuntimeContext
from engine.runtime.peering import Peering
from engine.runtime.service import ServiceRuntime

log = structlog.get_logger("engine.lease")

SELF_FENCE_RETRY = 30.0  # seconds between attempts when fencing our own database failed
CONFIRM_S = 0.05
"""Before fencing, this long for the verdicts that queued while this process stalled to be read: their echoes
are promises whatever their arrival (a stamp is a stamp); taken out of HOLDER_MARGIN."""


class LeaseWatch:
    def __init__(self, ctx: RuntimeContext, peering: Peering) -> None:
        self.ctx = ctx
        self.peering = peering
        self.started_mono: float | None = None
        self._self_fencing: set[str] = set()
        self._self_fence_retry_at: dict[str, float] = {}  # monotonic: when a failed self-fence is tried again
        self._tasks: set[asyncio.Task[Any]] = set()
        self._given_up: dict[str, bool] = {}  # service -> this engine has given its write lease up
        self._wakeup: asyncio.Task[None] | None = None
        self._wakeup_at: float | None = None
        self._quorum: tuple[int, int] = (0, 0)

    async def close(self) -> None:
        tasks = list(self._tasks) + ([self._wakeup] if self._wakeup is not None else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def judge(self, lease: Lease | None, mono: float, majority: int) -> HolderLease:
        """This engine's lease at ``mono`` for a lease length (the shortest of the services' without one)."""
        length, lead = (DEFAULT_LENGTH, 0.0) if lease is None else (lease.length, lease.fence_lead)
        started = self.started_mono if self.started_mono is not None else mono
        return judge_holder_lease(list(self.peering.lease_stamps().values()), majority, length, lead, mono,
                                  floor=started)

    async def check(self, now: float, mono: float, voters: int, majority: int) -> None:
        """Judge the lease on the echoes of this process's verdicts; an engine in the active site whose lease
        is about to end fences its own database. Only with 3 or more voters: with two, the other side never
        moves by itself, so there is nothing to fence against."""
        ctx = self.ctx
        if voters < 3 or ctx.config.instance.role != "engine":
            return
        self._quorum = (voters, majority)
        leases = [lease for rt in ctx.services.values() if (lease := ctx.config.lease(rt.name)) is not None]
        shortest = min(leases, key=lambda lease: lease.hold, default=None)
        overall = self.judge(shortest, mono, majority)
        held = overall.action == "hold"
        ctx.metrics.lease_granted.set(1 if held else 0)
        if held and ctx.grant_lost_at is not None:
            message = f"lease regained: {overall.sentence(mono)} ({overall.granted} of {voters} voters)"
            await ctx.record("lease", message, at=now, data={"granted": overall.granted})
            await ctx.notify("quorum", message, None, {"granted": overall.granted})
            ctx.grant_lost_at = None
        elif not held and ctx.grant_lost_at is None:
            ctx.grant_lost_at = mono
            message = (f"lease lost: the echoes of {overall.granted - 1} of {voters - 1} peers no longer renew it "
                       f"(need {majority - 1}); an engine in the active site fences its database")
            await ctx.record("lease", message, at=now, data={"granted": overall.granted})
            await ctx.notify("quorum", message, None, {"granted": overall.granted})
        next_fence: float | None = None
        for rt in ctx.services.values():
            lease = ctx.config.lease(rt.name)
            if lease is None or rt.state.active != ctx.config.instance.site or rt.self_fenced is not None:
                continue
            judged = self.judge(lease, mono, majority)
            if judged.action == "hold":
                next_fence = judged.fence_at if next_fence is None else min(next_fence, judged.fence_at)
                continue
            if rt.name in self._self_fencing or mono < self._self_fence_retry_at.get(rt.name, 0.0):
                continue
            self._self_fencing.add(rt.name)
            task = asyncio.create_task(self._self_fence(rt, now, majority), name=f"self-fence {rt.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._schedule(next_fence, mono)

    def _schedule(self, fence_at: float | None, mono: float) -> None:
        """Wake up exactly when the earliest lease must start fencing (the tick may be late or far)."""
        if fence_at == self._wakeup_at and self._wakeup is not None and not self._wakeup.done():
            return
        if self._wakeup is not None and self._wakeup is not asyncio.current_task():
            self._wakeup.cancel()
        self._wakeup, self._wakeup_at = None, fence_at
        if fence_at is not None:
            self._wakeup = asyncio.create_task(self._wake(fence_at - mono), name="lease deadline")

    async def _wake(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        self._wakeup_at = None
        voters, majority = self._quorum
        with contextlib.suppress(Exception):
            await self.check(self.ctx.clock.now(), self.ctx.clock.monotonic(), voters, majority)

    async def _self_fence(self, rt: ServiceRuntime, now: float, majority: int) -> None:
        ctx = self.ctx
        site = ctx.config.instance.site
        assert rt.config.database is not None
        try:
            await asyncio.sleep(CONFIRM_S)  # a stalled loop reads the echoes that waited for it first
            mono = ctx.clock.monotonic()
            judged = self.judge(ctx.config.lease(rt.name), mono, majority)
            if judged.action == "hold":
                log.info("self-fence called off: fresh echoes renewed the lease", service=rt.name,
                         leased_s=round(judged.expires_at - mono, 3))
                self._schedule(judged.fence_at, mono)
                return
            why = judged.sentence(mono)
            result = await fence(rt.config.database, site)
        finally:
            self._self_fencing.discard(rt.name)
        reason = f"the self-fencing lease is not renewed by a majority ({why}): the other side may promote after it"
        await self.record_self_fence(rt, reason, result)

    async def record_self_fence(self, rt: ServiceRuntime, reason: str, result: Any) -> None:
        """After a self-fence attempt: journal it (fenced until an operator unfences, or failed and retried every
        ``SELF_FENCE_RETRY``), and page once per streak of failures."""
        ctx = self.ctx
        site = ctx.config.instance.site
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

    def release(self, service: str, site: str, epoch: int) -> tuple[LeaseRelease, float | None]:
        """Whether the standby may be promoted although the old primary in ``site`` was not fenced from here
        (:func:`~engine.core.lease_rules.lease_release`), and (wall clock) when its engines were last heard here."""
        ctx = self.ctx
        mono = ctx.clock.monotonic()
        lease = ctx.config.lease(service)
        voters = 1 + len(ctx.config.peers)
        needed = certifiers_needed(voters, voters // 2 + 1)
        received = self.peering.received_for(service)
        engines = []
        latest: float | None = None
        for peer_cfg in ctx.config.peers:
            if peer_cfg.site != site or peer_cfg.role != "engine":
                continue
            heard = self.peering.peers[peer_cfg.id].last_heard
            since = heard if heard is not None else self.peering.started
            latest = since if latest is None else max(latest, since)
            got = received.get(peer_cfg.id)
            fresh = got is not None and mono - got.received_at <= 2 * got.interval
            if lease is None:
                cert = certify_silent([], needed, 0.0, 0.0, 0.0, mono)  # no lease: nothing certifies silence
            else:
                cert = certify_silent(self.peering.certifiers(peer_cfg.id), needed, lease.length, lease.fence_lead,
                                      lease.wait, mono)
            engines.append(OldSiteEngine(peer_cfg.id, mono - since, heard is not None,
                                         got.view if fresh and got is not None else None, cert))
        wall = None if latest is None else ctx.clock.now() - (mono - latest)
        return lease_release(engines, site, epoch), wall

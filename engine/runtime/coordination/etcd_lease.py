"""The write lease as an etcd lease (``coordination.type: etcd``).

The engine in a service's active site holds ``services/{service}/lease``, attached to an etcd lease of
``coordination.lease_ttl`` that it renews every ``keepalive_interval`` (a background loop, so a slow
etcd never delays the decision tick). Each tick, per service, :meth:`EtcdLeaseWatch.local_primary`
(called by the coordinator for the verdict, with any number of voters) judges the holding with
the pure rule :func:`engine.core.coordination.judge_holder` on this engine's monotonic clock: renewals
failing only make it ``late``; once the lease may expire within the fencing timeout plus the margin,
or etcd says it is gone, the engine fences its own database (as the peer-mode lease does) and gives
the lease up, so the other side may promote at once.

The failover runbook's fence step asks :meth:`EtcdLeaseWatch.release` whether the standby may be
promoted although the old primary could not be fenced from here: only when a fresh read of etcd shows
no lease of the old site (expired, or revoked by its holder after it self-fenced or saw its primary
stop taking writes). It is a :class:`~engine.runtime.lease_watch.LeaseWatch` so ``local_primary`` (the
writable primary behind ``primary_writable``) stays the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from actions.database.fence import fence
from engine.config.coordination import HOLDER_MARGIN, CoordinationConfig, etcd_lease_wait
from engine.config.lease import DRIFT_MARGIN, Lease
from engine.core.coordination import (
    Holder,
    HolderView,
    LeaseGrant,
    LeaseLost,
    LeaseRenewed,
    LeaseTaken,
    Unavailable,
    judge_holder,
    keepalive_due,
)
from engine.core.lease_rules import LeaseRelease
from engine.runtime.context import RuntimeContext
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.coordination.etcd_peering import EtcdPeering
from engine.runtime.lease_watch import LeaseWatch
from engine.runtime.service import ServiceRuntime

log = structlog.get_logger("engine.coordination.etcd")


def etcd_lease(ctx_config: Any, service: str, coordination: CoordinationConfig) -> Lease | None:
    """The runbook's view of the write lease in etcd mode: present whenever the service has a database with
    fencing on (any number of voters); the standby waits at most ``lease_ttl + deadline + 2 ticks``."""
    db = ctx_config.services[service].database
    if db is None or not db.fencing.enabled:
        return None
    tick = ctx_config.instance.tick
    wait = etcd_lease_wait(coordination, tick)
    return Lease(length=round(wait - DRIFT_MARGIN, 3), fence_timeout=db.fencing.timeout, tick=tick)  # .wait == wait


class EtcdLeaseWatch(LeaseWatch):
    def __init__(self, ctx: RuntimeContext, peering: EtcdPeering, backend: EtcdCoordination,
                 config: CoordinationConfig) -> None:
        super().__init__(ctx, peering)
        self.etcd_peering = peering
        self.backend = backend
        self.settings = config
        self.grants: dict[str, LeaseGrant] = {}
        self.lost: set[str] = set()  # services whose lease etcd said is gone (fence at once)
        self.late: set[str] = set()  # services whose renewal is late (journaled once per streak)
        self.taken: dict[str, str] = {}  # service -> who else holds it (journaled once)
        self._loop: asyncio.Task[None] | None = None

    def holder(self) -> Holder:
        return Holder(self.ctx.config.instance.site, self.ctx.config.instance.id)

    def _wants(self, rt: ServiceRuntime) -> bool:
        """This engine should hold the write lease of ``rt``: active site, database neither fenced nor given up."""
        ctx = self.ctx
        db = rt.config.database
        return (ctx.config.instance.role == "engine" and db is not None and db.fencing.enabled
                and rt.state.active == ctx.config.instance.site and rt.self_fenced is None
                and not self.given_up(rt.name))

    async def check(self, now: float, mono: float, voters: int, majority: int) -> None:
        """Peer mode counts grants here; in etcd mode the lease is judged per service in :meth:`local_primary`."""
        self._ensure_loop()

    def _ensure_loop(self) -> None:
        if self._loop is None and self.ctx.config.instance.role == "engine":
            self._loop = asyncio.create_task(self._keep(), name="etcd write lease")

    async def local_primary(self, rt: ServiceRuntime, now: float) -> bool | None:
        """Every tick, per service (whatever the number of voters): judge the lease held, then the primary."""
        self._ensure_loop()
        await self._judge(rt, now, self.ctx.clock.monotonic())
        return await super().local_primary(rt, now)

    async def _judge(self, rt: ServiceRuntime, now: float, mono: float) -> None:
        """The pure rule on this engine's clock: keep, late (journaled once per streak) or fence (at once)."""
        name, grant = rt.name, self.grants.get(rt.name)
        db = rt.config.database
        if grant is None or db is None:
            return
        view = HolderView(grant.ttl, grant.renewed_at, lost=name in self.lost)
        judgement = judge_holder(view, mono, db.fencing.timeout, HOLDER_MARGIN, self.settings.keepalive)
        self.ctx.metrics.lease_granted.set(0 if judgement.action == "fence" else 1)
        if judgement.action == "late" and name not in self.late:
            self.late.add(name)
            await self.ctx.record("lease", f"{name}: {judgement.message}", service=name, at=now)
        elif judgement.action == "keep":
            self.late.discard(name)
        elif judgement.action == "fence" and rt.state.active == self.ctx.config.instance.site \
                and rt.self_fenced is None and name not in self._self_fencing \
                and mono >= self._self_fence_retry_at.get(name, 0.0):
            self._self_fencing.add(name)
            task = asyncio.create_task(self._fence_self(rt, judgement.message), name=f"self-fence {name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _keep(self) -> None:
        """Acquire, renew and give up the write leases; a renewal is due every ``keepalive_interval``."""
        step = min(self.settings.keepalive / 2, max(self.ctx.config.instance.tick, 0.05))
        while True:
            for rt in self.ctx.services.values():
                try:
                    await self._keep_one(rt)
                except Exception:  # the loop must keep renewing the others; logged
                    log.exception("etcd write lease", service=rt.name)
            await asyncio.sleep(step)

    async def _keep_one(self, rt: ServiceRuntime) -> None:
        ctx, name = self.ctx, rt.name
        grant = self.grants.get(name)
        if not self._wants(rt):
            if grant is not None and name not in self._self_fencing:
                await self._give_up(rt, grant, "this site is no longer active" if rt.state.active != grant.holder.site
                                    else "its database no longer takes writes")
            return
        now = ctx.clock.now()
        if grant is None:
            got = await self.backend.acquire_lease(name, self.holder(), self.settings.lease_ttl)
            if isinstance(got, LeaseGrant):
                self.grants[name] = got
                self.lost.discard(name)
                self.taken.pop(name, None)
                await ctx.record("lease", f"{name}: holds the write lease in etcd (lease {got.lease_id:x}, TTL "
                                 f"{got.ttl:g}s)", service=name, at=now, data={"lease": f"{got.lease_id:x}"})
            elif isinstance(got, LeaseTaken) and self.taken.get(name) != str(got.holder):
                self.taken[name] = str(got.holder)
                await ctx.record("lease", f"{name}: the write lease in etcd is held by {got.holder}; this engine "
                                 "waits for it to expire or be given up", service=name, at=now)
            return
        if name in self.lost or not keepalive_due(HolderView(grant.ttl, grant.renewed_at), ctx.clock.monotonic(),
                                                  self.settings.keepalive):
            return
        renewed = await self.backend.renew_lease(grant)
        if isinstance(renewed, LeaseRenewed):
            self.grants[name] = renewed.grant
        elif isinstance(renewed, LeaseLost):
            self.lost.add(name)
            await ctx.record("lease", f"{name}: {renewed.reason}", service=name, at=now)
        elif isinstance(renewed, Unavailable):
            log.warning("etcd lease renewal failed", service=name, reason=renewed.reason)

    async def _give_up(self, rt: ServiceRuntime, grant: LeaseGrant, why: str) -> None:
        result = await self.backend.release_lease(grant)
        if result is None or rt.self_fenced is not None:
            self.grants.pop(rt.name, None)
            self.lost.discard(rt.name)
        if result is None:
            await self.ctx.record("lease", f"{rt.name}: gave the write lease in etcd up ({why})", service=rt.name)

    async def _fence_self(self, rt: ServiceRuntime, why: str) -> None:
        assert rt.config.database is not None
        try:
            result = await fence(rt.config.database, self.ctx.config.instance.site)
        finally:
            self._self_fencing.discard(rt.name)
        await self.record_self_fence(rt, why, result)

    def release(self, service: str, site: str, epoch: int) -> tuple[LeaseRelease, float | None]:
        """Free only when a fresh read of etcd shows no write lease held in ``site`` (it expired, or its holder
        gave it up); while it is held, the fence step keeps trying to fence from here."""
        lease = etcd_lease(self.ctx.config, service, self.settings)
        lease_wait = lease.wait if lease is not None else 0.0
        mono = self.ctx.clock.monotonic()
        read = self.etcd_peering.read
        fresh_for = max(2 * self.ctx.config.instance.tick, 1.0)
        if read is None or mono - read.sent_at > fresh_for:
            age = "never" if read is None else f"{mono - read.sent_at:.1f}s ago"
            return LeaseRelease(False, lease_wait, (), (f"etcd not read recently (last read {age})",)), None
        stored = read.service(service).lease
        heard = self._last_heard(site, mono)
        if stored is None or (stored.holder is not None and stored.holder.site != site):
            note = ("etcd: no write lease held in the old site (expired or given up)" if stored is None
                    else f"etcd: the write lease is held by {stored.holder}, not in {site}")
            return LeaseRelease(True, 0.0, (), (note,)), heard
        return LeaseRelease(False, lease_wait, (), (f"etcd: the write lease is held by {stored.holder}",)), heard

    def _last_heard(self, site: str, mono: float) -> float | None:
        """(Wall clock) when a vote of an engine of ``site`` last changed in etcd: the data-loss bound counts the
        old primary's possible writes from there plus the lease (a cut-off holder fences before its TTL runs out)."""
        latest = None
        for peer_cfg in self.ctx.config.peers:
            if peer_cfg.site == site and peer_cfg.role == "engine":
                heard = self.peering.peers[peer_cfg.id].effective_heard()
                if heard is not None:
                    latest = heard if latest is None else max(latest, heard)
        return None if latest is None else self.ctx.clock.now() - (mono - latest)

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop
        await super().close()

"""The stray-primary watch: fence a database that takes writes while its site is not the active one.

Every ``database.stray_watch.interval`` an engine (never the witness) looks at the database of each
site other than the one it believes active, from a fresh session (:func:`actions.database.writable.look`:
a fence applies to new sessions). The rule is :func:`engine.core.stray.stray_decision`: who is the
rightful primary (own state, the peers' fresh verdicts, and DNS read just before fencing), never the
active site of the current epoch, never while an operation is open for the service (here or at a peer)
or a full drill is announced, never while paused. A stray one is fenced with
:func:`actions.database.fence.fence` (read-only for new sessions, client sessions ended, verified);
each attempt is journaled (``fence``); a failed one is tried again after a doubling backoff. The
engines of both sites run this watch, so whichever reaches the database fences it.

Seen: the gauge ``failover_engine_stray_primary{service,site}`` (1 while a stray is seen), an
``alert`` event and notification when one is first seen, and
``failover_engine_stray_primary_fenced_total{service,site}`` per successful fence.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from actions.database.fence import fence
from actions.database.writable import look
from actions.dns.errors import DnsError
from actions.dns.provider import build_provider
from engine.core.operations import OpState
from engine.core.stray import DbSeen, EpochClaim, StrayDecision, retry_after, stray_decision
from engine.runtime.context import RuntimeContext
from engine.runtime.peering import Peering
from engine.runtime.service import ServiceRuntime

log = structlog.get_logger("engine.stray")


class StrayPrimaryWatch:
    def __init__(self, ctx: RuntimeContext, rt: ServiceRuntime, peering: Peering) -> None:
        db = rt.config.database
        assert db is not None
        self.ctx, self.rt, self.db, self.peering = ctx, rt, db, peering
        self.cfg = db.stray_watch
        self.failures: dict[str, int] = {}  # site -> failed fences in a row
        self.next_attempt: dict[str, float] = {}  # site -> monotonic time of the next fence attempt
        self.seen: dict[str, dict[str, Any]] = {}  # site -> the last look and decision (status)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.cfg.enabled and self.ctx.config.instance.role == "engine":
            self._task = asyncio.create_task(self._loop(), name=f"stray-primary watch {self.rt.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> dict[str, Any]:
        return {"enabled": self.cfg.enabled, "interval_s": self.cfg.interval, "sites": dict(self.seen)}

    async def _loop(self) -> None:
        while True:
            started = self.ctx.clock.monotonic()
            try:
                await self.check()
            except Exception:  # a failed round is logged; the next one looks again
                log.exception("stray-primary watch failed", service=self.rt.name)
            await asyncio.sleep(max(0.0, self.cfg.interval - (self.ctx.clock.monotonic() - started)))

    # -- one round ---------------------------------------------------------------------------------
    async def check(self) -> None:
        """Look at every site but the one believed active; fence a stray primary."""
        for site in self.db.sites:
            if site == self.rt.state.active:
                self._forget(site)
                continue
            seen = await look(self.db, site, timeout=self.db.lag_probe.statement_timeout)
            decision = self._decide(seen, None, dns_read=False)
            if decision.fence and self.rt.config.dns is not None:  # confirm with DNS just before fencing
                decision = self._decide(seen, await self._read_dns(), dns_read=True)
            await self._apply(seen, decision)

    def _decide(self, seen: DbSeen, dns: EpochClaim | None, *, dns_read: bool) -> StrayDecision:
        rt = self.rt
        own = EpochClaim("this engine", rt.state.epoch, rt.state.active)
        peers, busy = [], []
        op = rt.operation
        if op is not None and op.is_open:
            busy.append(f"this engine {'runs' if op.state is OpState.RUNNING else 'holds halted'} {op.id}")
        mono = self.ctx.clock.monotonic()
        for peer_id, got in self.peering.received_for(rt.name).items():
            if got is None or mono - got.received_at > 2 * got.interval:
                continue
            view = got.view
            peers.append(EpochClaim(peer_id, view.epoch, view.active))
            busy += ([f"{peer_id} runs {view.runbook}"] if view.runbook else []) + \
                ([f"{peer_id} holds {view.halted} halted"] if view.halted else []) + \
                ([f"{peer_id} announces drill {view.drill}"] if view.drill else [])
        return stray_decision(seen, own, peers, busy, dns, dns_read, paused=rt.state.paused)

    async def _read_dns(self) -> EpochClaim | None:
        """The epoch record as DNS answers now, or None (unreadable): the rule then does not fence."""
        assert self.rt.config.dns is not None
        provider = build_provider(self.rt.config.dns, self.rt.name)
        try:
            async with asyncio.timeout(self.db.fencing.timeout):
                state = await provider.read()
        except (DnsError, TimeoutError) as exc:
            log.warning("dns read for the stray-primary watch failed", service=self.rt.name, error=str(exc))
            return None
        finally:
            await provider.aclose()
        return EpochClaim("DNS", state.epoch.number, state.site)

    def _forget(self, site: str) -> None:
        self.seen.pop(site, None)
        self.ctx.metrics.stray_primary.labels(self.rt.name, site).set(0)

    async def _apply(self, seen: DbSeen, decision: StrayDecision) -> None:
        ctx, rt, site = self.ctx, self.rt, seen.site
        now = ctx.clock.now()
        was_stray = bool(self.seen.get(site, {}).get("stray"))
        self.seen[site] = {"at": now, "seen": seen.detail, "writable": seen.writable, "stray": decision.stray,
                           "reason": decision.reason}
        ctx.metrics.stray_primary.labels(rt.name, site).set(1 if decision.stray else 0)
        data = {"site": site, "epoch": rt.state.epoch, "active": rt.state.active, "reason": decision.reason}
        if decision.stray and not was_stray:
            message = f"{rt.name}: stray primary: {decision.reason}"
            await ctx.record("alert", message, service=rt.name, at=now, data=data)
            await ctx.notify("alert", message, rt.name, data)
        elif was_stray and not decision.stray:
            self.failures.pop(site, None)
            self.next_attempt.pop(site, None)
            await ctx.record("fence", f"{rt.name}: the database in {site} no longer takes writes ({decision.reason})",
                             service=rt.name, at=now, data=data)
        if decision.fence and ctx.clock.monotonic() >= self.next_attempt.get(site, 0.0):
            await self._fence(site, decision, data)

    async def _fence(self, site: str, decision: StrayDecision, data: dict[str, Any]) -> None:
        ctx, rt = self.ctx, self.rt
        result = await fence(self.db, site)
        done = result.ok and not result.skipped  # skipped: it went away since the look; look again later
        data = {**data, "result": result.to_dict()}
        if done:
            self.failures.pop(site, None)
            self.next_attempt.pop(site, None)
            ctx.metrics.stray_primary_fenced.labels(rt.name, site).inc()
            message = f"{rt.name}: fenced the stray primary in {site} ({result.sentence}): {decision.reason}"
        else:
            failures = self.failures[site] = self.failures.get(site, 0) + 1
            wait = retry_after(failures, self.cfg.interval, self.cfg.max_backoff)
            self.next_attempt[site] = ctx.clock.monotonic() + wait
            message = (f"{rt.name}: fencing the stray primary in {site} FAILED ({result.sentence}): {decision.reason}; "
                       f"trying again in {wait:g}s")
        await ctx.record("fence", message, service=rt.name, data=data)
        if done or self.failures.get(site) == 1:  # one page per streak of failures, not one per attempt
            await ctx.notify("alert", message, rt.name, data)
        (log.warning if done else log.error)("stray primary", service=rt.name, site=site, message=message)

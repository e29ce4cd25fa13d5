"""Watching a service's PostgreSQL pair: heartbeats, the replication signal, scheduled reconciliation.

For each service with a ``database:`` section, an engine (never the witness):

- writes its heartbeat row on the current primary every ``heartbeat.interval`` and keeps the
  returned commit point (heartbeat time and LSN) in the journal as ``primary_commit``, continuously:
  after the primary dies, that is what the consistency check compares the new primary with; each
  beat's result also says whether the primary takes writes (``writability``: the engine of the
  active site reports it in its verdict and gives the write lease up when it does not,
  :mod:`engine.core.lease_rules`);
- runs the replication lag probe as a service-wide signal (``<service>/*/replication``); its value
  is the lag in seconds, kept as the last known lag when the primary becomes unreachable;
- reads, every heartbeat interval, the WAL each replication slot keeps on the current primary (a metric,
  a status line, an alert once per crossing of ``slot_retained_alert``; :meth:`DatabaseWatch.check_slots`);
- when it runs in the active site, reconciles the pair every ``reconcile.schedule`` (not while an
  operation runs), keeping the result in the journal, in ``/v1/status`` and in metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from actions.consistency import CommitPoint
from actions.database.heartbeat import HeartbeatWriter
from actions.database.slots import retained_wal
from actions.reconcile.runner import reconcile
from engine.core.lease_rules import PrimaryWritability
from engine.core.retention import crossings
from engine.runtime.context import RuntimeContext
from engine.runtime.service import ServiceRuntime
from engine.runtime.sync_watch import SyncWatch
from probes.postgres import PostgresLagProbe
from probes.postgres_conn import PgError

log = structlog.get_logger("engine.database")


class DatabaseWatch:
    def __init__(self, ctx: RuntimeContext, rt: ServiceRuntime) -> None:
        db = rt.config.database
        assert db is not None
        self.ctx, self.rt, self.db = ctx, rt, db
        self.probe = PostgresLagProbe(db, service=rt.name, primary=rt.state.active, clock=ctx.clock)
        saved = ctx.journal_or_fail().get_state(rt.name, "primary_commit")
        if saved:
            point = CommitPoint.from_dict(saved)
            if point.site:
                self.probe.remember(point.heartbeat_at, point.site)
        site = ctx.config.instance.site
        self.writer = HeartbeatWriter(db, writer_site=site, primary=rt.state.active) if site in db.sites else None
        self.last_beat_error: str | None = None
        self.writability = self._writability()
        # replication slot retention (issue 17 item 7): the primary read, slots over the limit, gauges set
        self._slots_site: str | None = None
        self._slots_over: frozenset[str] = frozenset()
        self._slots_exported: set[tuple[str, str]] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        # synchronous replication (issue 24): the engine of the active site acts, every other engine observes,
        # so whoever executes a failover knows what synchronous commit proved (engine.core.loss)
        self.sync = SyncWatch(db, service=rt.name, primary=rt.state.active, clock=ctx.clock.now,
                              record=self._sync_event, gauge=ctx.metrics.synchronous,
                              may_act=lambda: ctx.config.instance.site == rt.state.active and rt.operation is None)

    async def _sync_event(self, sentence: str, data: dict[str, Any], alert: bool) -> None:
        await self.ctx.record("alert" if alert else "synchronous", f"{self.rt.name}: {sentence}",
                              service=self.rt.name, data=data)
        if alert:
            await self.ctx.notify("alert", f"{self.rt.name}: {sentence}", self.rt.name, data)

    def start(self) -> None:
        if self.db.synchronous != "off":
            self._tasks.append(asyncio.create_task(self.sync.run(), name=f"synchronous {self.rt.name}"))
        if self.writer is not None:
            self._tasks.append(asyncio.create_task(self._heartbeats(), name=f"heartbeat {self.rt.name}"))
        self._tasks.append(asyncio.create_task(self._slot_loop(), name=f"slots {self.rt.name}"))
        if self.db.reconcile.enabled and self.db.reconcile.tables + self.db.reconcile.metrics:
            self._tasks.append(asyncio.create_task(self._reconcile_loop(), name=f"reconcile {self.rt.name}"))

    def active_changed(self, site: str) -> None:
        self.probe.set_primary(site)
        if self.writer is not None:
            self.writer.set_primary(site)
        self.writability = self._writability()  # what was known was about the old primary
        self.sync.primary_changed(site)

    async def _heartbeats(self) -> None:
        assert self.writer is not None
        interval = self.db.heartbeat.interval
        while True:
            started = self.ctx.clock.monotonic()
            now = self.ctx.clock.now()
            try:
                point = await self.writer.beat(now)
            except PgError as exc:
                if str(exc) != self.last_beat_error:
                    log.warning("heartbeat failed", service=self.rt.name, error=str(exc))
                self.last_beat_error = str(exc)
                self._beat_result(False, str(exc))
            else:
                self.last_beat_error = None
                self._beat_result(True, None)
                if point.site:
                    self.probe.remember(point.heartbeat_at, point.site)
                await self.ctx.journal_or_fail().put_state(self.rt.name, "primary_commit", point.to_dict(),
                                                              at=now)
            await asyncio.sleep(max(0.0, interval - (self.ctx.clock.monotonic() - started)))

    # -- is the primary writable? (issue 17, item 3) -------------------------------------------------------
    def _writability(self) -> PrimaryWritability:
        """One beat is bounded by ``connect_timeout + interval``: a result older than two of those plus an
        interval is no news."""
        beat_bound = self.db.sites[self.rt.state.active].connect_timeout + self.db.heartbeat.interval
        return PrimaryWritability(stale_after=2 * beat_bound + self.db.heartbeat.interval)

    def _beat_result(self, ok: bool, error: str | None) -> None:
        before = self.writability.writable(self.ctx.clock.monotonic())
        self.writability.beat(ok, self.ctx.clock.monotonic(), error)
        if self.writability.writable(self.ctx.clock.monotonic()) != before:
            self.ctx.poke()  # the verdict changes: let the peers know at once

    async def reconcile_now(self, *, watermark: Any = "auto") -> dict[str, Any]:
        """Reconcile the pair now (``watermark=None`` when nothing flows between them)."""
        rt, ctx = self.rt, self.ctx
        now = ctx.clock.now()
        result = await reconcile(self.db, service=rt.name, primary=rt.state.active, now=now, watermark=watermark)
        data = result.to_dict()
        await ctx.journal_or_fail().put_state(rt.name, "last_reconciliation", data, at=now)
        ctx.metrics.export_reconcile(result.gauges())
        if not result.identical:
            await ctx.record("reconcile", result.sentence, service=rt.name, at=now,
                                data={"identical": False})
        return data

    async def _reconcile_loop(self) -> None:
        every = self.db.reconcile.schedule
        while True:
            await asyncio.sleep(every)
            rt = self.rt
            if self.ctx.config.instance.site != rt.state.active or rt.operation is not None:
                continue
            try:
                await self.reconcile_now()
            except Exception:  # a failed run is logged; the next one tries again
                log.exception("scheduled reconciliation failed", service=rt.name)

    # -- replication slot retention (issue 17 item 7) -------------------------------------------------
    async def _slot_loop(self) -> None:
        """Every heartbeat interval: the WAL each slot keeps on the current primary (see :meth:`check_slots`)."""
        while True:
            try:
                await self.check_slots()
            except Exception:  # a failed reading is logged; the next one tries again
                log.exception("replication slot check failed", service=self.rt.name)
            await asyncio.sleep(self.db.heartbeat.interval)

    async def check_slots(self) -> None:
        """Read the slots on the current primary: metric and status line per slot; an alert (event and
        notification) once when one goes over ``slot_retained_alert``, once when it is back under it."""
        rt, ctx = self.rt, self.ctx
        site, limit = rt.state.active, self.db.slot_retained_alert
        reading = await retained_wal(self.db, site, timeout=self.db.lag_probe.statement_timeout)
        now = ctx.clock.now()
        if site != self._slots_site:  # another primary: what was over the limit there is not known here
            self._slots_site, self._slots_over = site, frozenset()
        if reading.error is not None:
            rt.slots = [{**s, "stale": True, "error": reading.error} for s in rt.slots or []
                        if s.get("site") == site] or [{"site": site, "error": reading.error, "at": now}]
            return
        found = crossings(self._slots_over, {s.name: s.retained for s in reading.slots}, limit)
        self._slots_over = found.over
        gauge = ctx.metrics.slot_retained
        for gone in self._slots_exported - {(site, s.name) for s in reading.slots}:
            with contextlib.suppress(KeyError):
                gauge.remove(rt.name, *gone)
        self._slots_exported = {(site, s.name) for s in reading.slots}
        for slot in reading.slots:
            if slot.retained is not None:
                gauge.labels(rt.name, site, slot.name).set(slot.retained)
        rt.slots = [{"site": site, "slot": s.name, "type": s.kind, "active": s.active, "wal_status": s.wal_status,
                     "retained_bytes": s.retained, "alert_bytes": limit, "over": s.name in found.over, "at": now}
                    for s in reading.slots]
        sizes = {s.name: s.retained for s in reading.slots}
        for name in found.raised:
            message = (f"replication slot {name} on {site} ({rt.name}) retains {sizes[name]} bytes of WAL, over "
                       f"slot_retained_alert {limit}: its subscriber is not consuming; the primary's disk fills "
                       "(runbooks/replication-slot-retention.md)")
            data = {"slot": name, "site": site, "retained_bytes": sizes[name], "alert_bytes": limit}
            await ctx.record("alert", message, service=rt.name, at=now, data={**data, "slot_retention": "over"})
            await ctx.notify("alert", message, rt.name, data)
        for name in found.cleared:
            kept = sizes.get(name)
            message = (f"replication slot {name} on {site} ({rt.name}) is back under slot_retained_alert {limit}"
                       + (f": {kept} bytes retained" if kept is not None else ": the slot is gone"))
            data = {"slot": name, "site": site, "retained_bytes": kept, "alert_bytes": limit}
            await ctx.record("alert", message, service=rt.name, at=now, data={**data, "slot_retention": "cleared"})
            await ctx.notify("alert", message, rt.name, data)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.writer is not None:
            with contextlib.suppress(Exception):
                await self.writer.aclose()


class Reconciled:
    """A reconciliation result as ``prepare_failback`` reads it (the full result: tables and differences)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.identical = bool(data.get("identical"))
        self.sentence = str(data.get("sentence", ""))

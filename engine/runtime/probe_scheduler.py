"""Runs every signal at its cadence (see :mod:`engine.core.cadence`) on one timer loop.

One heap holds the next due time of every signal; the loop sleeps until the earliest, starts the
due checks as tasks and schedules the next slot from the nominal time (no drift). A signal whose
previous check is still running skips its slot (no overlap, counted). Lateness (start minus due)
is measured for every check and handed to ``on_lateness``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from engine.core.cadence import Cadence, default_jitter, phase_for
from engine.core.clock import Clock, SystemClock
from engine.core.model import Observation, SignalKey
from probes.base import Probe

log = structlog.get_logger("engine.scheduler")

ObservationHandler = Callable[[SignalKey, Observation], Awaitable[None] | None]


@dataclass(slots=True)
class _Entry:
    key: SignalKey
    probe: Probe
    cadence: Cadence
    running: bool = False
    skipped: int = 0
    checks: int = 0
    last_lateness: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Scheduler:
    """Drives probes; call :meth:`add` for each signal, then ``await run()`` until :meth:`stop`."""

    def __init__(self, on_observation: ObservationHandler, *, clock: Clock | None = None,
                 on_lateness: Callable[[SignalKey, float], None] | None = None,
                 on_skip: Callable[[SignalKey], None] | None = None,
                 seed: int | None = None) -> None:
        self.clock = clock or SystemClock()
        self._on_observation = on_observation
        self._on_lateness = on_lateness
        self._on_skip = on_skip
        self._entries: dict[SignalKey, _Entry] = {}
        self._heap: list[tuple[float, int, SignalKey]] = []
        self._seq = itertools.count()
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.started_at: float | None = None
        self.recent_lateness: collections.deque[float] = collections.deque(maxlen=10_000)
        self.skipped_total = 0

    def add(self, key: SignalKey, probe: Probe, interval: float, *, jitter: float | None = None,
            start: float | None = None) -> None:
        start = self.clock.monotonic() if start is None else start
        cadence = Cadence(start, interval, phase_for(str(key), interval),
                          default_jitter(interval) if jitter is None else jitter)
        entry = _Entry(key, probe, cadence)
        self._entries[key] = entry
        heapq.heappush(self._heap, (cadence.due(self._rng), next(self._seq), key))
        self._wake.set()

    def stats(self, key: SignalKey) -> dict[str, float | int]:
        entry = self._entries[key]
        return {"checks": entry.checks, "skipped": entry.skipped, "lateness_s": entry.last_lateness}

    def summary(self) -> dict[str, Any]:
        """Lateness over the last 10,000 checks, in milliseconds, and the checks in flight."""
        ordered = sorted(self.recent_lateness)

        def q(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3) if ordered else None

        return {"signals": len(self._entries), "in_flight": len(self._tasks), "skipped": self.skipped_total,
                "lateness_p50_ms": q(0.5), "lateness_p99_ms": q(0.99), "lateness_max_ms": q(1.0)}

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Run until :meth:`stop`; then cancel running checks and close every probe."""
        self.started_at = self.clock.monotonic()
        try:
            while not self._stopping.is_set():
                if not self._heap:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                delay = self._heap[0][0] - self.clock.monotonic()
                if delay > 0:
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    continue
                self._launch_due()
        finally:
            await self._shutdown()

    def _launch_due(self) -> None:
        now = self.clock.monotonic()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is None:
                continue
            if entry.running:
                entry.skipped += 1
                self.skipped_total += 1
                if self._on_skip:
                    self._on_skip(key)
            else:
                lateness = now - due
                entry.last_lateness = lateness
                self.recent_lateness.append(lateness)
                if self._on_lateness:
                    self._on_lateness(key, lateness)
                entry.running = True
                task = asyncio.create_task(self._check(entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            entry.skipped += entry.cadence.advance_past(now)
            heapq.heappush(self._heap, (entry.cadence.due(self._rng), next(self._seq), key))

    async def _check(self, entry: _Entry) -> None:
        try:
            observation = await entry.probe.observe()
            entry.checks += 1
            result = self._on_observation(entry.key, observation)
            if result is not None:
                await result
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken handler must not silence the signal for good
            log.exception("observation handler failed", signal=str(entry.key))
        finally:
            entry.running = False

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for entry in self._entries.values():
            with contextlib.suppress(Exception):  # closing is best effort at shutdown
                await entry.probe.aclose()

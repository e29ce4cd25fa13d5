"""The reconciliation walk over two :class:`Side` objects: paced chunks, bisection, classification.

A :class:`Side` answers four questions about one table on one server (SQL in
:mod:`actions.reconcile.pg_side`; an in-memory one in the unit tests). Both sides are asked at
the same time. The walk's decisions come from :mod:`actions.reconcile.plan`; pacing follows
``chunk_budget`` (chunk size adapts) and ``pause`` (rest between chunks and between the bisection's
queries), with the sleep injected. With ``keep``, at most that many differing rows (and as many in
flight) are held in memory; every one is still counted (``real_count``, ``in_flight_count``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from actions.reconcile.plan import (
    EMPTY,
    ChunkPlan,
    Digest,
    KeyRange,
    RowDiff,
    RowState,
    bucket_width,
    classify,
    differing_buckets,
    fetch_rows_now,
)


class Side(Protocol):
    """One table on one server."""

    async def bounds(self) -> tuple[int, int] | None:
        """Smallest and largest key, or None for an empty table."""
        ...

    async def next_key(self, after: int) -> int | None:
        """The smallest key >= ``after`` (to skip gaps in sparse keys), or None."""
        ...

    async def digest(self, key_range: KeyRange) -> Digest:
        """Count and hash sum of the range."""
        ...

    async def buckets(self, key_range: KeyRange, width: int) -> dict[int, Digest]:
        """Digests per bucket ``(k - lo) // width`` (empty buckets absent)."""
        ...

    async def rows(self, key_range: KeyRange) -> dict[int, RowState]:
        """Every row's hash (and update time) in the range."""
        ...


@dataclass(frozen=True, slots=True)
class Pacing:
    """How hard the walk may push: chunk size, time budget per chunk, rest between chunks."""

    chunk_keys: int = 250_000
    chunk_budget: float = 2.0
    pause: float = 0.0
    fanout: int = 64
    row_threshold: int = 4096


@dataclass
class WalkStats:
    """What the walk did."""

    rows_primary: int = 0
    rows_standby: int = 0
    chunks: int = 0
    queries: int = 0
    bisected_ranges: int = 0
    seconds: float = 0.0
    bisect_seconds: float = 0.0
    diffs: list[RowDiff] = field(default_factory=list)
    real_count: int = 0          # differing rows, kept or not
    in_flight_count: int = 0     # rows in flight, kept or not
    standby_only_count: int = 0  # of real_count: rows only on the standby
    keep: int | None = None

    def add(self, found: list[RowDiff]) -> None:
        """Count every diff; keep at most ``keep`` real and ``keep`` in-flight ones."""
        for diff in found:
            if diff.in_flight:
                self.in_flight_count += 1
                held = self.in_flight_count
            else:
                self.real_count += 1
                self.standby_only_count += diff.kind == "missing_on_primary"
                held = self.real_count
            if self.keep is None or held <= self.keep:
                self.diffs.append(diff)


Sleep = Callable[[float], Awaitable[None]]
LOOKAHEAD = 4  # chunks one side may run ahead of the other


async def walk(primary: Side, standby: Side, *, pacing: Pacing, watermark: float | None = None,
               sleep: Sleep = asyncio.sleep, keep: int | None = None) -> WalkStats:
    """Compare the table on both sides; return every differing row (classified) and counters.

    The two sides scan the shared chunk plan concurrently, each at its own pace (no lock-step per
    chunk); differing chunks are bisected once both scans are done.
    """
    stats = WalkStats(keep=keep)
    started = time.perf_counter()
    left, right = await asyncio.gather(primary.bounds(), standby.bounds())
    stats.queries += 2
    known = [b for b in (left, right) if b is not None]
    if not known:
        stats.seconds = time.perf_counter() - started
        return stats
    plan = ChunkPlan(min(b[0] for b in known), max(b[1] for b in known) + 1, size=pacing.chunk_keys,
                     budget=pacing.chunk_budget)

    done = {"primary": 0, "standby": 0}
    progress = asyncio.Condition()

    async def scan(name: str, side: Side) -> dict[int, Digest]:
        other = "standby" if name == "primary" else "primary"
        digests: dict[int, Digest] = {}
        index = 0
        def caught_up() -> bool:
            return done[other] >= index - LOOKAHEAD

        while True:
            async with progress:  # stay at most LOOKAHEAD chunks ahead: the other side's gaps must be known
                await progress.wait_for(caught_up)
            chunk = plan.get(index)
            if chunk is None:
                break
            t0 = time.perf_counter()
            digest = digests[index] = await side.digest(chunk)
            stats.queries += 1
            if digest.count == 0:
                plan.no_keys_until(name, chunk.lo, await side.next_key(chunk.hi))
                stats.queries += 1
            plan.finished(time.perf_counter() - t0)
            index += 1
            async with progress:
                done[name] = index
                progress.notify_all()
            if pacing.pause > 0 and plan.get(index) is not None:
                await sleep(pacing.pause)
        async with progress:
            done[name] = 1 << 62
            progress.notify_all()
        return digests

    ours, theirs = await asyncio.gather(scan("primary", primary), scan("standby", standby))
    stats.chunks = len(plan.ranges)
    stats.rows_primary = sum(d.count for d in ours.values())
    stats.rows_standby = sum(d.count for d in theirs.values())
    t1 = time.perf_counter()
    for index, chunk in enumerate(plan.ranges):
        a, b = ours.get(index, EMPTY), theirs.get(index, EMPTY)
        if a != b:
            await _descend(primary, standby, chunk, max(a.count, b.count), pacing, watermark, stats, sleep)
    stats.bisect_seconds = time.perf_counter() - t1
    stats.seconds = time.perf_counter() - started
    return stats


async def _descend(primary: Side, standby: Side, key_range: KeyRange, rows: int, pacing: Pacing,
                   watermark: float | None, stats: WalkStats, sleep: Sleep) -> None:
    stats.bisected_ranges += 1
    if pacing.pause > 0:  # the bisection is paced like the scan
        await sleep(pacing.pause)
    if fetch_rows_now(key_range, rows, pacing.row_threshold, pacing.fanout):
        left, right = await asyncio.gather(primary.rows(key_range), standby.rows(key_range))
        stats.queries += 2
        stats.add(classify(left, right, watermark))
        return
    width = bucket_width(key_range, pacing.fanout)
    a, b = await asyncio.gather(primary.buckets(key_range, width), standby.buckets(key_range, width))
    stats.queries += 2
    for sub, count in differing_buckets(key_range, width, a, b):
        await _descend(primary, standby, sub, count, pacing, watermark, stats, sleep)

"""The reconciliation walk over two :class:`Side` objects: paced chunks, descent, classification.

A :class:`Side` answers a few questions about one table on one server (SQL in
:mod:`actions.reconcile.pg_side`; an in-memory one in the unit tests). Both sides are asked at the
same time. Slices are cut at keys sampled from the data (:meth:`Side.sample_cuts`), never by key
arithmetic; a chunk is a few consecutive slices, digested in one round trip that returns a digest
per slice. Both sides scan the shared chunk plan concurrently, each at its own pace; a slice whose
digests differ is then cut again at every n-th key *inside* it (taken from the side holding more
rows there) into ``fanout`` pieces, all digested in one round trip per side, until a piece holds
at most ``row_threshold`` rows: then ``(key, hash)`` pairs are fetched. The fetched rows of every
range are matched by key before classifying (:func:`actions.reconcile.plan.merge_rows`).

Pacing follows ``chunk_budget`` (chunk size adapts) and ``pause`` (rest between chunks and between
the descent's queries), with the sleep injected. With ``keep``, at most that many differing rows
(and as many in flight) are held in memory; every one is still counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from actions.reconcile.plan import (
    EMPTY,
    Bounds,
    ChunkPlan,
    Digest,
    Key,
    RowDiff,
    RowState,
    classify,
    fetch_rows_now,
    merge_rows,
    split,
)


class Side(Protocol):
    """One table on one server."""

    async def sample_cuts(self, rows_per_slice: int) -> list[Key]:
        """Ascending keys about ``rows_per_slice`` rows apart (sampled; empty for a small table)."""
        ...

    async def cuts(self, bounds: Bounds, every: int) -> list[Key]:
        """Every ``every``-th key inside ``bounds``, ascending (exact, from the data)."""
        ...

    async def digests(self, ranges: list[Bounds]) -> list[Digest]:
        """Count and hash sum of each range, in one round trip."""
        ...

    async def rows(self, bounds: Bounds) -> dict[Key, RowState]:
        """Every row's hash (and update time) in the range."""
        ...

    async def rows_for(self, keys: list[Key]) -> dict[Key, RowState]:
        """The rows of exactly these keys."""
        ...


@dataclass(frozen=True, slots=True)
class Pacing:
    """How hard the walk may push: rows per chunk, time budget per chunk, rest between chunks."""

    chunk_rows: int = 100_000
    chunk_budget: float = 2.0
    pause: float = 0.0
    fanout: int = 32
    row_threshold: int = 2048
    slices_per_chunk: int = 8  # one digest per slice; pacing can shrink a chunk down to one slice


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
BATCH = 5000  # keys read by key per query
MAX_DEPTH = 8  # a range still too big after this many cuts (rows moving meanwhile) is fetched whole
Fetched = list[tuple[dict[Key, RowState], dict[Key, RowState]]]


async def walk(primary: Side, standby: Side, *, pacing: Pacing, watermark: float | None = None,
               sleep: Sleep = asyncio.sleep, keep: int | None = None) -> WalkStats:
    """Compare the table on both sides; return every differing row (classified) and counters."""
    stats = WalkStats(keep=keep)
    started = time.perf_counter()
    per_slice = max(1, pacing.chunk_rows // max(1, pacing.slices_per_chunk))
    cuts = await primary.sample_cuts(per_slice)
    stats.queries += 1
    plan = ChunkPlan(cuts, size=pacing.slices_per_chunk, budget=pacing.chunk_budget)

    async def scan(side: Side) -> list[Digest]:
        digests: list[Digest] = []
        index = 0
        while (chunk := plan.get(index)) is not None:
            t0 = time.perf_counter()
            digests.extend(await side.digests(chunk))
            stats.queries += 1
            plan.finished(time.perf_counter() - t0)
            index += 1
            if pacing.pause > 0 and plan.get(index) is not None:
                await sleep(pacing.pause)
        return digests

    ours, theirs = await asyncio.gather(scan(primary), scan(standby))
    stats.chunks = len(plan.ranges)
    stats.rows_primary = sum(d.count for d in ours)
    stats.rows_standby = sum(d.count for d in theirs)
    t1 = time.perf_counter()
    fetched: Fetched = []
    for index, piece in enumerate(plan.slices):
        a = ours[index] if index < len(ours) else EMPTY
        b = theirs[index] if index < len(theirs) else EMPTY
        if a != b:
            await _descend(primary, standby, piece, a.count, b.count, pacing, stats, sleep, fetched, 0)
    left, right = merge_rows(fetched)
    await _complete(primary, standby, left, right, stats)
    stats.add(classify(left, right, watermark))
    stats.bisect_seconds = time.perf_counter() - t1
    stats.seconds = time.perf_counter() - started
    return stats


async def _complete(primary: Side, standby: Side, left: dict[Key, RowState], right: dict[Key, RowState],
                    stats: WalkStats) -> None:
    """A key fetched on one side only is read by key on the other: under another key order it may sit
    in a range whose digests matched there (see :mod:`actions.reconcile.plan`)."""
    for mine, other, side in ((left, right, standby), (right, left, primary)):
        lonely = [k for k in mine if k not in other]
        for start in range(0, len(lonely), BATCH):
            other.update(await side.rows_for(lonely[start:start + BATCH]))
            stats.queries += 1


async def _descend(primary: Side, standby: Side, bounds: Bounds, left_rows: int, right_rows: int,
                   pacing: Pacing, stats: WalkStats, sleep: Sleep, fetched: Fetched, depth: int) -> None:
    stats.bisected_ranges += 1
    if pacing.pause > 0:  # the descent is paced like the scan
        await sleep(pacing.pause)
    if fetch_rows_now(max(left_rows, right_rows), pacing.row_threshold) or depth >= MAX_DEPTH:
        a, b = await asyncio.gather(primary.rows(bounds), standby.rows(bounds))
        stats.queries += 2
        fetched.append((a, b))
        return
    fuller = primary if left_rows >= right_rows else standby
    every = max(1, -(-max(left_rows, right_rows) // pacing.fanout))
    cuts = await fuller.cuts(bounds, every)
    stats.queries += 1
    pieces = split(bounds, cuts)
    if len(pieces) == 1:  # cannot be cut (rows changed meanwhile): fetch them
        a, b = await asyncio.gather(primary.rows(bounds), standby.rows(bounds))
        stats.queries += 2
        fetched.append((a, b))
        return
    left, right = await asyncio.gather(primary.digests(pieces), standby.digests(pieces))
    stats.queries += 2
    for piece, x, y in zip(pieces, left, right, strict=True):
        if x != y:
            await _descend(primary, standby, piece, x.count, y.count, pacing, stats, sleep, fetched, depth + 1)

"""The reconciliation walk over two :class:`Side` objects: one paced scan, then descent, classification.

A :class:`Side` answers a few questions about one table on one server (SQL in
:mod:`actions.reconcile.pg_side`; an in-memory one in the unit tests). Both sides are asked at the
same time. The cost floor is one sequential read of each table computing every row's hash (the
*native hash scan*); the walk reads each heap once at the top level, in block ranges (TID range
scans, paced: ``chunk_budget`` and ``pause``), never by key arithmetic, so sparse, skewed, uuid,
text and composite keys cost what dense ones cost. Which top-level scan: **mirrored** first, when
both heaps lay their rows out alike (no key involved: :mod:`actions.reconcile.mirror`), else by key
(:func:`plan.scan_mode`):

- **ordered** (one integer key laid out in heap order on both sides, e.g. an identity column):
  the primary's sampled key cuts make slices of about ``chunk_rows / 8`` rows; each side finds
  the block where each slice starts (one index probe per cut) and sums each slice's rows in one
  pass over its blocks. A row outside its slice's blocks (moved by an update) is a *stray*,
  returned by key and added to its own slice, so slice digests are exact. A slice whose digests
  differ is cut the same way inside (:func:`_descend_blocks`): keys found in ``fanout`` evenly
  spread blocks of the side holding more rows cut it, each side sums each piece over its own
  blocks (strays carried by key), until a piece holds at most ``row_threshold`` rows: then its
  ``(key, hash)`` pairs are fetched by key range. A slice in too few blocks to cut is cut at every
  n-th key instead, numbered in one walk over the key's index (:func:`_descend`).
- **hashed** (any other key): rows are grouped by a hash of the key alone into a power of two of
  *classes* (about :data:`plan.CLASS_ROWS` rows each), summed per class over the blocks of each
  chunk. A class that differs holds the same keys on both sides (equal keys, equal hashes); when
  the differing classes hold few rows they are fetched in one more pass, else they are split
  :data:`plan.REFINE` ways (a pass over only their rows) until they do.

The fetched rows are matched by key before classifying (:func:`actions.reconcile.plan.merge_rows`).
With ``keep``, at most that many differing rows (and as many in flight) are held in memory; every
one is still counted.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from actions.reconcile.mirror import mirrored
from actions.reconcile.plan import (
    EMPTY,
    MAX_CLASSES,
    REFINE,
    BlockChunks,
    Blocks,
    Bounds,
    Digest,
    Key,
    Layout,
    RowState,
    add_digest,
    block_picks,
    chunk_bounds,
    class_count,
    classify,
    differing,
    fetch_rows_now,
    merge_rows,
    scan_mode,
    slice_blocks,
    slice_rows,
    split,
    sub_blocks,
)
from actions.reconcile.side import MAX_DEPTH, Fetched, Pacing, Side, Sleep, WalkStats

__all__ = ["Pacing", "Side", "Sleep", "WalkStats", "walk"]
BATCH = 5000  # keys read by key per query
CLASS_CHUNK = 32  # hashed scan: a chunk holds at least this many rows per class (bounds the digests returned)
FIRST_CLASSES = 4096  # hashed scan: classes of the first pass at most (finer ones only where digests differ)


async def walk(primary: Side, standby: Side, *, pacing: Pacing, watermark: float | None = None,
               sleep: Sleep = asyncio.sleep, keep: int | None = None) -> WalkStats:
    """Compare the table on both sides; return every differing row (classified) and counters."""
    stats = WalkStats(keep=keep)
    started = time.perf_counter()
    layouts = await asyncio.gather(primary.layout(), standby.layout())
    stats.queries += 2
    fetched: Fetched = []
    if await mirrored(primary, standby, layouts, pacing, stats, sleep, fetched):
        stats.mode = "mirrored"
    else:
        stats.mode = scan_mode(*layouts)
        scan = _ordered if stats.mode == "ordered" else _hashed
        await scan(primary, standby, layouts, pacing, stats, sleep, fetched)
    left, right = merge_rows(fetched)
    await _complete(primary, standby, left, right, stats)
    stats.add(classify(left, right, watermark))
    stats.seconds = time.perf_counter() - started
    return stats


Strays = dict[int, list[tuple[Key, int]]]


@dataclass(frozen=True, slots=True)
class Part:
    """(ordered) One side's share of a key range being descended: the blocks holding most of its rows,
    and ``(key, hash)`` of its rows found elsewhere (strays, moved by updates)."""

    blocks: Blocks
    outside: list[tuple[Key, int]]


async def _ordered(primary: Side, standby: Side, layouts: Sequence[Layout], pacing: Pacing, stats: WalkStats,
                   sleep: Sleep, fetched: Fetched) -> None:
    cuts = await primary.sample_cuts(slice_rows(layouts[0].rows, pacing.chunk_rows, pacing.slices_per_chunk))
    starts = await asyncio.gather(primary.block_starts(cuts), standby.block_starts(cuts))
    stats.queries += 3
    bounds = chunk_bounds(cuts)
    edges = [c[0] for c in cuts]
    blocks = [slice_blocks(first, layout.blocks) for first, layout in zip(starts, layouts, strict=True)]

    async def scan(side: Side, slices: list[Blocks]) -> tuple[dict[int, Digest], Strays]:
        digests: dict[int, Digest] = {}
        strays: Strays = {}
        step = max(1, pacing.slices_per_chunk)
        for start in range(0, len(slices), step):
            found = await side.slice_scans(list(zip(slices[start:start + step], bounds[start:start + step],
                                                    strict=True)))
            stats.queries += 1
            stats.chunks += side is primary
            for index, (digest, moved) in enumerate(found, start):
                add_digest(digests, index, digest.count, digest.total)
                _home(digests, strays, edges, moved)
            if pacing.pause > 0 and start + step < len(slices):
                await sleep(pacing.pause)
        return digests, strays

    (ours, ours_out), (theirs, theirs_out) = await asyncio.gather(scan(primary, blocks[0]), scan(standby, blocks[1]))
    _count(stats, ours, theirs)
    t1 = time.perf_counter()
    for index in differing(ours, theirs):
        parts = (Part(blocks[0][index], ours_out.get(index, [])), Part(blocks[1][index], theirs_out.get(index, [])))
        counts = (ours.get(index, EMPTY).count, theirs.get(index, EMPTY).count)
        await _descend_blocks((primary, standby), layouts, bounds[index], parts, counts, pacing, stats, sleep,
                              fetched, 0)
    stats.bisect_seconds = time.perf_counter() - t1


def _inside(bounds: Bounds, key: int) -> bool:
    """(ordered: one integer key) ``lo < key <= hi``."""
    return (bounds.lo is None or key > bounds.lo[0]) and (bounds.hi is None or key <= bounds.hi[0])


def _home(digests: dict[int, Digest], strays: Strays, edges: list[int], moved: list[tuple[Key, int]]) -> None:
    """Rows found outside their slice's blocks: each added to its own slice (by key) and kept there."""
    for key, value in moved:  # integer keys: Python orders them as the server does
        home = bisect.bisect_left(edges, key[0])
        add_digest(digests, home, 1, value)
        strays.setdefault(home, []).append((key, value))


async def _descend_blocks(sides: tuple[Side, Side], layouts: Sequence[Layout], bounds: Bounds,
                          parts: tuple[Part, Part], counts: tuple[int, int], pacing: Pacing, stats: WalkStats,
                          sleep: Sleep, fetched: Fetched, depth: int) -> None:
    """A differing slice of the ordered scan, cut like the top level: keys found in evenly spread
    blocks of the fuller side cut it into ``fanout`` pieces; each side sums each piece over its own
    blocks (strays by key, as at the top level), and only differing pieces go on. Small pieces are
    fetched by key; a slice whose rows sit in too few blocks to cut goes to :func:`_descend`."""
    fuller = 0 if counts[0] >= counts[1] else 1
    small = fetch_rows_now(max(counts), pacing.row_threshold) or depth >= MAX_DEPTH
    picks = [] if small else block_picks(parts[fuller].blocks, layouts[fuller].blocks, pacing.fanout)
    cuts: list[Key] = []
    if picks:
        firsts = await sides[fuller].block_keys(picks, bounds)
        stats.queries += 1
        cuts = sorted({(k[0] - 1,) for k in firsts if k is not None and _inside(bounds, k[0] - 1)
                       and (bounds.hi is None or k[0] - 1 < bounds.hi[0])})
    if not cuts:
        await _descend(sides[0], sides[1], bounds, counts[0], counts[1], pacing, stats, sleep, fetched, depth)
        return
    stats.bisected_ranges += 1
    if pacing.pause > 0:
        await sleep(pacing.pause)
    pieces = split(bounds, cuts)
    edges = [c[0] for c in cuts]
    starts = await asyncio.gather(*(side.block_starts(cuts) for side in sides))
    within = [sub_blocks(part.blocks, first, layout.blocks)
              for part, first, layout in zip(parts, starts, layouts, strict=True)]
    scans = await asyncio.gather(*(side.slice_scans(list(zip(w, pieces, strict=True)))
                                   for side, w in zip(sides, within, strict=True)))
    stats.queries += 4
    sums: list[dict[int, Digest]] = []
    outs: list[Strays] = []
    for part, found in zip(parts, scans, strict=True):
        digests: dict[int, Digest] = {}
        out: Strays = {}
        for index, (digest, _) in enumerate(found):
            add_digest(digests, index, digest.count, digest.total)
        # strays of other slices were counted at the top level; this slice's own go to their piece
        moved = [pair for _, strays in found for pair in strays if _inside(bounds, pair[0][0])]
        _home(digests, out, edges, [*part.outside, *moved])
        sums.append(digests)
        outs.append(out)
    for index in differing(sums[0], sums[1]):
        await _descend_blocks(sides, layouts, pieces[index],
                              (Part(within[0][index], outs[0].get(index, [])),
                               Part(within[1][index], outs[1].get(index, []))),
                              (sums[0].get(index, EMPTY).count, sums[1].get(index, EMPTY).count),
                              pacing, stats, sleep, fetched, depth + 1)


async def _paced(layout: Layout, chunk_rows: int, pacing: Pacing, stats: WalkStats, sleep: Sleep,
                 read: Callable[[Blocks], Awaitable[None]]) -> int:
    """``read`` every block chunk of one side's heap, paced (:class:`plan.BlockChunks`, ``pause``);
    returns the number of chunks."""
    chunks = BlockChunks(layout, chunk_rows, pacing.chunk_budget)
    count = 0
    while (blocks := chunks.next()) is not None:
        t0 = time.perf_counter()
        await read(blocks)
        stats.queries += 1
        count += 1
        chunks.finished(time.perf_counter() - t0)
        if pacing.pause > 0 and not chunks.done:
            await sleep(pacing.pause)
    return count


async def _hashed(primary: Side, standby: Side, layouts: Sequence[Layout], pacing: Pacing, stats: WalkStats,
                  sleep: Sleep, fetched: Fetched) -> None:
    classes = min(FIRST_CLASSES, class_count(max(layout.rows for layout in layouts)))
    chunk_rows = max(pacing.chunk_rows, CLASS_CHUNK * classes)

    async def scan(side: Side, layout: Layout, count: int, within: tuple[int, list[int]] | None,
                   ) -> dict[int, Digest]:
        digests: dict[int, Digest] = {}

        async def read(blocks: Blocks) -> None:
            for cls, digest in (await side.class_digests(blocks, count, within)).items():
                add_digest(digests, cls, digest.count, digest.total)

        chunks = await _paced(layout, chunk_rows, pacing, stats, sleep, read)
        if side is primary and within is None:
            stats.chunks += chunks
        return digests

    async def rows(side: Side, layout: Layout) -> dict[Key, RowState]:
        found: dict[Key, RowState] = {}

        async def read(blocks: Blocks) -> None:
            found.update(await side.class_rows(blocks, classes, wanted))

        await _paced(layout, chunk_rows, pacing, stats, sleep, read)
        return found

    ours, theirs = await asyncio.gather(scan(primary, layouts[0], classes, None),
                                        scan(standby, layouts[1], classes, None))
    _count(stats, ours, theirs)
    t1 = time.perf_counter()
    wanted = differing(ours, theirs)
    while (wanted and classes * REFINE <= MAX_CLASSES
           and sum(max(ours.get(c, EMPTY).count, theirs.get(c, EMPTY).count) for c in wanted) > pacing.fetch_rows):
        stats.bisected_ranges += len(wanted)
        finer = classes * REFINE
        ours, theirs = await asyncio.gather(scan(primary, layouts[0], finer, (classes, wanted)),
                                            scan(standby, layouts[1], finer, (classes, wanted)))
        wanted, classes = differing(ours, theirs), finer
    if wanted:
        stats.bisected_ranges += len(wanted)
        a, b = await asyncio.gather(rows(primary, layouts[0]), rows(standby, layouts[1]))
        fetched.append((a, b))
    stats.bisect_seconds = time.perf_counter() - t1


def _count(stats: WalkStats, ours: dict[int, Digest], theirs: dict[int, Digest]) -> None:
    stats.rows_primary = sum(d.count for d in ours.values())
    stats.rows_standby = sum(d.count for d in theirs.values())


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

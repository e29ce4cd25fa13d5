"""The mirrored scan: two heaps that lay their rows out alike, compared block range by block range.

A logical replica's first copy of a table is written in the primary's heap order (the table
sync is one ``COPY`` of a sequential scan), and later inserts land on both sides in commit
order, so the same block numbers often hold the same rows on both servers, whatever the key.
When they do, the cheapest exact comparison needs no key at all: both sides sum the rows of the
same block ranges (a plain aggregate over a TID range scan, nothing per row but the row hash),
and only ranges whose digests differ are cut into ``fanout`` smaller block ranges, down to a
few thousand rows whose ``(key, hash)`` pairs are fetched.

**Exact for any layout**, only the speed depends on it. Each side reads one snapshot, in which a
key is unique. Equal digests of a range mean the same rows in it on both sides (count and sum of
64-bit hashes; a miss needs a 2^-64 coincidence). So a row that differs, or sits elsewhere on the
other side (moved by an update), lies in a differing range on every side that has it: every
differing row is fetched, and the fetched rows are matched by key across ranges
(:func:`actions.reconcile.plan.merge_rows`).

**When:** both servers read block ranges (PostgreSQL >= 14, one heap), :data:`plan.PROBES` evenly
spread blocks hold the same rows on both sides (one query a side), and the top level finds less
than a quarter of the rows in differing ranges (:func:`plan.mirror_gives_up`). Otherwise nothing
is fetched and the table is scanned by key (:mod:`actions.reconcile.bisect`): heaps that drifted
apart (vacuums at other times, a ``VACUUM FULL`` on one side) cost one probe, at worst one more
pass over the heaps. ``Pacing.mirror = False`` (config ``reconcile.scan: keys``) always scans by key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from actions.reconcile.plan import (
    Blocks,
    Digest,
    Layout,
    block_picks,
    heaps_alike,
    mirror_cuts,
    mirror_gives_up,
    mirror_plan,
    mirror_possible,
    probe_blocks,
    sub_blocks,
)
from actions.reconcile.side import MAX_DEPTH, Fetched, Pacing, Side, Sleep, WalkStats


async def mirrored(primary: Side, standby: Side, layouts: Sequence[Layout], pacing: Pacing, stats: WalkStats,
                   sleep: Sleep, fetched: Fetched) -> bool:
    """Compare the heaps block by block; False (nothing fetched) when they are not laid out alike."""
    if not (pacing.mirror and mirror_possible(*layouts)):
        return False
    probes = probe_blocks(*layouts)
    if probes:
        ours, theirs = await asyncio.gather(primary.block_key_hashes(probes), standby.block_key_hashes(probes))
        stats.queries += 2
        if not heaps_alike(ours, theirs):
            return False
    top = max(layout.blocks for layout in layouts)
    rows = max(layout.rows for layout in layouts)
    ranges, step = mirror_plan(top, rows, pacing.chunk_rows, pacing.slices_per_chunk, pacing.row_threshold)

    async def scan(side: Side) -> list[Digest]:
        digests: list[Digest] = []
        for start in range(0, len(ranges), step):
            digests += await side.block_digests(ranges[start:start + step])
            stats.queries += 1
            stats.chunks += side is primary
            if pacing.pause > 0 and start + step < len(ranges):
                await sleep(pacing.pause)
        return digests

    ours_top, theirs_top = await asyncio.gather(scan(primary), scan(standby))
    wanted = [(r, x.count, y.count) for r, x, y in zip(ranges, ours_top, theirs_top, strict=True) if x != y]
    total = max(sum(d.count for d in ours_top), sum(d.count for d in theirs_top))
    if mirror_gives_up(sum(max(a, b) for _, a, b in wanted), total, pacing.fetch_rows):
        return False
    stats.rows_primary = sum(d.count for d in ours_top)
    stats.rows_standby = sum(d.count for d in theirs_top)
    t1 = time.perf_counter()
    await _descend((primary, standby), wanted, top, pacing, stats, sleep, fetched)
    stats.bisect_seconds = time.perf_counter() - t1
    return True


async def _descend(sides: tuple[Side, Side], wanted: list[tuple[Blocks, int, int]], top: int, pacing: Pacing,
                   stats: WalkStats, sleep: Sleep, fetched: Fetched) -> None:
    """The differing block ranges, level by level: while they hold more than ``fetch_rows`` rows in all,
    or one holds more than ``row_threshold``, those ranges are cut into ``fanout`` block ranges, summed on
    both sides in one query a side, and only differing pieces go on. Then every remaining range's rows are
    fetched, in one query a side."""
    for _ in range(MAX_DEPTH):
        picks = [block_picks(r, top, pacing.fanout) for r, _, _ in wanted]
        cut = mirror_cuts([(bool(p), max(a, b)) for p, (_, a, b) in zip(picks, wanted, strict=True)],
                          pacing.row_threshold, pacing.fetch_rows)
        if not any(cut):
            break
        stats.bisected_ranges += sum(cut)
        if pacing.pause > 0:  # the descent is paced like the scan
            await sleep(pacing.pause)
        pieces = [piece for (r, _, _), p, c in zip(wanted, picks, cut, strict=True) if c
                  for piece in sub_blocks(r, list(p), top)]
        ours, theirs = await asyncio.gather(*(side.block_digests(pieces) for side in sides))
        stats.queries += 2
        wanted = ([w for w, c in zip(wanted, cut, strict=True) if not c]
                  + [(p, x.count, y.count) for p, x, y in zip(pieces, ours, theirs, strict=True) if x != y])
    if wanted:
        ranges = [r for r, _, _ in wanted]
        a, b = await asyncio.gather(*(side.block_rows(ranges) for side in sides))
        stats.queries += 2
        fetched.append((a, b))

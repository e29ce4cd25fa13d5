"""The mirrored scan (two heaps laid out alike, compared block by block), on in-memory sides.

Heaps are modelled the way PostgreSQL keeps them: a delete leaves a hole, an update either stays
in its block (HOT) or moves the row to the heap's end, an insert goes to the end or into a hole.
"""

from __future__ import annotations

import itertools
import random

from hypothesis import event, given, settings
from hypothesis import strategies as st

from actions.reconcile.bisect import walk
from actions.reconcile.plan import (
    MAX_MIRROR_RANGES,
    PROBE_ALIGNED,
    PROBES,
    Blocks,
    Key,
    Layout,
    RowState,
    heaps_alike,
    mirror_cuts,
    mirror_gives_up,
    mirror_plan,
    mirror_ranges,
    probe_blocks,
)
from actions.reconcile.side import Pacing
from tests.support.memory_side import ROWS_PER_BLOCK, MemorySide, ints, no_sleep


class FetchCounting(MemorySide):
    """Counts the rows fetched by block range (the mirrored scan's last step)."""

    fetched = 0

    async def block_rows(self, ranges: list[Blocks]) -> dict[Key, RowState]:
        found = await super().block_rows(ranges)
        self.fetched += len(found)
        return found


class Stale(MemorySide):
    """A table that grew tenfold since it was last analyzed: ranges hold more rows than planned, and
    a differing one is cut before its rows are fetched."""

    shrink = 10

    async def layout(self) -> Layout:
        real = await super().layout()
        return Layout(real.rows / self.shrink, real.blocks, real.tid_ranges, real.ordered)


class VeryStale(Stale):
    shrink = 100

@st.composite
def heap_pair(draw: st.DrawFn) -> tuple[MemorySide, MemorySide, set[tuple[Key, str]], bool]:
    """A primary heap and a standby heap derived from it by deletes, updates in place or moved,
    inserts, rows moved on either side, and (sometimes) drift: swapped slots, or a whole reordering."""
    count = draw(st.integers(0, 600))
    keys: list[Key] = [(k,) for k in range(count)] if draw(st.booleans()) else [(f"k{k * 7919 % 1000:03}",)
                                                                              for k in range(count)]
    primary = {k: draw(st.integers(0, 3)) for k in keys} if count < 40 else dict.fromkeys(keys, 1)
    heap_a: list[Key | None] = list(keys)
    heap_b: list[Key | None] = list(keys)
    standby = dict(primary)
    expected: set[tuple[Key, str]] = set()
    rng = random.Random(draw(st.integers(0, 10**6)))
    for key in rng.sample(keys, min(len(keys), draw(st.integers(0, 6)))):
        action = rng.choice(["delete", "update_in_place", "update_moved", "moved_on_primary", "moved_on_standby"])
        if action == "delete":
            del standby[key]
            heap_b[heap_b.index(key)] = None
            expected.add((key, "missing_on_standby"))
        elif action.startswith("update"):
            standby[key] = ("changed", primary[key])
            expected.add((key, "changed"))
            if action == "update_moved":
                heap_b[heap_b.index(key)] = None
                heap_b.append(key)
        else:  # an update that changed nothing, done on one side only: the row sits elsewhere there
            heap = heap_a if action == "moved_on_primary" else heap_b
            heap[heap.index(key)] = None
            heap.append(key)
    for n in range(draw(st.integers(0, 3))):
        key = (10**9 + n,) if keys and isinstance(keys[0][0], int) else (f"new{n}",)
        standby[key] = "extra"
        expected.add((key, "missing_on_primary"))
        holes = [i for i, k in enumerate(heap_b) if k is None]
        if holes and rng.random() < 0.5:
            heap_b[rng.choice(holes)] = key
        else:
            heap_b.append(key)
    drift = draw(st.sampled_from(["none", "none", "swaps", "reordered"]))
    if drift == "swaps":
        for _ in range(draw(st.integers(1, 20))):
            i, j = rng.randrange(len(heap_b) or 1), rng.randrange(len(heap_b) or 1)
            if heap_b:
                heap_b[i], heap_b[j] = heap_b[j], heap_b[i]
    elif drift == "reordered":
        rng.shuffle(heap_b)
    ordered = all(isinstance(k[0], int) for k in standby) and drift == "none"
    side = Stale if draw(st.booleans()) else MemorySide  # stale statistics: ranges larger than planned, cut again
    return (side(primary, heap=heap_a, ordered=ordered), side(standby, heap=heap_b, ordered=ordered), expected,
            drift == "none")


@settings(max_examples=300, deadline=None)
@given(pair=heap_pair(), chunk=st.integers(1, 400), fanout=st.integers(2, 9), threshold=st.integers(1, 40),
       fetch=st.sampled_from([1, 10, 50_000]))
async def test_the_mirrored_scan_finds_exactly_the_differences_for_any_layout(
        pair: tuple[MemorySide, MemorySide, set[tuple[Key, str]], bool], chunk: int, fanout: int, threshold: int,
        fetch: int) -> None:
    """Deletes (holes), updates in place or moved, inserts into holes or at the end, rows moved on one
    side only, swapped slots or a reordered heap, statistics right or stale: each differing row is
    reported once, whichever scan ran (the mirrored one, or by key when the heaps are not laid out
    alike), and every row is counted."""
    left, right, expected, _ = pair
    stats = await walk(left, right, pacing=Pacing(chunk_rows=chunk, fanout=fanout, row_threshold=threshold,
                                                  fetch_rows=fetch), sleep=no_sleep)
    assert sorted(((d.key, d.kind) for d in stats.diffs), key=repr) == sorted(expected, key=repr)
    assert (stats.rows_primary, stats.rows_standby) == (len(left.data), len(right.data))
    assert stats.mode in ("mirrored", "ordered", "hashed")
    event(f"{stats.mode} scan, {'descended' if stats.bisected_ranges else 'no descent'}")


async def test_heaps_laid_out_alike_are_compared_without_the_key() -> None:
    """A replica's heap (holes where rows were deleted, an update moved to the end, an insert): the
    mirrored scan, one pass per side plus the probe, and only a few small block ranges fetched."""
    primary = ints(dict.fromkeys(range(20000), "v"))
    standby = {**primary, (6000,): "changed", (30000,): "new"}
    del standby[(10000,)]
    heap: list[Key | None] = [None if k in ((10000,), (6000,)) else k for k in primary]
    left = FetchCounting(primary)
    right = FetchCounting(standby, heap=[*heap, (6000,), (30000,)])
    stats = await walk(left, right, pacing=Pacing(chunk_rows=8000, row_threshold=64), sleep=no_sleep)
    assert stats.mode == "mirrored"
    assert [(d.key, d.kind) for d in stats.diffs] == [((6000,), "changed"), ((10000,), "missing_on_standby"),
                                                       ((30000,), "missing_on_primary")]
    assert (stats.rows_primary, stats.rows_standby) == (20000, 20000)
    assert left.fetched + right.fetched <= 4 * 64


async def test_identical_heaps_are_read_once_per_side() -> None:
    """Equal tables laid out alike: the probe, then one pass over each heap, 8 ranges per round trip."""
    rows = ints(dict.fromkeys(range(10000), "v"))
    left, right = MemorySide(rows), MemorySide(rows)
    stats = await walk(left, right, pacing=Pacing(chunk_rows=2500, row_threshold=64), sleep=no_sleep)
    ranges, per_trip = mirror_plan(10000 // ROWS_PER_BLOCK, 10000, 2500, 8, 64)
    assert (len(ranges), per_trip) == (313, 78)  # ranges of 32 rows (8 blocks), 2,500 rows a round trip
    assert stats.mode == "mirrored" and stats.diffs == [] and stats.bisected_ranges == 0
    assert stats.queries == 2 + 2 + 2 * 5  # layouts, probes, the passes


async def test_heaps_laid_out_otherwise_are_scanned_by_key_after_one_probe() -> None:
    """The standby's heap in another order (rewritten, vacuumed at other times): the probe sees it,
    two queries, and the table is scanned by key with the same result."""
    rows = ints(dict.fromkeys(range(4000), "v"))
    standby = {**rows, (5,): "changed"}
    order = list(standby)
    random.Random(7).shuffle(order)
    stats = await walk(MemorySide(rows), MemorySide(standby, heap=list(order)), pacing=Pacing(chunk_rows=800),
                       sleep=no_sleep)
    assert stats.mode == "hashed" and [d.key for d in stats.diffs] == [(5,)]


async def test_a_top_level_that_differs_widely_gives_up_before_fetching() -> None:
    """The probed blocks agree but most rows elsewhere differ: the mirrored scan fetches nothing and the
    key scan reports every row."""
    rows = ints(dict.fromkeys(range(4000), "v"))
    layout = Layout(4000.0, 4000 // ROWS_PER_BLOCK, True, False)
    probed = set(probe_blocks(layout, layout))
    standby = {k: (v if k[0] // ROWS_PER_BLOCK in probed else "x") for k, v in rows.items()}
    left, right = FetchCounting(rows, ordered=False), FetchCounting(standby, ordered=False)
    stats = await walk(left, right, pacing=Pacing(chunk_rows=800, fetch_rows=100), sleep=no_sleep)
    assert stats.mode == "hashed" and left.fetched == right.fetched == 0
    assert stats.real_count == sum(1 for k in rows if standby[k] == "x")


async def test_the_mirrored_scan_is_paced_through_the_injected_sleep() -> None:
    """``pause`` between round trips of the pass (never after the last) and before each descent step."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    rows = ints(dict.fromkeys(range(400), 1))
    await walk(MemorySide(rows), MemorySide(rows),
               pacing=Pacing(chunk_rows=50, pause=0.5, slices_per_chunk=1, row_threshold=8), sleep=record)
    assert slept == [0.5] * 2 * 8  # 100 ranges of 4 rows, 12 per round trip: 9 round trips a side
    slept.clear()
    rows = ints(dict.fromkeys(range(4000), 1))
    stats = await walk(VeryStale(rows), VeryStale({**rows, (7,): 2}),
                       pacing=Pacing(chunk_rows=400, pause=0.25, row_threshold=4, fanout=4), sleep=record)
    assert stats.mode == "mirrored" and [d.key for d in stats.diffs] == [(7,)]
    assert slept == [0.25] * 3  # one rest per level of cuts: ranges of 50 blocks cut to 13, 4, 1



async def test_scan_keys_turns_the_mirrored_scan_off() -> None:
    rows = ints(dict.fromkeys(range(1000), 1))
    stats = await walk(MemorySide(rows), MemorySide(rows), pacing=Pacing(mirror=False), sleep=no_sleep)
    assert stats.mode == "ordered"


def test_mirror_ranges_cover_every_block_once_and_end_open() -> None:
    for blocks, rows, per in ((0, 0.0, 10), (1, 5.0, 10), (100, 10000.0, 1000), (101, 10000.0, 999), (7, 1e6, 10)):
        ranges = mirror_ranges(blocks, rows, per)
        assert ranges[0].start == 0 and ranges[-1].end is None
        assert all(a.end == b.start for a, b in itertools.pairwise(ranges))
        assert all(r.end is None or r.end > r.start for r in ranges)
        assert len(ranges) <= max(1, blocks)
    assert mirror_ranges(100, 10000.0, 1000) == [Blocks(s, s + 10) for s in range(0, 90, 10)] + [Blocks(90, None)]
    # a differing range is fetched at once (half the fetch threshold), a round trip reads what the ordered scan's does
    ranges, per_trip = mirror_plan(50_000, 1e7, 100_000, 8, 4096)
    assert len(ranges) == 4546 and per_trip == 305  # 10M rows in 50,000 blocks: 11 blocks a range, 15 round trips
    ranges, per_trip = mirror_plan(10**7, 1e10, 100_000, 8, 4096)
    assert len(ranges) <= MAX_MIRROR_RANGES + 1


def test_probe_and_give_up_rules() -> None:
    a, b = Layout(1e6, 10000, True, False), Layout(1e6, 12000, True, False)
    picks = probe_blocks(a, b)
    assert len(picks) == PROBES and picks == sorted(set(picks)) and max(picks) < 10000
    assert probe_blocks(Layout(0, 0, True, False), b) == []
    blocks = [list(range(i * 100, i * 100 + 100)) for i in range(10)]
    assert heaps_alike(blocks, [list(reversed(block)) for block in blocks])  # order inside a block is free
    moved = [block[:-10] for block in blocks]  # a tenth of every block updated elsewhere
    assert heaps_alike(blocks, moved) and heaps_alike(moved, blocks)
    assert not heaps_alike(blocks, [block[:-11] for block in blocks])
    assert not heaps_alike(blocks, [blocks[(i + 1) % 10] for i in range(10)])  # rewritten in another order
    assert heaps_alike([], []) and heaps_alike([[]], [[]])
    assert PROBE_ALIGNED == 0.9
    assert not mirror_gives_up(500_000, 1_000_000, 50_000) and mirror_gives_up(500_001, 1_000_000, 50_000)
    assert not mirror_gives_up(900, 1000, 50_000)  # a small table is simply fetched
    # cut a range holding too many rows; every one while they hold too many in all; never an uncuttable one
    assert mirror_cuts([(True, 10), (True, 500), (False, 400)], 100, 1000) == [False, True, False]
    assert mirror_cuts([(True, 10), (True, 500), (False, 600)], 100, 1000) == [True, True, False]

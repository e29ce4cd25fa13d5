"""Reconciliation planning and the walk, on in-memory sides: every difference found, nothing else.

The sides compute the same digests the SQL does (count + sum of a 64-bit non-linear row hash), so
the walk's bisection and classification are tested here without a database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.reconcile.bisect import Pacing, walk
from actions.reconcile.plan import (
    ChunkPlan,
    Digest,
    KeyRange,
    RowDiff,
    RowState,
    bucket_width,
    chunk_ranges,
    classify,
    differing_buckets,
    next_chunk_size,
)


def row_hash(key: int, value: object) -> int:
    digest = hashlib.blake2b(repr((key, value)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class MemorySide:
    """A table in a dict, answering like :class:`actions.reconcile.pg_side.PgSide`."""

    def __init__(self, rows: Mapping[int, object], updated: dict[int, float] | None = None) -> None:
        self.data = dict(rows)
        self.updated = updated or {}
        self.calls = 0

    def _keys(self, r: KeyRange) -> list[int]:
        self.calls += 1
        return [k for k in self.data if r.lo <= k < r.hi]

    async def bounds(self) -> tuple[int, int] | None:
        return (min(self.data), max(self.data)) if self.data else None

    async def next_key(self, after: int) -> int | None:
        later = [k for k in self.data if k >= after]
        return min(later) if later else None

    async def digest(self, r: KeyRange) -> Digest:
        keys = self._keys(r)
        return Digest(len(keys), sum(row_hash(k, self.data[k]) for k in keys))

    async def buckets(self, r: KeyRange, width: int) -> dict[int, Digest]:
        out: dict[int, Digest] = {}
        for k in self._keys(r):
            b = (k - r.lo) // width
            d = out.get(b, Digest(0, 0))
            out[b] = Digest(d.count + 1, d.total + row_hash(k, self.data[k]))
        return out

    async def rows(self, r: KeyRange) -> dict[int, RowState]:
        return {k: RowState(row_hash(k, self.data[k]), self.updated.get(k)) for k in self._keys(r)}


async def no_sleep(_seconds: float) -> None:
    return None


@st.composite
def table_pair(draw: st.DrawFn) -> tuple[dict[int, object], dict[int, object], set[tuple[int, str]]]:
    keys = draw(st.sets(st.integers(-500, 5000), min_size=0, max_size=300))
    primary: dict[int, object] = {k: draw(st.integers(0, 5)) for k in sorted(keys)}
    standby: dict[int, object] = dict(primary)
    expected: set[tuple[int, str]] = set()
    ordered = sorted(primary)
    for key in draw(st.lists(st.sampled_from(ordered), max_size=5, unique=True)) if ordered else []:
        action = draw(st.sampled_from(["delete", "update", "keep"]))
        if action == "delete":
            del standby[key]
            expected.add((key, "missing_on_standby"))
        elif action == "update":
            standby[key] = ("changed", standby[key])
            expected.add((key, "changed"))
    for key in draw(st.lists(st.integers(-1000, 6000), max_size=4, unique=True)):
        if key not in primary:
            standby[key] = "extra"
            expected.add((key, "missing_on_primary"))
    return primary, standby, expected


@settings(max_examples=150, deadline=None)
@given(pair=table_pair(), chunk=st.integers(1, 400), fanout=st.integers(2, 9), threshold=st.integers(1, 40))
async def test_walk_finds_exactly_the_differences(pair: tuple[dict[int, object], dict[int, object],
                                                              set[tuple[int, str]]],
                                                  chunk: int, fanout: int, threshold: int) -> None:
    """For any table, mutations and pacing, the walk reports each changed, missing or extra row once."""
    primary, standby, expected = pair
    stats = await walk(MemorySide(primary), MemorySide(standby),
                       pacing=Pacing(chunk_keys=chunk, fanout=fanout, row_threshold=threshold), sleep=no_sleep)
    found = [(d.key, d.kind) for d in stats.diffs]
    assert sorted(found) == sorted(expected)
    assert stats.rows_primary == len(primary) and stats.rows_standby == len(standby)


async def test_swapped_values_between_two_rows_are_two_changes() -> None:
    """Two rows that exchanged a value are both found: the row hash is summed, never XOR-ed linearly."""
    primary = {k: k * 10 for k in range(1, 1001)}
    standby = dict(primary)
    standby[10], standby[20] = primary[20], primary[10]
    stats = await walk(MemorySide(primary), MemorySide(standby), pacing=Pacing(chunk_keys=100), sleep=no_sleep)
    assert stats.diffs == [RowDiff(10, "changed"), RowDiff(20, "changed")]


async def test_identical_tables_cost_one_digest_per_chunk() -> None:
    """Equal tables are proven with one digest per chunk per side: no bisection, no row fetch."""
    rows = dict.fromkeys(range(10000), "v")
    left, right = MemorySide(rows), MemorySide(rows)
    stats = await walk(left, right, pacing=Pacing(chunk_keys=2500), sleep=no_sleep)
    assert stats.diffs == [] and stats.chunks == 4 and stats.bisected_ranges == 0
    assert left.calls == 4


async def test_pause_between_chunks_goes_through_the_injected_sleep() -> None:
    """Pacing rests ``pause`` seconds between chunks on each side (never after the last) via the injected sleep."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    rows = dict.fromkeys(range(100), 1)
    await walk(MemorySide(rows), MemorySide(rows), pacing=Pacing(chunk_keys=25, pause=0.5), sleep=record)
    assert slept == [0.5] * 6


async def test_rows_newer_than_the_watermark_are_in_flight() -> None:
    """A primary row updated after the watermark is in flight; a row only on the standby never is."""
    primary = {1: "a", 2: "b-new", 3: "c"}
    standby = {1: "a", 2: "b", 4: "d"}
    stats = await walk(MemorySide(primary, {1: 10.0, 2: 200.0, 3: 300.0}), MemorySide(standby),
                       pacing=Pacing(), watermark=100.0, sleep=no_sleep)
    assert stats.diffs == [RowDiff(2, "changed", True), RowDiff(3, "missing_on_standby", True),
                           RowDiff(4, "missing_on_primary", False)]


async def test_gaps_in_sparse_keys_are_skipped() -> None:
    """Keys far apart do not cost one query per empty chunk: the plan jumps over gaps both sides share."""
    rows: dict[int, object] = {**dict.fromkeys(range(10), "v"), **{10**12 + k: "w" for k in range(10)}}
    standby = dict(rows)
    standby[10**12 + 5] = "changed"
    stats = await walk(MemorySide(rows), MemorySide(standby), pacing=Pacing(chunk_keys=5), sleep=no_sleep)
    assert stats.diffs == [RowDiff(10**12 + 5, "changed")]
    assert stats.chunks < 20  # not one per 5 keys of a 10**12 gap


def test_chunk_plan_is_shared_and_adapts_only_unfixed_chunks() -> None:
    """A chunk fixed for one side is the same for the other; pacing changes the size of later chunks."""
    plan = ChunkPlan(0, 100, size=40, budget=1.0)
    first = plan.get(0)
    plan.finished(5.0)  # too slow: halve
    assert first == KeyRange(0, 40) and plan.get(1) == KeyRange(40, 60) and plan.get(0) == first
    plan.no_keys_until("primary", 60, 90)
    plan.no_keys_until("standby", 60, None)
    assert plan.get(2) == KeyRange(90, 100) and plan.get(3) is None


async def test_empty_tables_compare_equal_at_once() -> None:
    """Two empty tables need only the bounds queries."""
    stats = await walk(MemorySide({}), MemorySide({}), pacing=Pacing(), sleep=no_sleep)
    assert stats.diffs == [] and stats.queries == 2


def test_chunk_ranges_cover_without_overlap() -> None:
    """Chunks cover [lo, hi) exactly, the last one short."""
    assert chunk_ranges(0, 10, 4) == [KeyRange(0, 4), KeyRange(4, 8), KeyRange(8, 10)]
    with pytest.raises(ValueError):
        chunk_ranges(0, 10, 0)


def test_differing_buckets_include_one_sided_buckets() -> None:
    """A bucket present on one side only differs; equal buckets do not; the last bucket is clipped."""
    r = KeyRange(100, 150)
    width = bucket_width(r, 4)
    assert width == 13
    got = differing_buckets(r, width, {0: Digest(3, 9), 3: Digest(1, 1)}, {0: Digest(3, 9), 1: Digest(2, 5)})
    assert got == [(KeyRange(113, 126), 2), (KeyRange(139, 150), 1)]


def test_classify_kinds() -> None:
    """Missing on either side or changed, in key order; equal rows are not reported."""
    left = {1: RowState(1), 2: RowState(2), 3: RowState(3)}
    right = {2: RowState(2), 3: RowState(30), 4: RowState(4)}
    assert classify(left, right) == [RowDiff(1, "missing_on_standby"), RowDiff(3, "changed"),
                                     RowDiff(4, "missing_on_primary")]


@pytest.mark.parametrize(("size", "elapsed", "expected"), [
    (1000, 5.0, 500), (1000, 1.0, 1000), (1000, 0.1, 2000), (4000, 0.1, 4000), (20, 5.0, 16)])
def test_chunk_size_follows_the_budget(size: int, elapsed: float, expected: int) -> None:
    """Slower than the 2 s budget halves the chunk; much faster doubles it, within bounds."""
    assert next_chunk_size(size, elapsed, 2.0, smallest=16, largest=4000) == expected


async def test_bisection_is_paced_and_keeps_only_a_bounded_number_of_rows() -> None:
    """Each bisection step rests ``pause``; with ``keep`` only that many rows stay in memory, all are counted."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    primary = dict.fromkeys(range(1000), 1)
    standby = {k: (2 if k % 100 == 0 else 1) for k in range(1000)} | {5000: 1}
    stats = await walk(MemorySide(primary), MemorySide(standby), pacing=Pacing(chunk_keys=10_000, pause=0.25,
                                                                               row_threshold=50),
                       sleep=record, keep=3)
    assert (stats.real_count, stats.standby_only_count, len(stats.diffs)) == (11, 1, 3)
    assert [d.key for d in stats.diffs] == [0, 100, 200]
    assert len(slept) >= stats.bisected_ranges > 1 and set(slept) == {0.25}


def test_rows_only_on_the_standby_are_in_flight_until_the_standby_is_proven_caught_up() -> None:
    """Not caught up: a row only on the standby (its delete may be on the way) moves to in flight."""
    from actions.reconcile.bisect import WalkStats
    from actions.reconcile.runner import _recheck_plan

    stats = WalkStats()
    stats.add([RowDiff(1, "changed"), RowDiff(2, "missing_on_primary"), RowDiff(3, "missing_on_standby", True)])
    assert _recheck_plan(stats, caught_up=True) == [1, 2] and stats.real_count == 2
    assert _recheck_plan(stats, caught_up=False) == []
    assert stats.diffs == [RowDiff(1, "changed"), RowDiff(2, "missing_on_primary", True),
                           RowDiff(3, "missing_on_standby", True)]
    assert (stats.real_count, stats.in_flight_count) == (1, 2)

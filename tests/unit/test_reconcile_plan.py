"""Reconciliation planning and the scans by key, on in-memory sides: every difference found, nothing else.

The sides compute the same digests the SQL does (count + sum of a 64-bit non-linear row hash), so
the walk's bisection and classification are tested here without a database.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.reconcile.bisect import Pacing, WalkStats, walk
from actions.reconcile.live import all_real, not_caught_up
from actions.reconcile.plan import (
    CLASS_ROWS,
    BlockChunks,
    Blocks,
    Bounds,
    Key,
    Layout,
    RowDiff,
    RowState,
    block_picks,
    chunk_bounds,
    class_count,
    classify,
    key_json,
    key_text,
    merge_rows,
    next_chunk_size,
    scan_mode,
    slice_blocks,
    split,
    sub_blocks,
)
from tests.support.memory_side import MemorySide, ints, no_sleep


def keys(**pacing: Any) -> Pacing:
    """The scans by key (ordered, hashed); the mirrored scan has its own tests (test_reconcile_mirror)."""
    return Pacing(mirror=False, **pacing)


@st.composite
def table_pair(draw: st.DrawFn) -> tuple[dict[Key, object], dict[Key, object], set[tuple[Key, str]]]:
    shape = draw(st.sampled_from(["int", "sparse", "text", "composite"]))
    if shape == "int":
        raw: list[Key] = [(k,) for k in draw(st.sets(st.integers(-500, 5000), max_size=300))]
    elif shape == "sparse":
        raw = [(k * 10**9,) for k in draw(st.sets(st.integers(0, 10**6), max_size=300))]
    elif shape == "text":
        raw = [(t,) for t in draw(st.sets(st.text("abcé\u00ff ", max_size=6), max_size=300))]
    else:
        raw = list(draw(st.sets(st.tuples(st.integers(0, 20), st.text("xyz", max_size=3)), max_size=300)))
    primary: dict[Key, object] = {k: draw(st.integers(0, 5)) for k in sorted(raw)}
    standby: dict[Key, object] = dict(primary)
    expected: set[tuple[Key, str]] = set()
    ordered = sorted(primary)
    for key in draw(st.lists(st.sampled_from(ordered), max_size=5, unique=True)) if ordered else []:
        action = draw(st.sampled_from(["delete", "update", "keep"]))
        if action == "delete":
            del standby[key]
            expected.add((key, "missing_on_standby"))
        elif action == "update":
            standby[key] = ("changed", standby[key])
            expected.add((key, "changed"))
    extra = raw[0] if raw else (1,)
    for n in range(draw(st.integers(0, 3))):
        key = (*extra[:-1], f"new{n}") if isinstance(extra[-1], str) else (*extra[:-1], 10**13 + n)
        if key not in primary:
            standby[key] = "extra"
            expected.add((key, "missing_on_primary"))
    return primary, standby, expected


def physical(rows: dict[Key, object], seed: int | None) -> dict[Key, object]:
    """The same rows in another heap order (updates moved them), or as they are."""
    if seed is None:
        return rows
    items = list(rows.items())
    random.Random(seed).shuffle(items)
    return dict(items)


@settings(max_examples=200, deadline=None)
@given(pair=table_pair(), chunk=st.integers(1, 400), fanout=st.integers(2, 9), threshold=st.integers(1, 40),
       reverse=st.booleans(), hashed=st.booleans(), moved=st.one_of(st.none(), st.integers(0, 99)),
       fetch=st.sampled_from([1, 10, 50_000]), salted=st.booleans())
async def test_walk_finds_exactly_the_differences(pair: tuple[dict[Key, object], dict[Key, object],
                                                              set[tuple[Key, str]]],
                                                  chunk: int, fanout: int, threshold: int, reverse: bool,
                                                  hashed: bool, moved: int | None, fetch: int, salted: bool) -> None:
    """For any key shape (dense, sparse, text, composite), mutations, pacing and heap order, both scans
    report each changed, missing or extra row once; a standby that orders keys differently (another
    collation, which always gets the hashed scan) or hashes them differently (equal keys in different
    classes) changes nothing."""
    primary, standby, expected = pair
    order: Callable[[Key], Any] = (lambda k: tuple(_flip(v) for v in k)) if reverse else (lambda k: k)
    ints_only = all(len(k) == 1 and isinstance(k[0], int) for k in (*primary, *standby))
    ordered = not hashed and not reverse and ints_only  # the catalog's claim; rows may still be out of place
    left = MemorySide(primary, ordered=ordered)
    right = MemorySide(physical(standby, moved), order=order, ordered=ordered, salt="other" if salted else "")
    stats = await walk(left, right, pacing=keys(chunk_rows=chunk, fanout=fanout, row_threshold=threshold,
                                                  fetch_rows=fetch), sleep=no_sleep)
    found = [(d.key, d.kind) for d in stats.diffs]
    assert sorted(found, key=repr) == sorted(expected, key=repr)
    assert stats.mode == ("ordered" if ordered else "hashed")
    assert stats.rows_primary == len(primary)
    assert stats.rows_standby == len(standby)


class CountingSide(MemorySide):
    """Counts the walks over the key's index (``cuts``) and the block probes inside slices."""

    index_walks = 0
    block_probes = 0

    async def cuts(self, bounds: Bounds, every: int) -> list[Key]:
        self.index_walks += 1
        return await super().cuts(bounds, every)

    async def block_keys(self, blocks: list[int], bounds: Bounds) -> list[Key | None]:
        self.block_probes += 1
        return await super().block_keys(blocks, bounds)


def moved_to_end(rows: dict[Key, object], keys: list[Key]) -> dict[Key, object]:
    """The heap after updates of ``keys``: those rows now sit at its end."""
    out = {k: v for k, v in rows.items() if k not in keys}
    out.update((k, rows[k]) for k in keys if k in rows)
    return out


@settings(max_examples=40, deadline=None)
@given(moves=st.tuples(st.lists(st.integers(0, 1999), max_size=30), st.lists(st.integers(0, 1999), max_size=30)),
       changed=st.lists(st.integers(0, 1999), min_size=1, max_size=6, unique=True), fanout=st.integers(2, 16),
       threshold=st.integers(8, 200))
async def test_a_differing_slice_is_cut_by_its_blocks_with_strays_on_both_sides(
        moves: tuple[list[int], list[int]], changed: list[int], fanout: int, threshold: int) -> None:
    """Inside a differing slice of the ordered scan, pieces are cut at keys found in the slice's own
    blocks and summed over blocks like the top level; rows moved to the heap's end on either side
    (strays, at both levels) are still counted once."""
    primary = {(k,): k for k in range(2000)}
    standby = dict(primary)
    for k in changed:
        standby[(k,)] = -k - 1
    left = CountingSide(moved_to_end(primary, [(k,) for k in moves[0]]), ordered=True)
    right = CountingSide(moved_to_end(standby, [(k,) for k in moves[1]]), ordered=True)
    stats = await walk(left, right, pacing=keys(chunk_rows=800, fanout=fanout, row_threshold=threshold),
                       sleep=no_sleep)
    assert sorted(d.key for d in stats.diffs) == sorted((k,) for k in changed)
    assert {d.kind for d in stats.diffs} == {"changed"} and stats.mode == "ordered"
    assert stats.rows_primary == stats.rows_standby == 2000


async def test_a_differing_slice_is_not_cut_by_walking_the_index() -> None:
    """The descent reads the slice's blocks (a probe per piece), never the key's index, while pieces
    span blocks; only the last, small pieces are fetched by key."""
    primary = {(k,): k for k in range(4000)}
    standby = {**primary, (1234,): -1, (3999,): -2}
    left, right = CountingSide(primary), CountingSide(standby)
    stats = await walk(left, right, pacing=keys(chunk_rows=4000, fanout=4, row_threshold=16), sleep=no_sleep)
    assert sorted(d.key for d in stats.diffs) == [(1234,), (3999,)]
    assert left.index_walks + right.index_walks == 0
    assert left.block_probes + right.block_probes >= 4


def _flip(value: object) -> object:
    """Another server's key order: text reversed, numbers negated (ranges then hold other rows)."""
    return value[::-1] if isinstance(value, str) else -value if isinstance(value, int) else value


@pytest.mark.parametrize("ordered", [True, False])
async def test_swapped_values_between_two_rows_are_two_changes(ordered: bool) -> None:
    """Two rows that exchanged a value are both found: the row hash is summed, never XOR-ed linearly."""
    primary = ints({k: k * 10 for k in range(1, 1001)})
    standby = dict(primary)
    standby[(10,)], standby[(20,)] = primary[(20,)], primary[(10,)]
    stats = await walk(MemorySide(primary, ordered=ordered), MemorySide(standby, ordered=ordered),
                       pacing=keys(chunk_rows=100), sleep=no_sleep)
    assert stats.diffs == [RowDiff((10,), "changed"), RowDiff((20,), "changed")]


async def test_identical_tables_are_read_once_per_side() -> None:
    """Equal tables are proven by one pass over each heap: no descent, no row fetched, in either scan."""
    rows = ints(dict.fromkeys(range(10000), "v"))
    ordered = await walk(MemorySide(rows), MemorySide(rows), pacing=keys(chunk_rows=2500, slices_per_chunk=1),
                         sleep=no_sleep)
    assert ordered.mode == "ordered" and ordered.diffs == [] and ordered.bisected_ranges == 0
    assert ordered.queries == 2 + 3 + 2 * 4  # layouts, sample + block starts, 4 slices a side
    left, right = MemorySide(rows, ordered=False), MemorySide(rows, ordered=False)
    hashed = await walk(left, right, pacing=keys(chunk_rows=100_000), sleep=no_sleep)
    assert hashed.mode == "hashed" and hashed.diffs == [] and hashed.bisected_ranges == 0
    assert left.calls == right.calls == 1


async def test_sparse_keys_cost_what_dense_keys_cost() -> None:
    """Keys 1e9 apart are cut by the data: the same number of chunks and queries as dense keys."""
    dense = ints(dict.fromkeys(range(5000), "v"))
    sparse = {(k[0] * 10**9,): v for k, v in dense.items()}
    for ordered in (True, False):
        runs = []
        for rows in (dense, sparse):
            standby = dict(rows)
            first = next(iter(rows))
            standby[first] = "changed"
            runs.append(await walk(MemorySide(rows, ordered=ordered), MemorySide(standby, ordered=ordered),
                                   pacing=keys(chunk_rows=500), sleep=no_sleep))
        assert runs[0].chunks == runs[1].chunks <= 12
        assert runs[0].queries == runs[1].queries and len(runs[1].diffs) == 1


async def test_many_differences_split_classes_before_fetching_rows() -> None:
    """When the differing hash classes hold more rows than ``fetch_rows``, they are split first, and
    only rows of the differing finer classes are fetched."""
    primary = ints(dict.fromkeys(range(20000), "v"))
    standby = {k: ("x" if k[0] % 1000 == 0 else v) for k, v in primary.items()}
    left, right = MemorySide(primary, ordered=False), MemorySide(standby, ordered=False)
    stats = await walk(left, right, pacing=keys(chunk_rows=100_000, fetch_rows=1000), sleep=no_sleep)
    assert sorted(d.key for d in stats.diffs) == [(k,) for k in range(0, 20000, 1000)]
    assert left.calls == 3  # classes, finer classes within the differing ones, rows


async def test_pause_between_chunks_goes_through_the_injected_sleep() -> None:
    """Pacing rests ``pause`` seconds between chunks on each side (never after the last) via the injected sleep."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    rows = ints(dict.fromkeys(range(100), 1))
    await walk(MemorySide(rows), MemorySide(rows), pacing=keys(chunk_rows=25, pause=0.5, slices_per_chunk=1),
               sleep=record)
    assert slept == [0.5] * 6
    slept.clear()
    await walk(MemorySide(rows, ordered=False), MemorySide(rows, ordered=False),
               pacing=keys(chunk_rows=25, pause=0.5), sleep=record)
    assert slept and set(slept) == {0.5}


async def test_rows_newer_than_the_watermark_are_in_flight() -> None:
    """A primary row updated after the watermark is in flight; a row only on the standby never is."""
    primary = ints({1: "a", 2: "b-new", 3: "c"})
    standby = ints({1: "a", 2: "b", 4: "d"})
    stats = await walk(MemorySide(primary, {(1,): 10.0, (2,): 200.0, (3,): 300.0}), MemorySide(standby),
                       pacing=keys(), watermark=100.0, sleep=no_sleep)
    assert stats.diffs == [RowDiff((2,), "changed", True), RowDiff((3,), "missing_on_standby", True),
                           RowDiff((4,), "missing_on_primary", False)]


def test_scan_mode_block_ranges_and_classes() -> None:
    """Key slices only when both sides lay an integer key out in order and can read block ranges; slice
    block ranges rise and cover the heap; classes are a power of two of about CLASS_ROWS rows."""
    inorder, shuffled = Layout(1e6, 8000, True, True), Layout(1e6, 8000, True, False)
    assert scan_mode(inorder, inorder) == "ordered"
    assert scan_mode(inorder, shuffled) == scan_mode(shuffled, shuffled) == "hashed"
    assert scan_mode(inorder, Layout(1e6, 8000, False, True)) == "hashed"
    assert slice_blocks([10, 5, None], 40) == [Blocks(0, 10), Blocks(10, 10), Blocks(10, 40), Blocks(40, None)]
    # inside a differing slice: pieces stay within its blocks (a start elsewhere is clamped), cover them
    assert sub_blocks(Blocks(10, 20), [12, 3, 25, None], 40) == [
        Blocks(10, 12), Blocks(12, 12), Blocks(12, 20), Blocks(20, 20), Blocks(20, 20)]
    assert sub_blocks(Blocks(30, None), [35], 40) == [Blocks(30, 35), Blocks(35, None)]
    assert block_picks(Blocks(10, 20), 40, 4) == [12, 15, 17] and block_picks(Blocks(30, None), 40, 2) == [35]
    assert block_picks(Blocks(10, 11), 40, 32) == []  # one block: nothing to cut by
    assert class_count(0) == 1 and class_count(CLASS_ROWS * 3) == 4 and class_count(1e12) == 1 << 20


def test_block_chunks_follow_the_budget_and_end_open() -> None:
    """Chunks start at about chunk_rows rows, halve after a slow one, and the last is open-ended; a server
    without block ranges is read whole."""
    chunks = BlockChunks(Layout(1000.0, 100, True, False), 100, budget=1.0)
    first = chunks.next()
    chunks.finished(5.0)
    rest = []
    while (blocks := chunks.next()) is not None:
        rest.append(blocks)
    assert first == Blocks(0, 10) and rest[0] == Blocks(10, 15) and rest[-1].end is None
    assert [b.start for b in rest] == sorted(b.start for b in rest)
    old = BlockChunks(Layout(1000.0, 100, False, False), 100, budget=1.0)
    assert old.next() == Blocks(whole=True) and old.next() is None


async def test_empty_tables_compare_equal_at_once() -> None:
    """Two empty tables need only the layouts and one pass each."""
    stats = await walk(MemorySide({}), MemorySide({}), pacing=keys(), sleep=no_sleep)
    assert stats.diffs == [] and stats.queries == 4


def test_ranges_cover_every_key_once() -> None:
    """Chunk ranges are open at both ends and a split covers its range exactly."""
    assert chunk_bounds([(5,), (9,)]) == [Bounds(None, (5,)), Bounds((5,), (9,)), Bounds((9,), None)]
    assert split(Bounds((1,), (9,)), [(3,), (6,)]) == [Bounds((1,), (3,)), Bounds((3,), (6,)), Bounds((6,), (9,))]


def test_classify_kinds() -> None:
    """Missing on either side or changed, in key order; equal rows are not reported."""
    left = {(1,): RowState(1), (2,): RowState(2), (3,): RowState(3)}
    right = {(2,): RowState(2), (3,): RowState(30), (4,): RowState(4)}
    assert classify(left, right) == [RowDiff((1,), "missing_on_standby"), RowDiff((3,), "changed"),
                                     RowDiff((4,), "missing_on_primary")]


def test_rows_fetched_in_different_ranges_are_matched_by_key() -> None:
    """A row each side put in another range is equal once matched by key: no false difference."""
    left, right = merge_rows([({("a",): RowState(1)}, {}), ({}, {("a",): RowState(1)})])
    assert classify(left, right) == []


def test_keys_in_json_and_text() -> None:
    """Integer keys stay numbers in JSON, composite keys become lists; humans read tuples."""
    import uuid

    assert key_json((42,)) == 42
    assert key_json((1, "x")) == [1, "x"]
    assert key_json((uuid.UUID(int=1),)) == "00000000-0000-0000-0000-000000000001"
    assert key_text((42,)) == "42" and key_text((1, "x")) == "(1, 'x')"
    assert RowDiff((1, "x"), "changed").to_dict() == {"key": [1, "x"], "kind": "changed", "in_flight": False}


@pytest.mark.parametrize(("size", "elapsed", "expected"), [
    (1000, 5.0, 500), (1000, 1.0, 1000), (1000, 0.1, 2000), (4000, 0.1, 4000), (20, 5.0, 16)])
def test_chunk_size_follows_the_budget(size: int, elapsed: float, expected: int) -> None:
    """Slower than the 2 s budget halves the chunk; much faster doubles it, within bounds."""
    assert next_chunk_size(size, elapsed, 2.0, smallest=16, largest=4000) == expected


async def test_descent_is_paced_and_keeps_only_a_bounded_number_of_rows() -> None:
    """Each descent step rests ``pause``; with ``keep`` only that many rows stay in memory, all are counted."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    primary = ints(dict.fromkeys(range(1000), 1))
    standby = ints({k: (2 if k % 100 == 0 else 1) for k in range(1000)} | {5000: 1})
    stats = await walk(MemorySide(primary), MemorySide(standby),
                       pacing=keys(chunk_rows=10_000, pause=0.25, row_threshold=50), sleep=record, keep=3)
    assert (stats.real_count, stats.standby_only_count, len(stats.diffs)) == (11, 1, 3)
    assert [d.key for d in stats.diffs] == [(0,), (100,), (200,)]
    assert len(slept) >= stats.bisected_ranges > 1 and set(slept) == {0.25}


def test_rows_only_on_the_standby_are_in_flight_until_the_standby_is_proven_caught_up() -> None:
    """Not caught up: a row only on the standby (its delete may be on the way) moves to in flight."""
    stats = WalkStats()
    stats.add([RowDiff((1,), "changed"), RowDiff((2,), "missing_on_primary"),
               RowDiff((3,), "missing_on_standby", True)])
    not_caught_up(stats)
    assert stats.diffs == [RowDiff((1,), "changed"), RowDiff((2,), "missing_on_primary", True),
                           RowDiff((3,), "missing_on_standby", True)]
    assert (stats.real_count, stats.in_flight_count) == (1, 2)


def test_without_replication_nothing_is_in_flight() -> None:
    """Replication absent: rows the watermark called in flight are real differences."""
    stats = WalkStats()
    stats.add([RowDiff((1,), "changed", True), RowDiff((2,), "missing_on_primary")])
    all_real(stats)
    assert [d.in_flight for d in stats.diffs] == [False, False]
    assert (stats.real_count, stats.in_flight_count, stats.standby_only_count) == (2, 0, 1)

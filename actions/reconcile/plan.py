"""Pure planning for reconciliation: key ranges cut by the data, which ones to descend, how rows differ.

No I/O here. A *key* is a tuple of column values (one element for a single-column key), in the
order of the table's key columns. Ranges never do arithmetic on keys: a range is ``lo < key <= hi``
between two keys that exist in the data (``None`` = unbounded), so dense, sparse, skewed, uuid,
text and composite keys all cost the same per row. Cut points come from the data itself (sampled
quantiles at the top, every n-th key inside a range when descending).

A *digest* of a range is ``(count, sum of a per-row 64-bit hash)`` computed inside the database.
Summing a non-linear hash (not XOR-ing a CRC) is what makes two rows that swapped values visible:
CRC is affine over GF(2), so XOR of CRCs cancels such a swap; a sum of independent hashes does not.
Equal digests are taken as equal ranges (a miss needs a 2^-64 coincidence).

The two servers may order keys differently (e.g. text under two collations). Ranges cut at keys
``c1 < ... < cn`` (one side's order) still *cover* every row of the other side: a key is in the
first range whose upper end is >= it. They may overlap there (a row counted in two ranges), never
miss a row, and a range holding a row the other side lacks has a different digest, so every
differing row is fetched from at least one side. :func:`merge_rows` matches fetched rows by key
across every range, and a key fetched on one side only is then read by key on the other side
(it may sit in a range whose digests matched there) before classifying.
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["missing_on_standby", "missing_on_primary", "changed"]
Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Bounds:
    """Keys ``lo < key <= hi``; ``None`` is unbounded on that end."""

    lo: Key | None = None
    hi: Key | None = None


@dataclass(frozen=True, slots=True)
class Digest:
    """Count and hash sum of a range."""

    count: int
    total: int


EMPTY = Digest(0, 0)


@dataclass(frozen=True, slots=True)
class RowState:
    """One row as fetched for classification: its hash and (optionally) its update time in epoch s."""

    hash: int
    updated_at: float | None = None


def key_json(key: Key) -> Any:
    """A key for JSON: a single column as its value (ints stay ints), a composite one as a list."""
    values = [_value_json(v) for v in key]
    return values[0] if len(values) == 1 else values


def _value_json(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, decimal.Decimal | uuid.UUID | datetime.date | datetime.time | datetime.timedelta):
        return value.isoformat() if isinstance(value, datetime.date | datetime.time) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def key_text(key: Key) -> str:
    """A key for humans: ``42``, ``abc``, ``(1, 'x')``."""
    shown = key_json(key)
    return str(shown) if len(key) == 1 else "(" + ", ".join(repr(v) if isinstance(v, str) else str(v)
                                                            for v in shown) + ")"


@dataclass(frozen=True, slots=True)
class RowDiff:
    """One differing row. ``in_flight``: newer than the lag watermark, so maybe not replicated yet.
    ``cause`` (after a failover only): lost, after_promotion or diverged (see ``after_failover``)."""

    key: Key
    kind: Kind
    in_flight: bool = False
    cause: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"key": key_json(self.key), "kind": self.kind, "in_flight": self.in_flight}
        if self.cause is not None:
            out["cause"] = self.cause
        return out


def sort_keys(keys: Iterable[Key]) -> list[Key]:
    """Keys in a stable order for listings (Python order; falls back to text when types do not compare)."""
    items = list(keys)
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)


def chunk_bounds(cuts: list[Key]) -> list[Bounds]:
    """``(-inf, c1], (c1, c2], ..., (cn, +inf)``: every key falls in exactly one range."""
    edges: list[Key | None] = [None, *cuts, None]
    return [Bounds(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def split(bounds: Bounds, cuts: list[Key]) -> list[Bounds]:
    """``bounds`` cut at ``cuts`` (keys strictly inside it, ascending): the pieces cover it exactly."""
    edges: list[Key | None] = [bounds.lo, *cuts, bounds.hi]
    return [Bounds(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def classify(primary: Mapping[Key, RowState], standby: Mapping[Key, RowState],
             watermark: float | None = None) -> list[RowDiff]:
    """Rows missing on either side or changed, in key order.

    With a ``watermark`` (epoch seconds), a row whose primary version was updated after it is
    *in flight* (replication may simply not have delivered it yet); a row only on the standby is
    always reported here (a delete carries no timestamp; the runner's recheck handles it).
    """
    diffs = []
    for key in sort_keys(set(primary) | set(standby)):
        left, right = primary.get(key), standby.get(key)
        if left is not None and right is not None and left.hash == right.hash:
            continue
        kind: Kind = ("missing_on_standby" if right is None else "missing_on_primary" if left is None
                      else "changed")
        fresh = (watermark is not None and left is not None and left.updated_at is not None
                 and left.updated_at > watermark)
        diffs.append(RowDiff(key, kind, fresh))
    return diffs


def merge_rows(fetched: Iterable[tuple[Mapping[Key, RowState], Mapping[Key, RowState]]],
               ) -> tuple[dict[Key, RowState], dict[Key, RowState]]:
    """The rows fetched from every differing range, matched by key across ranges (module docstring)."""
    left: dict[Key, RowState] = {}
    right: dict[Key, RowState] = {}
    for a, b in fetched:
        left.update(a)
        right.update(b)
    return left, right


def fetch_rows_now(rows: int, row_threshold: int) -> bool:
    """Fetch the rows of a range when few enough; otherwise cut it again."""
    return rows <= row_threshold


def next_chunk_size(size: int, elapsed: float, budget: float, *, smallest: int, largest: int) -> int:
    """Pacing: halve the chunk after one slower than ``budget``, grow it back after fast ones."""
    if elapsed > budget:
        return max(smallest, size // 2)
    if elapsed < budget / 4:
        return min(largest, size * 2)
    return size


# The top-level scan (see :mod:`actions.reconcile.bisect`) ----------------------------------------

ScanMode = Literal["mirrored", "ordered", "hashed"]
ORDERED = 0.9          # a key whose values follow the heap order this closely is scanned in key slices
CLASS_ROWS = 1024      # rows per hash class wanted at the first level of the hashed scan
MAX_CLASSES = 1 << 20
MAX_SLICES = 128       # ordered scan: slices at most (larger tables get larger slices)
REFINE = 64            # a differing class is split into this many finer ones
BLOCK_ROWS_GUESS = 50  # rows per block when the table was never analyzed
PROBES = 32            # mirrored scan: blocks compared on both sides before taking the heaps as laid out alike
PROBE_ALIGNED = 0.9    # ... and take them as alike when this share of the probed rows sit in the same block
MAX_MIRROR_RANGES = 1 << 16  # mirrored scan: top-level block ranges at most (digests held in memory)


@dataclass(frozen=True, slots=True)
class Layout:
    """One side's table as the planner sees it: size, and whether its key follows the heap order."""

    rows: float        # estimated rows now
    blocks: int        # heap blocks now
    tid_ranges: bool   # the server can read a range of blocks alone (TID range scan, PostgreSQL >= 14)
    ordered: bool      # one integer key column whose values follow the heap order (correlation >= ORDERED)

    @property
    def rows_per_block(self) -> float:
        return self.rows / self.blocks if self.rows > 0 and self.blocks > 0 else float(BLOCK_ROWS_GUESS)


@dataclass(frozen=True, slots=True)
class Blocks:
    """Heap blocks ``start <= block < end`` of one side (``end`` None: to the end of the table, blocks
    added meanwhile included; ``whole``: the server cannot read block ranges, the table is read at once)."""

    start: int = 0
    end: int | None = None
    whole: bool = False


def scan_mode(a: Layout, b: Layout) -> ScanMode:
    """Pure: key slices when both sides lay their integer key out in order, else hash classes."""
    return "ordered" if a.ordered and b.ordered and a.tid_ranges and b.tid_ranges else "hashed"


def mirror_possible(a: Layout, b: Layout) -> bool:
    """Pure: both servers can read block ranges of one heap each (not a partitioned table)."""
    return a.tid_ranges and b.tid_ranges


def probe_blocks(a: Layout, b: Layout) -> list[int]:
    """Pure: :data:`PROBES` blocks evenly spread over the heap both sides have, to compare before the
    mirrored scan."""
    common = min(a.blocks, b.blocks)
    return block_picks(Blocks(0, common), common, PROBES + 1)


def heaps_alike(ours: list[list[int]], theirs: list[list[int]]) -> bool:
    """Pure: the probed blocks' key hashes on each side (one list per block): at least
    :data:`PROBE_ALIGNED` of the rows found there sit in the same block on the other side. Rows
    that differ in value, or that an update moved, leave the rest of their block in place; a heap
    rewritten in another order (``VACUUM FULL``, ``CLUSTER``, a reload) shares almost none."""
    found = same = 0
    for mine, other in zip(ours, theirs, strict=True):
        left = Counter(other)
        for key in mine:
            same += left[key] > 0
            left[key] -= 1
        found += max(len(mine), len(other))
    return found == 0 or same >= PROBE_ALIGNED * found


def mirror_ranges(blocks: int, rows: float, rows_per_range: int) -> list[Blocks]:
    """Pure: the mirrored scan's top-level block ranges, the same on both sides (``blocks``: the
    larger heap): about ``rows_per_range`` rows each, increasing, covering every block once, the
    last open-ended (blocks added meanwhile included)."""
    count = max(1, math.ceil(max(rows, 0.0) / max(1, rows_per_range)))
    step = max(1, math.ceil(blocks / count))
    starts = list(range(0, blocks, step)) or [0]
    return [Blocks(s, s + step) for s in starts[:-1]] + [Blocks(starts[-1], None)]


def mirror_plan(blocks: int, rows: float, chunk_rows: int, per_chunk: int, row_threshold: int,
                ) -> tuple[list[Blocks], int]:
    """Pure: the mirrored scan's top-level ranges and how many go in one round trip. A range holds about
    ``row_threshold / 2`` rows (at most :data:`MAX_MIRROR_RANGES` ranges), so a differing one is
    fetched at once, with no second pass over it; a round trip reads as many rows as one of the
    ordered scan (``per_chunk`` slices of :func:`slice_rows` rows)."""
    range_rows = max(1, row_threshold // 2, math.ceil(max(rows, 0.0) / MAX_MIRROR_RANGES))
    trip_rows = max(1, per_chunk) * slice_rows(rows, chunk_rows, per_chunk)
    return mirror_ranges(blocks, rows, range_rows), max(1, trip_rows // range_rows)


def mirror_gives_up(differing_rows: int, rows: int, fetch_rows: int) -> bool:
    """Pure: the mirrored scan's top level found more than half of the rows (and more than
    ``fetch_rows``) in ranges that differ: the heaps are not laid out alike after all, or the
    differences are everywhere, which the hashed scan narrows down with fewer rows fetched."""
    return differing_rows > max(fetch_rows, rows // 2)


def mirror_cuts(ranges: list[tuple[bool, int]], row_threshold: int, fetch_rows: int) -> list[bool]:
    """Pure: which differing block ranges (can it be cut, rows) the mirrored scan cuts again rather
    than fetch: one holding more than ``row_threshold`` rows, or every one while they hold more than
    ``fetch_rows`` in all (a pass over their blocks is cheaper than fetching their rows)."""
    crowded = sum(rows for _, rows in ranges) > fetch_rows
    return [cuttable and (crowded or rows > row_threshold) for cuttable, rows in ranges]


def slice_rows(rows: float, chunk_rows: int, per_chunk: int) -> int:
    """Pure: rows per key slice of the ordered scan: ``chunk_rows / per_chunk``, but at most
    :data:`MAX_SLICES` slices (every slice boundary costs about half a block of strays)."""
    return max(1, chunk_rows // max(1, per_chunk), math.ceil(max(rows, 0.0) / MAX_SLICES))


def class_count(rows: float, per_class: int = CLASS_ROWS) -> int:
    """Pure: hash classes for a table of ``rows`` rows: a power of two, about ``per_class`` rows each."""
    wanted = max(1, math.ceil(max(rows, 0.0) / max(1, per_class)))
    return min(MAX_CLASSES, 1 << (wanted - 1).bit_length())


def slice_blocks(starts: list[int | None], blocks: int) -> list[Blocks]:
    """Pure: one side's block range per key slice. ``starts[j]`` is the block holding the first key of
    slice ``j + 1`` (None: no such key). The ranges are made increasing and cover every block once;
    a row outside its slice's range is a *stray*, attributed to its slice by key (still exact)."""
    return sub_blocks(Blocks(0, None), starts, blocks)


def sub_blocks(blocks: Blocks, starts: list[int | None], table_blocks: int) -> list[Blocks]:
    """Pure: ``blocks`` (one side's part of a differing slice) cut where each sub-slice starts
    (``starts``: the block holding the first key after each cut, anywhere in the table; None: none).
    The pieces are increasing, stay inside ``blocks`` and cover it exactly; a row of a sub-slice
    outside its piece is a stray there, attributed by key like at the top level."""
    stop = table_blocks if blocks.end is None else blocks.end
    edges = [blocks.start]
    for start in starts:
        edges.append(max(edges[-1], stop if start is None else min(max(start, blocks.start), stop)))
    return [Blocks(edges[i], edges[i + 1]) for i in range(len(edges) - 1)] + [Blocks(edges[-1], blocks.end)]


def block_picks(blocks: Blocks, table_blocks: int, pieces: int) -> list[int]:
    """Pure: ``pieces - 1`` blocks evenly spread inside ``blocks`` (after its first), ascending, unique:
    the keys found there cut a differing slice by the data, about equally by rows."""
    end = table_blocks if blocks.end is None else blocks.end
    span = end - blocks.start
    return sorted({blocks.start + span * j // pieces for j in range(1, pieces)} - {blocks.start}) if span > 1 else []


class BlockChunks:
    """One side's paced walk over its heap in block ranges: about ``chunk_rows`` rows per chunk at
    first, halved after a chunk slower than ``budget`` and doubled (up to 8x) after fast ones. The
    last chunk is open-ended. Without block ranges the whole table is one chunk."""

    def __init__(self, layout: Layout, chunk_rows: int, budget: float) -> None:
        self.layout = layout
        self.size = max(1, int(chunk_rows / layout.rows_per_block))
        self.largest = self.size * 8
        self.budget = budget
        self.next_block = 0
        self.done = False

    def next(self) -> Blocks | None:
        if self.done:
            return None
        if not self.layout.tid_ranges:
            self.done = True
            return Blocks(whole=True)
        start = self.next_block
        self.next_block = start + self.size
        if self.next_block >= self.layout.blocks:
            self.done = True
            return Blocks(start, None)
        return Blocks(start, self.next_block)

    def finished(self, elapsed: float) -> None:
        self.size = next_chunk_size(self.size, elapsed, self.budget, smallest=1, largest=self.largest)


def differing(ours: Mapping[Any, Digest], theirs: Mapping[Any, Digest]) -> list[Any]:
    """Pure: the buckets whose digests differ (a bucket missing on one side is empty there)."""
    return sorted(k for k in set(ours) | set(theirs) if ours.get(k, EMPTY) != theirs.get(k, EMPTY))


def add_digest(into: dict[Any, Digest], bucket: Any, count: int, total: int) -> None:
    """Accumulate one chunk's digest of a bucket."""
    old = into.get(bucket, EMPTY)
    into[bucket] = Digest(old.count + count, old.total + total)

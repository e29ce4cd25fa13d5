"""Pure planning for reconciliation: key ranges, which ones to bisect, and how rows differ.

No I/O here. A *digest* of a key range is ``(count, sum of a per-row 64-bit hash)`` computed inside
the database. Summing a non-linear hash (not XOR-ing a CRC) is what makes two rows that swapped
values visible: CRC is affine over GF(2), so XOR of CRCs cancels such a swap; a sum of independent
hashes does not. Equal digests are taken as equal ranges (a miss needs a 2^-64 coincidence).

The walk: split ``[lo, hi)`` into chunks (:class:`ChunkPlan`); a chunk whose digests differ is split
into ``fanout`` buckets, recursively, until a bucket holds few enough rows to fetch ``(key, hash)``
pairs and classify them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["missing_on_standby", "missing_on_primary", "changed"]


@dataclass(frozen=True, slots=True, order=True)
class KeyRange:
    """Keys ``lo <= k < hi``."""

    lo: int
    hi: int

    @property
    def span(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True, slots=True)
class Digest:
    """Count and hash sum of a key range."""

    count: int
    total: int


EMPTY = Digest(0, 0)


@dataclass(frozen=True, slots=True)
class RowState:
    """One row as fetched for classification: its hash and (optionally) its update time in epoch s."""

    hash: int
    updated_at: float | None = None


@dataclass(frozen=True, slots=True)
class RowDiff:
    """One differing row. ``in_flight``: newer than the lag watermark, so maybe not replicated yet."""

    key: int
    kind: Kind
    in_flight: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "in_flight": self.in_flight}


def chunk_ranges(lo: int, hi: int, size: int) -> list[KeyRange]:
    """``[lo, hi)`` cut into consecutive ranges of at most ``size`` keys."""
    if size <= 0:
        raise ValueError("size must be > 0")
    return [KeyRange(a, min(a + size, hi)) for a in range(lo, hi, size)]


def bucket_width(key_range: KeyRange, fanout: int) -> int:
    """Width of each of (at most) ``fanout`` buckets covering the range; at least 1."""
    return max(1, -(-key_range.span // fanout))


def differing_buckets(key_range: KeyRange, width: int, primary: Mapping[int, Digest],
                      standby: Mapping[int, Digest]) -> list[tuple[KeyRange, int]]:
    """Buckets (by index ``(k - lo) // width``) whose digests differ, with the larger row count."""
    out = []
    for index in sorted(set(primary) | set(standby)):
        left, right = primary.get(index, EMPTY), standby.get(index, EMPTY)
        if left != right:
            lo = key_range.lo + index * width
            out.append((KeyRange(lo, min(lo + width, key_range.hi)), max(left.count, right.count)))
    return out


def fetch_rows_now(key_range: KeyRange, rows: int, row_threshold: int, fanout: int) -> bool:
    """Fetch rows when few enough, or when the range cannot be split any further usefully."""
    return rows <= row_threshold or key_range.span <= fanout


def classify(primary: Mapping[int, RowState], standby: Mapping[int, RowState],
             watermark: float | None = None) -> list[RowDiff]:
    """Rows missing on either side or changed, in key order.

    With a ``watermark`` (epoch seconds), a row whose primary version was updated after it is
    *in flight* (replication may simply not have delivered it yet); a row only on the standby is
    always reported (a delete carries no timestamp).
    """
    diffs = []
    for key in sorted(set(primary) | set(standby)):
        left, right = primary.get(key), standby.get(key)
        if left is not None and right is not None and left.hash == right.hash:
            continue
        kind: Kind = ("missing_on_standby" if right is None else "missing_on_primary" if left is None
                      else "changed")
        fresh = (watermark is not None and left is not None and left.updated_at is not None
                 and left.updated_at > watermark)
        diffs.append(RowDiff(key, kind, fresh))
    return diffs


def next_chunk_size(size: int, elapsed: float, budget: float, *, smallest: int, largest: int) -> int:
    """Pacing: halve the chunk after one slower than ``budget``, grow it back after fast ones."""
    if elapsed > budget:
        return max(smallest, size // 2)
    if elapsed < budget / 4:
        return min(largest, size * 2)
    return size


class ChunkPlan:
    """Chunk boundaries shared by the two sides, decided lazily so each side can scan at its own pace.

    Chunk ``i`` is fixed the first time either side asks for it, with the size pacing chose from the
    latest finished chunk (:func:`next_chunk_size`), so both sides always digest identical ranges.
    A side that finds a chunk empty reports where its next key is (:meth:`no_keys_until`); when both
    sides are known to have no keys ahead, the next chunk starts after the gap (sparse keys).
    """

    SIDES = ("primary", "standby")

    def __init__(self, lo: int, hi: int, *, size: int, budget: float, smallest: int | None = None) -> None:
        self.hi = hi
        self.size = max(1, size)
        self.largest = self.size
        self.smallest = max(1, smallest if smallest is not None else self.size // 64)
        self.budget = budget
        self.ranges: list[KeyRange] = []
        self._next = lo
        self._empty: dict[str, tuple[int, int]] = {}

    def get(self, index: int) -> KeyRange | None:
        """Chunk ``index``, or None past the end."""
        while len(self.ranges) <= index:
            start = self._next
            marks = [self._empty.get(side) for side in self.SIDES]
            if all(m is not None and m[0] <= start < m[1] for m in marks):
                start = min(m[1] for m in marks if m is not None)
            if start >= self.hi:
                self._next = self.hi
                return None
            end = min(self.hi, start + self.size)
            self.ranges.append(KeyRange(start, end))
            self._next = end
        return self.ranges[index]

    def finished(self, elapsed: float) -> None:
        """A side finished a chunk in ``elapsed`` seconds: adapt the size of chunks not yet fixed."""
        self.size = next_chunk_size(self.size, elapsed, self.budget, smallest=self.smallest, largest=self.largest)

    def no_keys_until(self, side: str, start: int, next_key: int | None) -> None:
        """``side`` holds no key in ``[start, next_key)`` (``next_key`` None: none up to the end)."""
        self._empty[side] = (start, self.hi if next_key is None else next_key)

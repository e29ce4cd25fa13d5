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
import uuid
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


class ChunkPlan:
    """Chunks over the sampled cut points, decided lazily and shared by the two sides.

    ``cuts`` are keys in ascending order, about ``rows_per_slice`` rows apart; a chunk is ``size``
    consecutive slices, digested in one round trip that returns one digest *per slice* (so a
    difference is already narrowed to one slice). Chunk ``i`` is fixed the first time either side
    asks for it, with the size pacing chose from the latest finished chunk, so both sides always
    digest identical ranges. The first slice is unbounded below and the last one above: rows added
    after sampling are covered.
    """

    def __init__(self, cuts: list[Key], *, size: int, budget: float) -> None:
        self.cuts = cuts
        self.size = max(1, size)
        self.largest = self.size
        self.budget = budget
        self.ranges: list[list[Bounds]] = []
        self._next = 0  # index into the edges [None, *cuts, None]
        self._done = False

    def _edge(self, index: int) -> Key | None:
        return None if index == 0 or index > len(self.cuts) else self.cuts[index - 1]

    def get(self, index: int) -> list[Bounds] | None:
        """The slices of chunk ``index``, or None past the end."""
        while len(self.ranges) <= index:
            if self._done:
                return None
            start = self._next
            end = min(start + self.size, len(self.cuts) + 1)
            self.ranges.append([Bounds(self._edge(i), self._edge(i + 1)) for i in range(start, end)])
            self._next = end
            self._done = end > len(self.cuts)
        return self.ranges[index]

    @property
    def slices(self) -> list[Bounds]:
        """Every slice fixed so far, in order."""
        return [b for chunk in self.ranges for b in chunk]

    def finished(self, elapsed: float) -> None:
        """A side finished a chunk in ``elapsed`` seconds: adapt the size of chunks not yet fixed."""
        self.size = next_chunk_size(self.size, elapsed, self.budget, smallest=1, largest=self.largest)

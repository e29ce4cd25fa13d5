"""What the reconciliation walk asks of one table on one server (:class:`Side`), how hard it may
push (:class:`Pacing`) and what it reports (:class:`WalkStats`).

:class:`Side` is answered in SQL by :class:`actions.reconcile.pg_side.PgSide` and in memory by the
unit tests. The scans using it: :mod:`actions.reconcile.bisect` (ordered and hashed, by key) and
:mod:`actions.reconcile.mirror` (mirrored, by block).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from actions.reconcile.plan import Blocks, Bounds, Digest, Key, Layout, RowDiff, RowState, ScanMode


class Side(Protocol):
    """One table on one server."""

    async def layout(self) -> Layout:
        """Size, and whether block ranges can be read and the key follows the heap order."""
        ...

    async def block_starts(self, cuts: list[Key]) -> list[int | None]:
        """(ordered) The block holding the first key after each cut; None when there is none."""
        ...

    async def slice_scans(self, slices: list[tuple[Blocks, Bounds]]) -> list[tuple[Digest, list[tuple[Key, int]]]]:
        """(ordered) Per slice: digest of the rows of its blocks inside its bounds; the others as (key, hash)."""
        ...

    async def block_keys(self, blocks: list[int], bounds: Bounds) -> list[Key | None]:
        """(ordered) The least key within ``bounds`` in each of these blocks; None where there is none."""
        ...

    async def class_digests(self, blocks: Blocks, classes: int, within: tuple[int, list[int]] | None = None,
                            ) -> dict[int, Digest]:
        """(hashed) Count and hash sum per key-hash class, over ``blocks`` (only rows of coarser
        classes ``within[1]`` of ``within[0]`` classes when given)."""
        ...

    async def class_rows(self, blocks: Blocks, classes: int, wanted: list[int]) -> dict[Key, RowState]:
        """(hashed) Every row of ``blocks`` in the wanted classes."""
        ...

    async def block_digests(self, ranges: list[Blocks]) -> list[Digest]:
        """(mirrored) Count and hash sum of the rows of each block range, in one round trip."""
        ...

    async def block_rows(self, ranges: list[Blocks]) -> dict[Key, RowState]:
        """(mirrored) Every row of these block ranges, with its hash (and update time), in one round trip."""
        ...

    async def block_key_hashes(self, blocks: list[int]) -> list[list[int]]:
        """(mirrored) The key hash of every row of each of these blocks, in one round trip."""
        ...

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
    row_threshold: int = 4096  # a slice of 128k rows cut 32 ways is fetched after one cut
    slices_per_chunk: int = 8  # ordered scan: slices of chunk_rows / 8 rows
    fetch_rows: int = 50_000   # hashed scan: differing classes holding more rows than this are split first
    mirror: bool = True        # compare two heaps laid out alike block by block (actions.reconcile.mirror)


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
    mode: ScanMode | None = None

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
MAX_DEPTH = 8  # a range still too big after this many cuts (rows moving meanwhile) is fetched whole
Fetched = list[tuple[dict[Key, RowState], dict[Key, RowState]]]

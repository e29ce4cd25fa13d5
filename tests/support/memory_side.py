"""An in-memory table answering the reconciliation walk's questions like
:class:`actions.reconcile.pg_side.PgSide`: the same digests the SQL computes (count + sum of a
64-bit non-linear row hash), block numbers from a heap order, so the walk is tested without a
database."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from actions.reconcile.plan import Blocks, Bounds, Digest, Key, Layout, RowState


def row_hash(key: Key, value: object) -> int:
    digest = hashlib.blake2b(repr((key, value)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


ROWS_PER_BLOCK = 4


def key_hash(key: Key, salt: str = "") -> int:
    return int.from_bytes(hashlib.blake2b((salt + repr(key)).encode(), digest_size=8).digest(), "big", signed=True)


class MemorySide:
    """A table in a dict keyed by tuples, answering like :class:`actions.reconcile.pg_side.PgSide`.

    The heap order is ``heap`` (None: a hole a delete left) or the dict's order (:data:`ROWS_PER_BLOCK`
    slots per block); ``order`` is this
    server's key order (two servers may collate differently); ``ordered`` is what the catalog would
    say about the key following the heap order (default: one integer column, heap in key order)."""

    def __init__(self, rows: Mapping[Key, object], updated: dict[Key, float] | None = None, *,
                 order: Callable[[Key], Any] = lambda k: k, ordered: bool | None = None, salt: str = "",
                 heap: list[Key | None] | None = None) -> None:
        self.data = dict(rows)
        self.heap = list(self.data) if heap is None else heap  # None: a dead tuple's slot (a delete leaves a hole)
        assert sorted(map(repr, (k for k in self.heap if k is not None))) == sorted(map(repr, self.data)), \
            "the heap holds every row once"
        self.salt = salt  # another server hashing keys otherwise (a nondeterministic collation on one side)
        self.updated = updated or {}
        self.order = order
        keys = [k for k in self.heap if k is not None]
        self.ordered = (bool(keys) and all(len(k) == 1 and isinstance(k[0], int) for k in keys)
                        and keys == sorted(keys, key=order)) if ordered is None else ordered
        self.calls = 0

    def _inside(self, key: Key, r: Bounds) -> bool:
        o = self.order
        return (r.lo is None or o(key) > o(r.lo)) and (r.hi is None or o(key) <= o(r.hi))

    def _keys(self, r: Bounds) -> list[Key]:
        self.calls += 1
        return sorted((k for k in self.data if self._inside(k, r)), key=self.order)

    def _blocks(self, blocks: Blocks) -> list[Key]:
        self.calls += 1
        if blocks.whole:
            return list(self.data)
        return [k for i, k in enumerate(self.heap) if k is not None and i // ROWS_PER_BLOCK >= blocks.start
                and (blocks.end is None or i // ROWS_PER_BLOCK < blocks.end)]

    def _state(self, key: Key) -> RowState:
        return RowState(row_hash(key, self.data[key]), self.updated.get(key))

    async def layout(self) -> Layout:
        return Layout(float(len(self.data)), -(-len(self.heap) // ROWS_PER_BLOCK), True, self.ordered)

    async def sample_cuts(self, rows_per_slice: int) -> list[Key]:
        ordered = sorted(self.data, key=self.order)
        return ordered[rows_per_slice - 1:-1:rows_per_slice] if len(ordered) >= 2 * rows_per_slice else []

    async def block_starts(self, cuts: list[Key]) -> list[int | None]:
        position = {k: i for i, k in enumerate(self.heap) if k is not None}
        out: list[int | None] = []
        for cut in cuts:
            after = [k for k in self.data if self.order(k) > self.order(cut)]
            out.append(position[min(after, key=self.order)] // ROWS_PER_BLOCK if after else None)
        return out

    async def block_keys(self, blocks: list[int], bounds: Bounds) -> list[Key | None]:
        out: list[Key | None] = []
        for block in blocks:
            inside = [k for k in self._blocks(Blocks(block, block + 1)) if self._inside(k, bounds)]
            out.append(min(inside, key=self.order) if inside else None)
        return out

    async def slice_scans(self, slices: list[tuple[Blocks, Bounds]]) -> list[tuple[Digest, list[tuple[Key, int]]]]:
        out = []
        for blocks, bounds in slices:
            keys = self._blocks(blocks)
            inside = [k for k in keys if self._inside(k, bounds)]
            strays = [(k, row_hash(k, self.data[k])) for k in keys if not self._inside(k, bounds)]
            out.append((self._digest(inside), strays))
        return out

    async def class_digests(self, blocks: Blocks, classes: int, within: tuple[int, list[int]] | None = None,
                            ) -> dict[int, Digest]:
        out: dict[int, Digest] = {}
        for k in self._blocks(blocks):
            h = key_hash(k, self.salt)
            if within is None or h & (within[0] - 1) in within[1]:
                old = out.get(h & (classes - 1), Digest(0, 0))
                out[h & (classes - 1)] = Digest(old.count + 1, old.total + row_hash(k, self.data[k]))
        return out

    async def class_rows(self, blocks: Blocks, classes: int, wanted: list[int]) -> dict[Key, RowState]:
        return {k: self._state(k) for k in self._blocks(blocks) if key_hash(k, self.salt) & (classes - 1) in wanted}

    def _digest(self, keys: list[Key]) -> Digest:
        return Digest(len(keys), sum(row_hash(k, self.data[k]) for k in keys))

    async def block_digests(self, ranges: list[Blocks]) -> list[Digest]:
        return [self._digest(self._blocks(blocks)) for blocks in ranges]

    async def block_rows(self, ranges: list[Blocks]) -> dict[Key, RowState]:
        return {k: self._state(k) for blocks in ranges for k in self._blocks(blocks)}

    async def block_key_hashes(self, blocks: list[int]) -> list[list[int]]:
        return [[key_hash(k, self.salt) for k in self._blocks(Blocks(b, b + 1))] for b in blocks]

    async def cuts(self, bounds: Bounds, every: int) -> list[Key]:
        return self._keys(bounds)[every - 1::every]

    async def digests(self, ranges: list[Bounds]) -> list[Digest]:
        return [self._digest(self._keys(r)) for r in ranges]

    async def rows(self, r: Bounds) -> dict[Key, RowState]:
        return {k: self._state(k) for k in self._keys(r)}

    async def rows_for(self, keys: list[Key]) -> dict[Key, RowState]:
        return {k: self._state(k) for k in keys if k in self.data}


def ints(rows: Mapping[int, object]) -> dict[Key, object]:
    return {(k,): v for k, v in rows.items()}


async def no_sleep(_seconds: float) -> None:
    return None

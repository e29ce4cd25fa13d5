"""A :class:`~actions.reconcile.bisect.Side` backed by PostgreSQL: digests computed in the database.

Ranges are row-value comparisons on the key columns, ``(k1, k2) > (lo1, lo2) AND (k1, k2) <= (hi1,
hi2)``, which a btree index on the key answers as a range scan for any type and any number of
columns. Key values travel as ints (integer columns) or text, cast back with the column's own type
(``%s::uuid``, ``%s::timestamp with time zone``), so nothing is lost in the round trip (the session
runs under :data:`~actions.reconcile.shape.CANONICAL_SETTINGS`).

Top-level cut points are sampled quantiles: ``TABLESAMPLE SYSTEM`` reads about two blocks per
wanted slice, and every n-th sampled key (in the server's key order) becomes a cut; the row
estimate comes from ``pg_class`` scaled to the table's current size. Inside a differing range the
cuts are exact: every n-th key, numbered in one walk over the key's index (``row_number() OVER
(ORDER BY key)`` on the range). Which row hash: :mod:`actions.reconcile.shape`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from actions.reconcile.plan import BLOCK_ROWS_GUESS, ORDERED, Blocks, Bounds, Digest, Key, Layout, RowState
from actions.reconcile.shape import CANONICAL_SETTINGS, HashMode, TableShape, key_expr, key_hash, row_hash
from probes.postgres_conn import fetch

BLOCKS_PER_SLICE = 2
LAST_BLOCK = 4294967295  # past any block: an open-ended range as a parameter
RANGES = "unnest(%s::bigint[], %s::bigint[])"  # block ranges (start, end) as rows u(lo, hi)
IN_RANGE = "ctid >= ('(' || u.lo || ',0)')::tid AND ctid < ('(' || u.hi || ',0)')::tid"  # a TID range scan
SIZE = """
SELECT c.reltuples, c.relpages, pg_relation_size(c.oid) / current_setting('block_size')::int
FROM pg_class c WHERE c.oid = %s::regclass
"""
LAYOUT = """
SELECT c.relkind::text, c.relhassubclass, c.reltuples, c.relpages,
       pg_relation_size(c.oid) / current_setting('block_size')::int,
       current_setting('server_version_num')::int >= 140000,
       (SELECT s.correlation FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname
        AND s.attname = %s AND NOT s.inherited),
       (WITH RECURSIVE tree(oid) AS (SELECT c.oid UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree t
        ON i.inhparent = t.oid) SELECT ARRAY[sum(greatest(k.reltuples, 0)), sum(pg_relation_size(k.oid))
        / current_setting('block_size')::int] FROM tree JOIN pg_class k ON k.oid = tree.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s::regclass
"""


async def server_major(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT current_setting('server_version_num')::int / 10000")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def hash_mode(major_a: int, major_b: int, forced: str = "auto") -> HashMode:
    """Pure: native hashes only between equal majors that have ``hash_record_extended`` (>= 14)."""
    if forced in ("native", "portable"):
        return forced  # type: ignore[return-value]
    return "native" if major_a == major_b and major_a >= 14 else "portable"


def sample_percent(reltuples: float, relpages: int, blocks: int, rows_per_slice: int) -> tuple[int, float]:
    """Pure: (slices wanted, TABLESAMPLE percent) for a table of ``blocks`` blocks; (0, 0) when one
    chunk will do. ``reltuples`` < 0 (never analyzed) is guessed at 50 rows per block."""
    if blocks <= 0:
        return 0, 0.0
    per_block = reltuples / relpages if reltuples > 0 and relpages > 0 else 50.0
    slices = int(per_block * blocks / max(1, rows_per_slice))
    if slices < 2:
        return 0, 0.0
    return slices, min(100.0, 100.0 * BLOCKS_PER_SLICE * slices / blocks)


class PgSide:
    """One table on one server, over one open connection (canonical settings applied by :meth:`prepare`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], shape: TableShape, mode: HashMode,
                 updated_at: str | None, *, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.shape = shape
        self.t = sql.Identifier(*shape.name.split("."))
        self.cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in shape.key)
        # aliased: an output named like the column would make ``ORDER BY col`` sort by the text form
        self.keysel = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(key_expr(c, sql.Identifier(c.name)), sql.Identifier(f"reconcile_k{i}_"))
            for i, c in enumerate(shape.key))
        self.h = row_hash(shape, mode)
        self.kh = key_hash(shape, mode)
        self.ts = (sql.SQL("extract(epoch FROM {})::float8").format(sql.Identifier(updated_at)) if updated_at
                   else sql.SQL("NULL::float8"))
        self.width = len(shape.key)

    @staticmethod
    async def prepare(conn: psycopg.AsyncConnection[Any]) -> None:
        """The canonical settings, and no sort where a hash aggregate will do: the planner cannot know that
        ``kh & (classes - 1)`` has few values and would sort a chunk on disk to group it.

        No server-side prepared statements: psycopg prepares a statement once it has run five times, and the
        generic plan PostgreSQL then keeps ran the chunk scans ~20% slower per row than a plan made
        for each batch's own block numbers (10M rows: 3.68 s vs 2.76 s of backend CPU for the same
        slices; planning 16 batches costs a few ms)."""
        conn.prepare_threshold = None
        for statement in (*CANONICAL_SETTINGS, "SET enable_sort = off"):
            await conn.execute(statement)

    @staticmethod
    async def release(conn: psycopg.AsyncConnection[Any]) -> None:
        """Back to the server's planner settings (before queries that are not ours, e.g. business metrics)."""
        await conn.execute("RESET enable_sort")

    # SQL building ---------------------------------------------------------------------------------
    def _key_params(self, key: Key) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(c.type)) for c in self.shape.key)

    def _where(self, bounds: Bounds, params: list[Any]) -> sql.Composable:
        lhs = sql.SQL("({})").format(self.cols)
        parts: list[sql.Composable] = []
        for op, key in ((">", bounds.lo), ("<=", bounds.hi)):
            if key is not None:
                parts.append(sql.SQL("{} {} ({})").format(lhs, sql.SQL(op), self._key_params(key)))
                params.extend(key)
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def _in_keys(self, keys: list[Key], params: list[Any]) -> sql.Composable:
        arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(c.type)) for c in self.shape.key)
        for index in range(self.width):
            params.append([k[index] for k in keys])
        return sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(self.cols, arrays)

    def _key(self, row: tuple[Any, ...]) -> Key:
        return tuple(row[: self.width])

    async def _rows(self, statement: sql.Composable, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await fetch(self.conn, statement, params, deadline=self.deadline)

    @staticmethod
    def _blocks(blocks: Blocks, params: list[Any]) -> sql.Composable:
        """A TID range (PostgreSQL >= 14 reads just those blocks), or the whole table (block numbers as
        parameters; each batch is planned for its own values, see :meth:`prepare`)."""
        if blocks.whole:
            return sql.SQL("true")
        params += [f"({blocks.start},0)", f"({LAST_BLOCK if blocks.end is None else blocks.end},0)"]
        return sql.SQL("ctid >= %s::tid AND ctid < %s::tid")

    # the Side protocol ----------------------------------------------------------------------------
    async def layout(self) -> Layout:
        """Size and shape; a partitioned table or one with inheritance children is one relation of
        many heaps: read whole (block numbers mean nothing across heaps), rows summed over the tree."""
        lead = self.shape.key[0]
        ((kind, children, reltuples, relpages, blocks, tid_ranges, correlation, tree_rows),) = await self._rows(
            sql.SQL(LAYOUT), (lead.name, self.shape.name))
        if kind == "p" or children:
            rows, pages = (float(v or 0) for v in tree_rows)  # never analyzed: guessed from the heaps' size
            return Layout(rows if rows > 0 else pages * BLOCK_ROWS_GUESS, 0, False, False)
        per_block = float(reltuples) / int(relpages) if float(reltuples) > 0 and int(relpages) > 0 else None
        ordered = (self.width == 1 and lead.is_int and correlation is not None and float(correlation) >= ORDERED)
        rows = (per_block if per_block is not None else float(BLOCK_ROWS_GUESS)) * int(blocks)
        return Layout(rows, int(blocks), bool(tid_ranges), ordered)

    async def block_starts(self, cuts: list[Key]) -> list[int | None]:
        """Ordered scan: the block holding the first key after each cut (integer keys only)."""
        if not cuts:
            return []
        statement = sql.SQL(
            "SELECT (SELECT (t.ctid::text::point)[0]::bigint FROM {t} t WHERE t.{k} > u.c ORDER BY t.{k} LIMIT 1) "
            "FROM unnest(%s::{type}[]) WITH ORDINALITY AS u(c, o) ORDER BY u.o").format(
            t=self.t, k=sql.Identifier(self.shape.key[0].name), type=sql.SQL(self.shape.key[0].type))
        rows = await self._rows(statement, [[c[0] for c in cuts]])
        return [None if r[0] is None else int(r[0]) for r in rows]

    async def block_keys(self, blocks: list[int], bounds: Bounds) -> list[Key | None]:
        """Ordered scan, inside a differing slice: the least key within ``bounds`` in each of these
        blocks (None: none there), one TID range scan of one block each. ``min(k + 0)`` and the bounds
        in a FILTER, so the planner has no index path: it would answer a plain min, or a narrow key
        range, by walking the key's index up to the block (100 ms a probe on 1M rows instead of 0.1)."""
        if not blocks:
            return []
        params: list[Any] = []
        inside = self._where(bounds, params)
        statement = sql.SQL(
            "SELECT (SELECT min({k} + 0) FILTER (WHERE {inside}) FROM {t} WHERE ctid >= ('(' || u.b || ',0)')::tid "
            "AND ctid < ('(' || u.b + 1 || ',0)')::tid) "
            "FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(b, o) ORDER BY u.o").format(
            k=sql.Identifier(self.shape.key[0].name), t=self.t, inside=inside)
        rows = await self._rows(statement, [*params, blocks])
        return [None if r[0] is None else (int(r[0]),) for r in rows]

    async def slice_scans(self, slices: list[tuple[Blocks, Bounds]]) -> list[tuple[Digest, list[tuple[Key, int]]]]:
        """Ordered scan, one round trip: per slice, the digest of the rows of its blocks inside its bounds,
        and every other row of those blocks (a stray: moved by an update) as (key, hash). The server sums
        every row of the blocks and lists the strays; their part is taken out here (one test per row)."""
        params: list[Any] = []
        parts = []
        for index, (blocks, bounds) in enumerate(slices):
            inside = self._where(bounds, params)  # parameters in the order of the text: FILTER, then WHERE
            where = self._blocks(blocks, params)
            parts.append(sql.SQL(
                "(SELECT {i}::int, count(*), coalesce(sum({h}), 0), array_agg(ARRAY[{k}::bigint, {h}]) "
                "FILTER (WHERE NOT ({inside})) FROM {t} WHERE {blocks})").format(
                i=sql.Literal(index), inside=inside, k=sql.Identifier(self.shape.key[0].name), h=self.h, t=self.t,
                blocks=where))
        out: dict[int, tuple[Digest, list[tuple[Key, int]]]] = {}
        for i, count, total, pairs in await self._rows(sql.SQL(" UNION ALL ").join(parts), params):
            strays = [((int(k),), int(h)) for k, h in pairs or []]
            out[int(i)] = (Digest(int(count) - len(strays), int(total) - sum(h for _, h in strays)), strays)
        return [out[i] for i in range(len(slices))]

    async def block_digests(self, ranges: list[Blocks]) -> list[Digest]:
        """Mirrored scan, one round trip: count and hash sum of the rows of each block range. One plan
        for any number of ranges (a TID range scan per range, its bounds from the outer row): a
        ``UNION ALL`` of one branch per range costs ~0.15 ms of planning per branch (10M rows in 1,024
        ranges: +0.1 s of backend CPU), this costs the same for 4,096 ranges as for 128."""
        if not ranges:
            return []
        statement = sql.SQL(
            "SELECT u.i, s.n, s.total FROM " + RANGES + " WITH ORDINALITY AS u(lo, hi, i), LATERAL (SELECT count(*) "
            "AS n, coalesce(sum({h}), 0) AS total FROM {t} WHERE " + IN_RANGE + ") s ORDER BY u.i").format(
            h=self.h, t=self.t)
        rows = await self._rows(statement, self._tid_ranges(ranges))
        found = {int(i) - 1: Digest(int(n), int(total)) for i, n, total in rows}
        return [found[i] for i in range(len(ranges))]

    @staticmethod
    def _tid_ranges(ranges: list[Blocks]) -> list[list[int]]:
        """Parameters for :data:`RANGES`: each range's first and past-the-end block (numbers, not ``tid``
        text: escaping thousands of strings for an array cost ~0.15 s of client CPU on 10M rows)."""
        return [[b.start for b in ranges], [LAST_BLOCK if b.end is None else b.end for b in ranges]]

    async def block_rows(self, ranges: list[Blocks]) -> dict[Key, RowState]:
        """Mirrored scan: every row of these block ranges with its hash and update time, one round trip
        (``OFFSET 0`` keeps the subquery a TID range scan per range: pulled up into a join, the planner
        read the whole table)."""
        if not ranges:
            return {}
        statement = sql.SQL(
            "SELECT s.* FROM " + RANGES + " AS u(lo, hi), LATERAL (SELECT {keysel}, {h}, {ts} FROM {t} WHERE "
            + IN_RANGE + " OFFSET 0) s").format(keysel=self.keysel, h=self.h, ts=self.ts, t=self.t)
        return {self._key(r): RowState(int(r[-2]), None if r[-1] is None else float(r[-1]))
                for r in await self._rows(statement, self._tid_ranges(ranges))}

    async def block_key_hashes(self, blocks: list[int]) -> list[list[int]]:
        """Mirrored scan's probe: the key hash of every row of each of these blocks, one round trip."""
        if not blocks:
            return []
        statement = sql.SQL(
            "SELECT u.i, s.kh FROM " + RANGES + " WITH ORDINALITY AS u(lo, hi, i), LATERAL (SELECT {kh} AS kh "
            "FROM {t} WHERE " + IN_RANGE + " OFFSET 0) s").format(kh=self.kh, t=self.t)
        out: list[list[int]] = [[] for _ in blocks]
        for i, kh in await self._rows(statement, self._tid_ranges([Blocks(b, b + 1) for b in blocks])):
            out[int(i) - 1].append(int(kh))
        return out

    async def class_digests(self, blocks: Blocks, classes: int, within: tuple[int, list[int]] | None = None,
                            ) -> dict[int, Digest]:
        """Hashed scan: count and hash sum per hash class of the key (``kh & (classes - 1)``), over the rows
        of ``blocks``; with ``within`` (coarser classes, wanted ones) only rows of those coarser classes."""
        params: list[Any] = [classes - 1]
        where = [self._blocks(blocks, params)]
        if within is not None:
            where.append(sql.SQL("({kh} & %s) = ANY(%s::bigint[])").format(kh=self.kh))
            params += [within[0] - 1, within[1]]
        statement = sql.SQL("SELECT ({kh} & %s)::bigint, count(*), sum({h}) FROM {t} WHERE {where} GROUP BY 1").format(
            kh=self.kh, h=self.h, t=self.t, where=sql.SQL(" AND ").join(where))
        return {int(c): Digest(int(n), int(s)) for c, n, s in await self._rows(statement, params)}

    async def class_rows(self, blocks: Blocks, classes: int, wanted: list[int]) -> dict[Key, RowState]:
        """Hashed scan: every row of ``blocks`` in the wanted hash classes, with its hash and update time."""
        params: list[Any] = []
        statement = sql.SQL("SELECT {keysel}, {h}, {ts} FROM {t} WHERE {blocks} AND ({kh} & %s) = ANY(%s::bigint[])"
                            ).format(keysel=self.keysel, h=self.h, ts=self.ts, t=self.t,
                                     blocks=self._blocks(blocks, params), kh=self.kh)
        return {self._key(r): RowState(int(r[-2]), None if r[-1] is None else float(r[-1]))
                for r in await self._rows(statement, [*params, classes - 1, wanted])}

    async def sample_cuts(self, rows_per_slice: int) -> list[Key]:
        ((reltuples, relpages, blocks),) = await self._rows(sql.SQL(SIZE), (self.shape.name,))
        slices, percent = sample_percent(float(reltuples), int(relpages), int(blocks), rows_per_slice)
        if slices == 0:
            return []
        statement = sql.SQL(
            "SELECT {keysel} FROM (SELECT {cols}, row_number() OVER (ORDER BY {cols}) AS reconcile_rn_, "
            "count(*) OVER () AS reconcile_n_ FROM {t} TABLESAMPLE SYSTEM (%s::real)) s "
            "WHERE mod(reconcile_rn_, greatest(1, reconcile_n_ / %s::bigint)) = 0 ORDER BY reconcile_rn_").format(
            keysel=self.keysel, cols=self.cols, t=self.t)
        return [self._key(r) for r in await self._rows(statement, (percent, slices))]

    async def cuts(self, bounds: Bounds, every: int, limit: int = 64) -> list[Key]:
        """Every ``every``-th key inside ``bounds`` (at most ``limit``), in one walk over the key's index."""
        params: list[Any] = []
        where = self._where(bounds, params)
        statement = sql.SQL(
            "SELECT {keysel} FROM (SELECT {cols}, row_number() OVER (ORDER BY {cols}) AS reconcile_rn_ FROM {t} "
            "WHERE {where} ORDER BY {cols} LIMIT %s) s WHERE reconcile_rn_ %% %s = 0 ORDER BY reconcile_rn_").format(
            keysel=self.keysel, cols=self.cols, t=self.t, where=where)
        return [self._key(r) for r in await self._rows(statement, [*params, every * limit, every])]

    async def digests(self, ranges: list[Bounds]) -> list[Digest]:
        params: list[Any] = []
        parts = [sql.SQL("SELECT {i}::int, count(*), coalesce(sum({h}), 0) FROM {t} WHERE {where}").format(
            i=sql.Literal(i), h=self.h, t=self.t, where=self._where(b, params)) for i, b in enumerate(ranges)]
        rows = await self._rows(sql.SQL(" UNION ALL ").join(parts), params)
        found = {int(i): Digest(int(c), int(s)) for i, c, s in rows}
        return [found.get(i, Digest(0, 0)) for i in range(len(ranges))]

    async def rows(self, bounds: Bounds) -> dict[Key, RowState]:
        params: list[Any] = []
        statement = sql.SQL("SELECT {keysel}, {h}, {ts} FROM {t} WHERE {where}").format(
            keysel=self.keysel, h=self.h, ts=self.ts, t=self.t, where=self._where(bounds, params))
        return {self._key(r): RowState(int(r[-2]), None if r[-1] is None else float(r[-1]))
                for r in await self._rows(statement, params)}

    async def rows_for(self, keys: list[Key]) -> dict[Key, RowState]:
        """The rows (hash and update time) of exactly these keys (for the in-flight recheck)."""
        if not keys:
            return {}
        params: list[Any] = []
        statement = sql.SQL("SELECT {keysel}, {h}, {ts} FROM {t} WHERE {cond}").format(
            keysel=self.keysel, h=self.h, ts=self.ts, t=self.t, cond=self._in_keys(keys, params))
        return {self._key(r): RowState(int(r[-2]), None if r[-1] is None else float(r[-1]))
                for r in await self._rows(statement, params)}

    async def texts(self, keys: list[Key]) -> dict[Key, str]:
        """The rows' text forms (compared columns), for showing differences to a human."""
        if not keys:
            return {}
        params: list[Any] = []
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in self.shape.columns)
        statement = sql.SQL("SELECT {keysel}, ROW({cols})::text FROM {t} WHERE {cond}").format(
            keysel=self.keysel, cols=cols, t=self.t, cond=self._in_keys(keys, params))
        return {self._key(r): str(r[-1]) for r in await self._rows(statement, params)}

    async def flags(self, keys: list[Key], expression: sql.Composable, params: list[Any]) -> dict[Key, Any]:
        """One value per key (e.g. "written after promotion"), computed by ``expression`` on each row."""
        if not keys:
            return {}
        where_params: list[Any] = []
        cond = self._in_keys(keys, where_params)
        statement = sql.SQL("SELECT {keysel}, {e} FROM {t} WHERE {cond}").format(
            keysel=self.keysel, e=expression, t=self.t, cond=cond)
        return {self._key(r): r[-1] for r in await self._rows(statement, [*params, *where_params])}

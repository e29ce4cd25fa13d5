"""Benchmark: reconciliation between two real PostgreSQL 15 clusters, per key shape and at scale.

Two clusters (``tests.support.postgres``); each table is generated on the primary
(``generate_series``) and copied to the standby as a logical replica's first copy is (``COPY`` of
the table, in its heap order); keys built after the load, ``VACUUM ANALYZE``; then 3 differences
are made on the standby: a row updated, a row deleted, a row inserted. Measured in the same run, warm cache,
both servers queried at the same time by each method:

- ``seconds``: our reconciliation to the full classified result (every run must find exactly the
  3), the median of three runs interleaved with the native scan's (``best_seconds``: the fastest;
  ``scan``: which top-level scan it chose: ``mirrored``, block by block, on heaps laid out alike);
- ``by_key``: the same figures with ``reconcile.scan: keys`` (``ordered`` or ``hashed`` scan): what
  a table whose two heaps drifted apart gets (after the probe that finds it out, a few ms);
- ``native_scan_seconds``: the bare floor, best of three, one ``count(*), sum(row hash)`` scan of each side with the
  same native row hash the reconciliation computes (``shape.row_hash``), nothing else;
- ``reladiff_seconds``: reladiff (``pip install -e '.[bench]'``) diffing the same table pair, all
  columns, its defaults (bisection factor 32, threshold 16384).

``--shapes`` (default): 1M rows per side for each key shape: ``dense`` (bigint 1..N), ``gaps``
(bigint, ~1e9 apart), ``uuid``, ``text`` (32 hex characters, ``COLLATE "C"``), ``composite``
(int, bigint). One JSON line: per shape found/planted, seconds, reladiff seconds and the ratios.
``--rows N`` (no ``--shapes``): the dense table only, N rows (e.g. 10,000,000), one JSON line.
Usage: ``python bench/reconcile.py [--shapes] [--rows N] [--skip-reladiff]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from actions.reconcile import reconcile
from actions.reconcile.shape import inspect_table, row_hash
from engine.config.database import DatabaseConfig
from tests.support.postgres import PgCluster, PgPair, start_pair

DB = "bench"
RUNS = 3
PAYLOAD = ("account", "amount", "note", "updated_at")
PAYLOAD_SQL = ("(g % 10007)::int AS account, ((g * 7919) % 1000000) / 100.0 AS amount, "
               "CASE WHEN g % 5 = 0 THEN NULL ELSE 'order ' || g END AS note, "
               "'2024-01-01 00:00:00+00'::timestamptz + make_interval(secs => g) AS updated_at")
PAYLOAD_DDL = "account int NOT NULL, amount numeric(12,2) NOT NULL, note text, updated_at timestamptz NOT NULL"
# shape -> (key DDL, key expression(s) over g, key columns)
SHAPES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "dense": ("id bigint NOT NULL", "g AS id", ("id",)),
    "gaps": ("id bigint NOT NULL", "g * 1000000007 + (g * 7919) % 1000 AS id", ("id",)),
    "uuid": ("id uuid NOT NULL", "md5(g::text)::uuid AS id", ("id",)),
    "text": ('code text COLLATE "C" NOT NULL', "md5(g::text || 'k') AS code", ("code",)),
    "composite": ("tenant int NOT NULL, seq bigint NOT NULL", "(g % 100)::int AS tenant, g / 100 AS seq",
                  ("tenant", "seq")),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load(pair: PgPair, shape: str, rows: int) -> None:
    """The primary's table from ``generate_series``; the standby's copied from it the way a logical
    replica's first copy is made (the table sync worker's ``COPY`` of the table, in its heap order)."""
    ddl, key_sql, key = SHAPES[shape]
    with (psycopg.connect(pair.publisher.dsn(DB), autocommit=True) as primary,
          psycopg.connect(pair.subscriber.dsn(DB), autocommit=True) as standby):
        for conn in (primary, standby):
            conn.execute(f"CREATE UNLOGGED TABLE t_{shape} ({ddl}, {PAYLOAD_DDL})".encode())
            conn.execute("SET maintenance_work_mem = '512MB'")
        primary.execute(f"INSERT INTO t_{shape} SELECT {key_sql}, {PAYLOAD_SQL} "
                        f"FROM generate_series(1::bigint, {rows}) g".encode())
        with (primary.cursor().copy(f"COPY t_{shape} TO STDOUT (FORMAT binary)".encode()) as source,
              standby.cursor().copy(f"COPY t_{shape} FROM STDIN (FORMAT binary)".encode()) as target):
            for data in source:
                target.write(data)
        for conn in (primary, standby):
            conn.execute(f"ALTER TABLE t_{shape} ADD PRIMARY KEY ({', '.join(key)})".encode())
            conn.execute(f"VACUUM ANALYZE t_{shape}".encode())


def plant(pair: PgPair, shape: str, rows: int) -> None:
    """Update, delete and insert one row each on the standby."""
    _, key_sql, key = SHAPES[shape]
    cols = ", ".join(key)

    def key_of(g: int) -> str:
        return f"(SELECT {cols} FROM (SELECT {key_sql} FROM (SELECT {g}::bigint AS g) s) k)"

    standby = pair.subscriber
    standby.execute(f"UPDATE t_{shape} SET amount = amount + 1 WHERE ({cols}) = {key_of(rows // 3)}", DB)
    standby.execute(f"DELETE FROM t_{shape} WHERE ({cols}) = {key_of(rows // 2)}", DB)
    standby.execute(f"INSERT INTO t_{shape} SELECT {key_sql}, {PAYLOAD_SQL} FROM (SELECT {rows * 2 + 1}::bigint "
                    "AS g) s", DB)


async def native_scan(pair: PgPair, shape: str) -> float:
    """The floor: one ``count(*), sum(row hash)`` pass per side with the very row hash the
    reconciliation computes (:func:`actions.reconcile.shape.row_hash`), so a cheaper hash lowers both."""
    async def scan(cluster: PgCluster) -> None:
        async with await psycopg.AsyncConnection.connect(cluster.dsn(DB), autocommit=True) as conn:
            await conn.execute("SET jit = off")
            await conn.execute("SET max_parallel_workers_per_gather = 0")
            table = await inspect_table(conn, f"t_{shape}", None, "bench")
            statement = sql.SQL("SELECT count(*), sum({}) FROM {}").format(row_hash(table, "native"),
                                                                            sql.Identifier(table.name))
            await (await conn.execute(statement)).fetchone()

    started = time.perf_counter()
    await asyncio.gather(scan(pair.publisher), scan(pair.subscriber))
    return time.perf_counter() - started


async def ours(pair: PgPair, shape: str, scan: str = "auto") -> tuple[float, int, str | None]:
    site = {"host": "127.0.0.1", "dbname": DB, "user": "postgres", "sslmode": "disable"}
    config = DatabaseConfig.model_validate({
        "sites": {"gcp": {**site, "port": pair.publisher.port}, "azure": {**site, "port": pair.subscriber.port}},
        "reconcile": {"tables": [{"name": f"t_{shape}"}], "statement_timeout": "120s", "scan": scan}})
    started = time.perf_counter()
    result = await reconcile(config, service="bench", primary="gcp", now=time.time(), watermark=None)
    seconds = time.perf_counter() - started
    table = result.tables[0] if result.tables else None
    if result.error or table is None or table.status not in ("identical", "differences"):
        raise SystemExit(f"reconciliation failed: {result.sentence}")
    kinds = sorted(d.kind for d in table.differences)
    found = 3 if kinds == ["changed", "missing_on_primary", "missing_on_standby"] else 0
    log(f"ours {shape}: {result.sentence} ({table.scan} scan, {table.queries} queries, "
        f"{table.bisect_seconds:.2f} s descending)")
    return seconds, found, table.scan


def reladiff_run(pair: PgPair, shape: str) -> float | None:
    import reladiff

    key = SHAPES[shape][2]

    def table(cluster: PgCluster) -> Any:
        return reladiff.connect_to_table(f"postgresql://postgres@127.0.0.1:{cluster.port}/{DB}", f"t_{shape}",
                                         key if len(key) > 1 else key[0])

    started = time.perf_counter()
    try:
        diff = list(reladiff.diff_tables(table(pair.publisher), table(pair.subscriber), extra_columns=PAYLOAD))
    except Exception as exc:  # the reference may not support a shape: say so, do not crash
        log(f"reladiff {shape}: failed: {type(exc).__name__}: {exc}")
        return None
    seconds = time.perf_counter() - started
    log(f"reladiff {shape}: {len(diff)} diff lines in {seconds:.2f} s")
    return seconds


def measure(pair: PgPair, shape: str, rows: int, skip_reladiff: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    load(pair, shape, rows)
    log(f"{shape}: loaded {rows} rows per side in {time.perf_counter() - t0:.1f} s")
    plant(pair, shape, rows)
    scans: list[float] = []
    runs: dict[str, list[tuple[float, int, str | None]]] = {"auto": [], "keys": []}
    for _ in range(RUNS):  # interleaved: the machine's speed drifts between runs
        scans.append(asyncio.run(native_scan(pair, shape)))
        for scan_setting, done in runs.items():
            done.append(asyncio.run(ours(pair, shape, scan_setting)))
        log(f"{shape}: native scan {scans[-1]:.3f} s, ours {runs['auto'][-1][0]:.3f} s, "
            f"by key {runs['keys'][-1][0]:.3f} s")
    floor = min(scans)  # the floor at its best: ratios against it are conservative
    rd = None if skip_reladiff else reladiff_run(pair, shape)

    def figures(done: list[tuple[float, int, str | None]]) -> dict[str, Any]:
        seconds, _, method = sorted(done)[len(done) // 2]  # the median run, against reladiff's one run
        return {"found": min(r[1] for r in done), "scan": method, "seconds": round(seconds, 3),
                "best_seconds": round(min(done)[0], 3), "ratio_to_native_scan": round(seconds / floor, 2),
                "speedup_vs_reladiff": None if rd is None else round(rd / seconds, 1)}

    out = {"rows": rows, "planted": 3, **figures(runs["auto"]), "native_scan_seconds": round(floor, 3),
           "reladiff_seconds": None if rd is None else round(rd, 3), "by_key": figures(runs["keys"])}
    log(f"{shape}: {out}")
    return out  # the table stays: reladiff's sessions still hold it (they stop with the clusters)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shapes", action="store_true", help="every key shape, --rows each (default 1M)")
    parser.add_argument("--rows", type=int, default=None, help="rows per side (default 1M with --shapes, else 10M)")
    parser.add_argument("--only", nargs="*", choices=sorted(SHAPES), help="with --shapes: these shapes only")
    parser.add_argument("--skip-reladiff", action="store_true", help="(for quick runs: reports null for reladiff)")
    args = parser.parse_args()
    shapes = (args.only or list(SHAPES)) if args.shapes else ["dense"]
    rows = args.rows or (1_000_000 if args.shapes else 10_000_000)
    with start_pair() as pair:
        for cluster in (pair.publisher, pair.subscriber):
            cluster.execute(f"CREATE DATABASE {DB}")
        results = {shape: measure(pair, shape, rows, args.skip_reladiff) for shape in shapes}
    ok = all(r["found"] == r["by_key"]["found"] == r["planted"] for r in results.values())
    if args.shapes:
        print(json.dumps({"bench": "reconcile_shapes", "rows_per_side": rows, "shapes": results,
                          "all_found": ok,
                          "min_speedup_vs_reladiff": min((r["speedup_vs_reladiff"] for r in results.values()
                                                          if r["speedup_vs_reladiff"] is not None), default=None)}))
    else:
        r = results["dense"]
        print(json.dumps({"bench": "reconcile", "rows": rows, "seconds": r["seconds"],
                          "rows_per_s": round(rows / r["seconds"]), "differences_found": r["found"],
                          "reladiff_seconds": r["reladiff_seconds"], "native_scan_seconds": r["native_scan_seconds"],
                          "speedup_vs_reladiff": r["speedup_vs_reladiff"],
                          "ratio_to_native_scan": r["ratio_to_native_scan"], "scan": r["scan"],
                          "best_seconds": r["best_seconds"], "by_key": r["by_key"]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

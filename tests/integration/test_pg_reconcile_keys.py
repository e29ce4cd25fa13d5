"""Reconciliation on tables the project was not built around: every key shape, exact values, chosen columns.

Each test replicates its own schema between the module's real PostgreSQL 15 pair and plants
differences by writing on the standby (a subscriber's tables are writable) or on the primary.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from actions.reconcile import ReconcileResult, reconcile
from actions.reconcile.after_failover import read_promotion_point
from engine.config.database import DatabaseConfig
from probes.postgres_conn import connect
from tests.support.postgres import PgPair, ReplicatedDb

pytestmark = pytest.mark.real

SHAPES = """
CREATE TABLE by_uuid (id uuid PRIMARY KEY, v int NOT NULL);
CREATE TABLE by_text (code varchar(40) COLLATE "C" PRIMARY KEY, v int NOT NULL);
CREATE TABLE by_pair (region int, name text, v int NOT NULL, PRIMARY KEY (region, name));
CREATE TABLE by_numeric (n numeric PRIMARY KEY, v int NOT NULL);
CREATE TABLE by_time (at timestamptz PRIMARY KEY, v int NOT NULL);
CREATE TABLE by_gap (id bigint PRIMARY KEY, v int NOT NULL);
"""
SHAPE_ROWS = """
INSERT INTO by_uuid SELECT md5(g::text)::uuid, g FROM generate_series(1, 3000) g;
INSERT INTO by_text SELECT 'c' || g, g FROM generate_series(1, 3000) g;
INSERT INTO by_pair SELECT g % 7, 'n' || g, g FROM generate_series(1, 3000) g;
INSERT INTO by_numeric SELECT g / 8.0, g FROM generate_series(1, 3000) g;
INSERT INTO by_time SELECT '2024-01-01'::timestamptz + g * interval '1.000001 second', g
  FROM generate_series(1, 3000) g;
INSERT INTO by_gap SELECT g * 1000000007::bigint, g FROM generate_series(1, 3000) g;
"""
PLANTED = {
    "by_uuid": ("id = md5('10')::uuid", "id = md5('20')::uuid", "(md5('x')::uuid, 1)",
                "56b6a6c6-7d38-d1c0-be35-9b1bd7feb4e1"),
    "by_text": ("code = 'c10'", "code = 'c20'", "('zz', 1)", None),
    "by_pair": ("(region, name) = (3, 'n10')", "(region, name) = (6, 'n20')", "(9, 'new', 1)", None),
    "by_numeric": ("n = 1.25", "n = 2.5", "(0.001, 1)", None),
    "by_time": ("at = '2024-01-01'::timestamptz + 10 * interval '1.000001 second'",
                "at = '2024-01-01'::timestamptz + 20 * interval '1.000001 second'", "('1999-01-01', 1)", None),
    "by_gap": ("id = 10000000070", "id = 20000000140", "(1, 1)", None),
}


@pytest.fixture
def shapes_db(pg_pair: PgPair) -> Iterator[ReplicatedDb]:
    """A database with one table per key shape, replicated and caught up."""
    db = pg_pair.replicate(schema=SHAPES, tables=tuple(PLANTED))
    db.on_primary(SHAPE_ROWS)
    db.wait_caught_up()
    yield db
    db.drop()


def config_of(db: ReplicatedDb, tables: list[dict[str, Any]]) -> DatabaseConfig:
    return DatabaseConfig.model_validate(db.database_config(reconcile={"tables": tables}))


async def run(config: DatabaseConfig, **kwargs: Any) -> ReconcileResult:
    return await reconcile(config, service="api", primary="gcp", now=0.0, **kwargs)


@pytest.mark.parametrize("mode", ["native", "portable"])
async def test_every_key_shape_finds_an_update_a_delete_and_an_insert(shapes_db: ReplicatedDb, mode: str) -> None:
    """uuid, text, composite, numeric, timestamptz and sparse bigint keys, read from the catalog: 3 of 3 each."""
    for table, (updated, deleted, inserted, _) in PLANTED.items():
        shapes_db.on_standby(f"UPDATE {table} SET v = -1 WHERE {updated}")
        shapes_db.on_standby(f"DELETE FROM {table} WHERE {deleted}")
        shapes_db.on_standby(f"INSERT INTO {table} VALUES {inserted}")
    config = DatabaseConfig.model_validate(shapes_db.database_config(reconcile={
        "hash": mode, "tables": [{"name": t, "chunk_rows": 400} for t in PLANTED]}))
    result = await run(config, watermark=None)
    assert result.error is None, result.sentence
    for t in result.tables:
        assert t.status == "differences", t.reason
        kinds = sorted(d.kind for d in t.differences)
        assert kinds == ["changed", "missing_on_primary", "missing_on_standby"], (t.table, t.differences)
        assert (t.rows_primary, t.rows_standby) == (3000, 3000)
    pair = next(t for t in result.tables if t.table == "by_pair")
    assert {d.key for d in pair.differences} == {(3, "n10"), (6, "n20"), (9, "new")}
    assert pair.key == ("region", "name") and result.exit_code == 1
    gap = next(t for t in result.tables if t.table == "by_gap")
    assert gap.queries < 40  # 3000 keys a billion apart: cut by the data, not one query per key range


EXACT = """
CREATE TABLE exact (id int PRIMARY KEY, n numeric, ts timestamptz, j jsonb, b bool, t text, a int[], f float8,
                    na numeric[], note text);
"""
EXACT_ROWS = """
INSERT INTO exact SELECT g, 1.0, '2024-01-01 00:00:00+00', '{"a": 1}', true, '', '{1,2}', 0.0, '{1.0}', 'x'
FROM generate_series(1, 20) g;
"""


async def test_values_are_compared_exactly_and_null_safely(pg_pair: PgPair) -> None:
    """Numeric scale, a microsecond, a jsonb number, bool, '' vs NULL, array order and -0.0 are all differences."""
    db = pg_pair.replicate(schema=EXACT, tables=("exact",))
    try:
        db.on_primary(EXACT_ROWS)
        db.wait_caught_up()
        changes = {1: "n = 1.00", 2: "ts = ts + interval '1 microsecond'", 3: "j = '{\"a\": 1.0}'", 4: "b = false",
                   5: "t = NULL", 6: "a = '{2,1}'", 7: "f = '-0'", 8: "na = '{1.00}'", 9: "note = NULL"}
        for key, change in changes.items():
            db.on_standby(f"UPDATE exact SET {change} WHERE id = {key}")
        for mode in ("native", "portable"):
            config = DatabaseConfig.model_validate(db.database_config(reconcile={
                "hash": mode, "tables": [{"name": "exact", "exclude": ["note"]}]}))
            result = await run(config, watermark=None)
            assert [d.key for d in result.tables[0].differences] == [(k,) for k in range(1, 9)], mode
        chosen = DatabaseConfig.model_validate(db.database_config(reconcile={
            "tables": [{"name": "exact", "columns": ["note", "b"]}]}))
        result = await run(chosen, watermark=None)
        assert [d.key for d in result.tables[0].differences] == [(4,), (9,)]
    finally:
        db.drop()


TYPED = """
CREATE TABLE typed (id int PRIMARY KEY, ts timestamp, tz timestamptz NOT NULL, d date, b bool, by bytea,
                    tm time, tt timetz, ip inet, mac macaddr, c char(3), u uuid, x text, y text,
                    e smallint NOT NULL, f numeric(6,2) NOT NULL);
"""
TYPED_ROWS = """
INSERT INTO typed SELECT g, '2024-01-01 10:00', '2024-01-01 10:00+00', '2024-01-01', true, '\\x00',
  '10:00', '10:00+02', '10.0.0.1', '08:00:2b:01:02:03', 'ab', md5('u')::uuid, 'same', 'other', 1, 1.5
FROM generate_series(1, 40) g;
UPDATE typed SET ts = 'infinity', tz = '-infinity', d = 'infinity' WHERE id > 30;
"""
TYPED_CHANGES = {
    1: "ts = ts + interval '1 microsecond'", 2: "tz = tz - interval '1 microsecond'", 3: "d = d + 1",
    4: "b = false", 5: "by = '\\x0000'", 6: "tm = '10:00:00.000001'", 7: "tt = '10:00+03'",
    8: "ip = '10.0.0.1/8'", 9: "mac = '08:00:2b:01:02:04'", 10: "c = 'ab '", 11: "u = md5('v')::uuid",
    12: "(x, y) = (y, x)", 13: "x = NULL", 14: "(x, y) = ('', NULL)", 15: "ts = NULL", 16: "b = NULL",
    17: "(e, f) = (2, 1.51)", 18: "ts = '2000-01-01 00:00'", 19: "d = '-infinity'", 31: "ts = '-infinity'",
    32: "tz = 'infinity'", 33: "d = '2024-01-01'", 34: "x = NULL, y = 'same'", 20: "d = NULL",
    35: "ts = NULL", 36: "d = NULL",
}


async def keys_found(pg_pair: PgPair, schema: str, table: str, rows: str, changes: dict[int, str],
                     ) -> dict[str, list[tuple[Any, ...]]]:
    """Replicate ``schema``, load ``rows`` on the primary, apply ``changes`` (id -> SET clause) on the
    standby; the differing keys each hash mode reports."""
    db = pg_pair.replicate(schema=schema, tables=(table,))
    try:
        db.on_primary(rows)
        db.wait_caught_up()
        for key, change in changes.items():
            db.on_standby(f"UPDATE {table} SET {change} WHERE id = {key}")
        found = {}
        for mode in ("native", "portable"):
            config = DatabaseConfig.model_validate(db.database_config(reconcile={
                "hash": mode, "tables": [{"name": table}]}))
            result = await run(config, watermark=None)
            assert result.error is None and result.tables[0].status == "differences", result.sentence
            found[mode] = [d.key for d in result.tables[0].differences]
        return found
    finally:
        db.drop()


async def test_every_native_hash_step_sees_a_change_and_an_infinity(pg_pair: PgPair) -> None:
    """Each column type the row hash covers (times by their binary form, infinities and NULL included,
    bool, bytea, time, inet, char, uuid, smallint, numeric) sees a one-unit change; values swapped
    between two nullable columns, NULL vs '' and NULL in one or the other are all differences;
    unchanged rows are not. ``c = 'ab '`` in char(3) is the same value (blank-padded): row 10 is not
    a difference."""
    expected = [(k,) for k in sorted(TYPED_CHANGES) if k != 10]
    found = await keys_found(pg_pair, TYPED, "typed", TYPED_ROWS, TYPED_CHANGES)
    assert found == {"native": expected, "portable": expected}


BITS_SCHEMA = """
CREATE TABLE bits (id int PRIMARY KEY, a int NOT NULL, arr int[] NOT NULL, big bigint NOT NULL,
                   f numeric(6,2) NOT NULL, t text NOT NULL, tm time NOT NULL, ts timestamp NOT NULL);
"""
BITS_ROWS = """
INSERT INTO bits SELECT g, 1, '{}', 0, 0, 'x', '00:00', '2000-01-01 00:00' FROM generate_series(1, 30) g;
UPDATE bits SET f = 1.5 WHERE id = 4;
UPDATE bits SET (a, big) = (1, 2) WHERE id = 6;
UPDATE bits SET f = 'NaN' WHERE id = 9;
"""
BITS_CHANGES = {1: "big = 4294967297", 2: "ts = '2000-01-01 01:11:34.967297'", 3: "tm = '01:11:34.967297'",
                4: "f = -1.5", 5: "f = 'NaN'", 6: "(a, big) = (2, 1)", 7: "a = 3", 8: "f = 'NaN'", 9: "f = 0"}


async def test_the_row_hash_keeps_every_bit_of_every_value(pg_pair: PgPair) -> None:
    """Pairs PostgreSQL's own hash functions cannot tell apart: bigint 0 vs 2^32+1 and times 2^32+1
    microseconds apart (their hashes fold 64 bits to 32), 1.5 vs -1.5 and 0 vs NaN (the numeric hash
    ignores the sign and does not mix 0 or NaN), a column before an empty array (whose hash ignores
    its seed), an int and a bigint swapping values, and 0 and NaN swapped between two rows."""
    expected = [(k,) for k in sorted(BITS_CHANGES)]
    found = await keys_found(pg_pair, BITS_SCHEMA, "bits", BITS_ROWS, BITS_CHANGES)
    assert found == {"native": expected, "portable": expected}


async def test_a_wide_table_of_nullable_columns_is_hashed_in_linear_size(pg_pair: PgPair) -> None:
    """60 nullable columns: the hash expression grows by one step per column (a step that needed its seed
    twice would double it per column) and a NULL moved from one column to the next is a difference."""
    columns = ", ".join(f"c{i} int" for i in range(60))
    db = pg_pair.replicate(schema=f"CREATE TABLE wide (id int PRIMARY KEY, {columns});", tables=("wide",))
    try:
        db.on_primary("INSERT INTO wide (id, c0, c1) SELECT g, NULL, 7 FROM generate_series(1, 100) g")
        db.wait_caught_up()
        db.on_standby("UPDATE wide SET c0 = 7, c1 = NULL WHERE id = 5")
        config = DatabaseConfig.model_validate(db.database_config(reconcile={"tables": [{"name": "wide"}]}))
        result = await run(config, watermark=None)
        assert [d.key for d in result.tables[0].differences] == [(5,)], result.sentence
    finally:
        db.drop()


@pytest.mark.parametrize("scan", ["keys", "auto"])
async def test_every_scan_finds_rows_moved_by_updates_on_a_real_heap(pg_pair: PgPair, scan: str) -> None:
    """By key (``scan: keys``): an identity-keyed table laid out in key order is read in key slices over
    its heap (ordered scan), a random-keyed one in key-hash classes (hashed scan); rows an update moved
    to the end of the heap (strays) are still attributed to their slice. By default both heaps, filled
    by replication, lay rows out alike and are compared block by block (mirrored scan), the standby's
    moved rows found in the ranges they left and reached. Exactly the planted differences, every scan."""
    schema = ("CREATE TABLE seq_rows (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL);"
              "CREATE TABLE rnd_rows (id uuid PRIMARY KEY, v int NOT NULL, pad text NOT NULL);")
    db = pg_pair.replicate(schema=schema, tables=("seq_rows", "rnd_rows"))
    try:
        db.on_primary("INSERT INTO seq_rows SELECT g, g, repeat('x', 40) FROM generate_series(1, 20000) g;"
                      "INSERT INTO rnd_rows SELECT md5(g::text)::uuid, g, repeat('x', 40) "
                      "FROM generate_series(1, 20000) g")
        # rows rewritten with the same values on both sides: moved in both heaps, no difference
        db.on_primary("UPDATE seq_rows SET v = v WHERE id % 700 = 3; UPDATE rnd_rows SET v = v WHERE v % 700 = 3")
        db.wait_caught_up()
        for run_on in (db.on_primary, db.on_standby):
            run_on("ANALYZE seq_rows; ANALYZE rnd_rows")
        # on the standby: 40 updates (new row versions at the heap's end), a delete, an insert
        db.on_standby("UPDATE seq_rows SET v = -v WHERE id % 500 = 7; DELETE FROM seq_rows WHERE id = 12345;"
                      "INSERT INTO seq_rows VALUES (30000, 1, 'new');"
                      "UPDATE rnd_rows SET v = -v WHERE v % 500 = 7; DELETE FROM rnd_rows WHERE v = 12345;"
                      "INSERT INTO rnd_rows VALUES (md5('new')::uuid, 1, 'new')")
        # small slices (fetched at once) and large ones (cut again inside, by key, before fetching)
        for chunk in (2000, 80_000):
            config = DatabaseConfig.model_validate(db.database_config(reconcile={"scan": scan,
                "tables": [{"name": "seq_rows", "chunk_rows": chunk}, {"name": "rnd_rows", "chunk_rows": chunk}]}))
            result = await run(config, watermark=None)
            seq, rnd = result.tables
            assert (seq.scan, rnd.scan) == (("ordered", "hashed") if scan == "keys" else ("mirrored", "mirrored"))
            for table in (seq, rnd):
                kinds = [d.kind for d in table.differences]
                assert table.difference_count == 42, (table.table, chunk)
                assert kinds.count("changed") == 40 and kinds.count("missing_on_standby") == 1
                assert kinds.count("missing_on_primary") == 1
            assert sorted(d.key for d in seq.differences if d.kind == "changed") == [
                (k,) for k in range(1, 20001) if k % 500 == 7]
    finally:
        db.drop()


@pytest.mark.parametrize("scan", ["keys", "auto"])
async def test_rows_moved_by_concurrent_updates_are_counted_once(pg_pair: PgPair, scan: str) -> None:
    """A writer moving rows in both heaps (updates that change nothing) while the walk runs: every row is
    counted exactly once on each side, in every scan (each side's walk reads one snapshot)."""
    schema = ("CREATE TABLE seq_moving (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL);"
              "CREATE TABLE rnd_moving (id uuid PRIMARY KEY, v int NOT NULL, pad text NOT NULL);")
    db = pg_pair.replicate(schema=schema, tables=("seq_moving", "rnd_moving"))
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(pg_pair.publisher.dsn(db.dbname), autocommit=True) as conn:
            k = 1
            while not stop.is_set():
                k = k * 7919 % 60000 + 1
                conn.execute("UPDATE seq_moving SET v = v WHERE id BETWEEN %s AND %s", (k, k + 40))
                conn.execute("UPDATE rnd_moving SET v = v WHERE v BETWEEN %s AND %s", (k, k + 40))

    try:
        db.on_primary("INSERT INTO seq_moving SELECT g, g, repeat('x', 60) FROM generate_series(1, 60000) g;"
                      "INSERT INTO rnd_moving SELECT md5(g::text)::uuid, g, repeat('x', 60) "
                      "FROM generate_series(1, 60000) g")
        db.wait_caught_up()
        for run_on in (db.on_primary, db.on_standby):
            run_on("ANALYZE seq_moving; ANALYZE rnd_moving")
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            config = DatabaseConfig.model_validate(db.database_config(reconcile={"scan": scan,
                "tables": [{"name": "seq_moving", "chunk_rows": 4000}, {"name": "rnd_moving", "chunk_rows": 4000}]}))
            for _ in range(3):
                result = await run(config, watermark=None)
                assert [(t.rows_primary, t.rows_standby) for t in result.tables] == [(60000, 60000)] * 2, \
                    result.sentence
                by_key = ("ordered", "hashed")
                assert all(t.scan in (by_key[i], "mirrored" if scan == "auto" else by_key[i])
                           for i, t in enumerate(result.tables)), result.sentence
                assert [t.status for t in result.tables] == ["identical", "identical"], result.sentence
        finally:
            stop.set()
            thread.join()
    finally:
        db.drop()


UNUSUAL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE anchor (id int PRIMARY KEY);
CREATE TABLE by_bytea (k bytea PRIMARY KEY, v int NOT NULL);
CREATE TABLE by_enum (m mood, n int, v int NOT NULL, PRIMARY KEY (m, n));
CREATE TABLE by_scale (n numeric PRIMARY KEY, v int NOT NULL);
CREATE TABLE ci_names (id int PRIMARY KEY, name text COLLATE ci NOT NULL, tags text[] COLLATE ci);
CREATE TABLE parted (id bigint PRIMARY KEY, v int NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (1000) TO (3000);
"""
UNUSUAL_ROWS = """
INSERT INTO by_bytea SELECT decode(md5(g::text), 'hex'), g FROM generate_series(1, 2000) g;
INSERT INTO by_enum SELECT (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, g, g FROM generate_series(1, 2000) g;
INSERT INTO by_scale SELECT g / 4.0, g FROM generate_series(1, 2000) g;
INSERT INTO ci_names SELECT g, 'Name' || g, ARRAY['Tag' || g] FROM generate_series(1, 2000) g;
INSERT INTO parted SELECT g, g FROM generate_series(1, 2999) g;
"""


async def test_unusual_keys_and_collations_partitions_and_scales(pg_pair: PgPair) -> None:
    """A bytea key, an enum in a composite key (its OID differs per server), a numeric key stored with
    another scale, a case-insensitive collation ('Alice' vs 'alice' is a difference) and a partitioned
    table are all compared exactly: only the planted rows differ."""
    db = pg_pair.replicate(schema=UNUSUAL, tables=("anchor",))
    try:
        for run_on in (db.on_primary, db.on_standby):
            run_on(UNUSUAL_ROWS)
        db.on_standby("UPDATE by_bytea SET v = -v WHERE v = 10; DELETE FROM by_bytea WHERE v = 20;"
                      "UPDATE by_enum SET v = -v WHERE n = 10; DELETE FROM by_enum WHERE n = 20;"
                      "UPDATE by_scale SET n = 2.50 WHERE n = 2.5; DELETE FROM by_scale WHERE v = 20;"
                      "UPDATE ci_names SET name = lower(name) WHERE id = 10; "
                      "UPDATE ci_names SET tags = ARRAY['tag20'] WHERE id = 20;"
                      "UPDATE parted SET v = -v WHERE id IN (10, 1500); DELETE FROM parted WHERE id = 2500")
        tables = ["by_bytea", "by_enum", "by_scale", "ci_names", "parted"]
        for mode in ("native", "portable"):
            config = DatabaseConfig.model_validate(db.database_config(reconcile={
                "hash": mode, "tables": [{"name": t} for t in tables]}))
            result = await run(config, watermark=None)
            found = {t.table: sorted((d.kind, str(d.key)) for d in t.differences) for t in result.tables}
            assert all(t.status == "differences" for t in result.tables), (mode, result.sentence)
            assert [len(found[t]) for t in tables] == [2, 2, 2, 2, 3], (mode, found)
            assert found["by_scale"] == [("changed", "('2.5',)"), ("missing_on_standby", "('5',)")], mode
            assert [k for k, _ in found["ci_names"]] == ["changed", "changed"], mode
    finally:
        db.drop()


async def test_declared_unique_key_is_used_and_nullable_or_missing_keys_are_refused(pg_pair: PgPair) -> None:
    """A table without a primary key is compared on a declared NOT NULL unique key; other keys are refused."""
    schema = ("CREATE TABLE loose (code text NOT NULL UNIQUE, alt int UNIQUE, v int); "
              "ALTER TABLE loose REPLICA IDENTITY FULL;")
    db = pg_pair.replicate(schema=schema, tables=("loose",))
    try:
        db.on_primary("INSERT INTO loose SELECT 'k' || g, g, g FROM generate_series(1, 50) g")
        db.wait_caught_up()
        db.on_standby("UPDATE loose SET v = 0 WHERE code = 'k7'")
        result = await run(config_of(db, [{"name": "loose", "key": "code"}]), watermark=None)
        assert [d.key for d in result.tables[0].differences] == [("k7",)]
        refused = [await run(config_of(db, [{"name": "loose", "key": key}]), watermark=None) for key in ("alt", "v")]
        assert [r.tables[0].reason for r in refused] == [
            "table loose on gcp: key column alt may be NULL: a unique index lets many rows share NULL, so rows "
            "cannot be matched (make it NOT NULL)",
            "table loose on gcp: configured key v is not the primary key nor a unique index"]
        assert [r.exit_code for r in refused] == [2, 2]
        missing = await run(config_of(db, [{"name": "loose"}]), watermark=None)
        assert missing.tables[0].reason.startswith("table loose on gcp has no primary key")
    finally:
        db.drop()


async def test_without_replication_nothing_waits_and_fresh_rows_count(pg_pair: PgPair) -> None:
    """No subscription: a row written just now on the primary is a difference at once, with no wait."""
    db = pg_pair.replicate(schema="CREATE TABLE t (id int PRIMARY KEY, updated_at timestamptz DEFAULT now());",
                           tables=("t",))
    try:
        db.on_standby("DROP SUBSCRIPTION failover_sub")
        db.on_primary("INSERT INTO t (id) VALUES (1)")
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        result = await run(config_of(db, [{"name": "t", "updated_at": "updated_at"}]), sleep=sleep)
        assert slept == [] and result.watermark is None
        assert [(d.key, d.in_flight) for d in result.tables[0].differences] == [((1,), False)]
    finally:
        db.drop()


async def test_after_a_failover_each_difference_is_lost_written_after_promotion_or_diverged(pg_pair: PgPair) -> None:
    """With the promotion point, rows written on the new primary after it are expected; the rest are named."""
    db = pg_pair.replicate(schema="CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);", tables=("t",))
    try:
        db.on_primary("INSERT INTO t SELECT g, g FROM generate_series(1, 100) g")
        db.wait_caught_up()
        db.on_standby("ALTER SUBSCRIPTION failover_sub DISABLE")  # replication stops: the failover
        db.on_primary("INSERT INTO t VALUES (1000, 1)")           # never arrived: lost
        db.on_primary("UPDATE t SET v = -1 WHERE id = 5")          # never arrived: diverged
        db.on_primary("DELETE FROM t WHERE id = 6")                # never arrived: lost (a delete)
        config = config_of(db, [{"name": "t"}])
        async with await connect(config.sites["azure"], statement_timeout=5) as conn:
            point = await read_promotion_point(conn)
        db.on_standby("INSERT INTO t VALUES (2000, 1)")            # new primary, after promotion
        db.on_standby("UPDATE t SET v = -2 WHERE id = 7")
        result = await reconcile(config, service="api", primary="azure", now=0.0, promotion=point)
        got = {d.key: (d.kind, d.cause) for d in result.tables[0].differences}
        assert got == {(5,): ("changed", "diverged"), (6,): ("missing_on_standby", "lost"),
                       (7,): ("changed", "after_promotion"), (1000,): ("missing_on_primary", "lost"),
                       (2000,): ("missing_on_standby", "after_promotion")}
        assert result.causes == {"lost": 2, "after_promotion": 2, "diverged": 1}
        assert result.to_dict()["promotion"]["xid"] == point.xid
    finally:
        db.drop()


async def test_a_replicas_first_copy_is_compared_by_block_and_a_rewritten_heap_by_key(pg_pair: PgPair) -> None:
    """A table filled before it was subscribed reaches the standby by the initial ``COPY``, in the
    primary's heap order: compared block by block (mirrored), exactly the planted update, delete and
    insert. The standby's heap then rewritten in another order: the probe sees it and the table is
    compared by key (hashed), with the same differences."""
    db = pg_pair.replicate(schema="CREATE TABLE seed (id int PRIMARY KEY);"
                                  "CREATE TABLE copied (id uuid PRIMARY KEY, v int NOT NULL, pad text NOT NULL);",
                           tables=("seed",))
    try:
        db.on_primary("INSERT INTO copied SELECT md5(g::text)::uuid, g, repeat('x', 30) "
                      "FROM generate_series(1, 30000) g;"
                      f"ALTER PUBLICATION {db.publication} ADD TABLE copied")
        db.on_standby(f"ALTER SUBSCRIPTION {db.subscription} REFRESH PUBLICATION")
        db.wait_synced()
        db.on_standby("UPDATE copied SET v = -v WHERE v = 100; DELETE FROM copied WHERE v = 20000;"
                      "INSERT INTO copied VALUES (md5('new')::uuid, 1, 'new')")
        expected = sorted(_md5_uuid(text) for text in ("100", "20000", "new"))
        config = DatabaseConfig.model_validate(db.database_config(reconcile={
            "tables": [{"name": "copied", "chunk_rows": 4000}]}))
        for scan in ("mirrored", "hashed"):
            if scan == "hashed":
                db.on_standby("CREATE TEMP TABLE k AS SELECT * FROM copied ORDER BY md5(v::text); TRUNCATE copied;"
                              "INSERT INTO copied SELECT * FROM k; ANALYZE copied")
            result = await run(config, watermark=None)
            (table,) = result.tables
            assert table.scan == scan, result.sentence
            assert sorted(str(d.key[0]) for d in table.differences) == expected, result.sentence
            assert (table.rows_primary, table.rows_standby) == (30000, 30000)
    finally:
        db.drop()


def _md5_uuid(text: str) -> str:
    """PostgreSQL's ``md5(text)::uuid``."""
    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))

"""Failback on tables the project was not built around: uuid and composite keys, and last writer wins.

Two real PostgreSQL 15 clusters (the module's ``pg_pair``): site ``gcp`` publishes (the old primary
once ``azure`` is promoted). The old primary is fenced as in a real failover, so the writes the
tests make there to create divergence override the fence (``force_write``), as a lost write would
have been committed before it. Timestamps are written explicitly so which version is later is known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from actions.database.failback import prepare_failback
from actions.database.fence import fence
from actions.database.last_writer import canonical, check
from actions.database.promote import promote
from actions.database.quarantine import Divergent, quarantine
from actions.database.reverse import peek_touched
from actions.reconcile import reconcile
from actions.reconcile.preflight import preflight
from actions.reconcile.shape import inspect_table
from engine.config.database import DatabaseConfig
from probes.postgres_conn import connect
from tests.support.postgres import PgPair, ReplicatedDb, wait_until

pytestmark = pytest.mark.real

SCHEMA = """
CREATE TABLE docs (id uuid PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE lines (region int, name text COLLATE "C", qty numeric(10, 2) NOT NULL, updated_at timestamptz,
                    PRIMARY KEY (region, name));
CREATE TABLE nokey (id int, v int);
CREATE TABLE ticks (at timestamptz PRIMARY KEY, v int NOT NULL);
"""
TABLES = ("docs", "lines", "ticks")
Q = "failover_quarantine"
T0 = "2026-01-01 00:00:00"


def uid(n: int) -> str:
    """A fixed uuid per row number (the text form PostgreSQL gives it)."""
    return f"00000000-0000-4000-8000-{n:012d}"


@pytest.fixture
def keys_db(pg_pair: PgPair) -> Iterator[ReplicatedDb]:
    """A database with a uuid-keyed and a composite-keyed table, 6 rows each, replicated and caught up."""
    db = pg_pair.replicate(schema=SCHEMA, tables=TABLES)
    db.on_primary("INSERT INTO docs SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, "
                  f"'doc ' || g, '{T0}' FROM generate_series(1, 6) g")
    db.on_primary(f"INSERT INTO lines SELECT g % 2, 'n' || g, g * 1.5, '{T0}' FROM generate_series(1, 6) g")
    db.on_primary(f"INSERT INTO ticks SELECT '{T0}'::timestamptz + g * interval '1.000001 s', g "
                  "FROM generate_series(1, 6) g")
    db.wait_caught_up()
    yield db
    db.drop()


def config_for(db: ReplicatedDb, docs: str, lines: str, *, replication_port: int | None = None,
               more: tuple[dict[str, Any], ...] = (), **table: Any) -> DatabaseConfig:
    section = db.database_config(reconcile={"tables": [
        {"name": "docs", "conflict": docs, "updated_at": "updated_at", **table},
        {"name": "lines", "conflict": lines, "updated_at": "updated_at"}, *more]})
    if replication_port is not None:  # the old primary cannot reach the new one for replication
        section["sites"]["azure"].update(replication_port=replication_port)  # type: ignore[index]
    return DatabaseConfig.model_validate(section)


def on_old(db: ReplicatedDb, sql: str) -> list[tuple[object, ...]]:
    """A write (or read) on the fenced old primary, past the fence."""
    return db.pair.publisher.execute(sql, db.dbname, force_write=True)


async def fail_over(db: ReplicatedDb, config: DatabaseConfig) -> None:
    assert (await fence(config, "gcp")).ok
    promoted = await promote(config, "azure")
    assert promoted.ok, promoted.sentence


def both(db: ReplicatedDb, sql: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    return db.on_primary(sql), db.on_standby(sql)


async def test_uuid_and_composite_keys_are_explained_by_the_slot_and_lost_rows_kept(keys_db: ReplicatedDb) -> None:
    """Written-after-promotion rows are explained by the slot, lost ones listed and kept; the old primary resyncs.
    A timestamptz key too: the slot's text forms are read as the reconciliation reads them (UTC, microseconds)."""
    config = config_for(keys_db, "keep_new", "keep_both", more=({"name": "ticks", "conflict": "keep_both"},))
    await fail_over(keys_db, config)
    on_old(keys_db, f"INSERT INTO docs VALUES ('{uid(99)}', 'lost', '{T0}')")              # lost insert
    on_old(keys_db, f"UPDATE docs SET body = 'lost change' WHERE id = '{uid(1)}'")          # lost change
    on_old(keys_db, "INSERT INTO lines VALUES (9, 'lost', 1, NULL)")
    on_old(keys_db, "UPDATE lines SET qty = 0 WHERE (region, name) = (1, 'n1')")
    keys_db.on_standby(f"UPDATE docs SET body = 'new 2' WHERE id = '{uid(2)}'")              # after promotion
    keys_db.on_standby(f"DELETE FROM docs WHERE id = '{uid(3)}'")
    keys_db.on_standby("UPDATE lines SET qty = 22 WHERE (region, name) = (0, 'n2')")
    keys_db.on_standby("DELETE FROM lines WHERE (region, name) = (1, 'n3')")
    keys_db.on_standby("INSERT INTO lines VALUES (7, 'after', 1, NULL)")
    keys_db.on_standby("SET TimeZone = 'Asia/Kolkata'; UPDATE ticks SET v = -2 WHERE v = 2")
    on_old(keys_db, "UPDATE ticks SET v = -3 WHERE v = 3")
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    assert check.error is None and check.differences_found == 11, check.sentence

    refused = await prepare_failback(config, "azure", check)
    assert not refused.ok and "5 not explained by writes since promotion" in refused.sentence, refused.sentence
    unexplained = {(u["table"], u["key"] if isinstance(u["key"], str) else tuple(u["key"]))
                   for u in refused.data["differences"]["unexplained"]}
    assert unexplained == {("docs", uid(99)), ("docs", uid(1)), ("lines", (9, "lost")), ("lines", (1, "n1")),
                           ("ticks", "2026-01-01 00:00:03.000003+00")}
    assert refused.data["differences"]["explained"] == 6  # ticks 00:00:02.000002 among them

    result = await prepare_failback(config, "azure", check, acknowledge=True)
    assert result.ok, result.sentence
    tables = {t["source"]: t for t in result.data["quarantine"]["tables"]}
    assert tables["public.docs"]["keys"] == [uid(1), uid(99)]            # keep_new: the lost rows only
    assert tables["public.lines"]["keys"] == [[0, "n2"], [1, "n1"], [1, "n3"], [9, "lost"]]  # keep_both: all
    docs_q, lines_q = (f'{Q}."{tables[s]["table"].split(".", 1)[1]}"' for s in ("public.docs", "public.lines"))
    assert keys_db.on_primary(f"SELECT id::text, body FROM {docs_q} ORDER BY id") == [
        (uid(1), "lost change"), (uid(99), "lost")]
    reasons = {(r, n): why for r, n, why in keys_db.on_primary(  # type: ignore[misc]
        f"SELECT region, name, quarantine_reason FROM {lines_q}")}
    assert "a write lost at failover" in reasons[(9, "lost")] and "overwrites it" in reasons[(0, "n2")]
    assert "deletes it" in reasons[(1, "n3")] and "a change lost at failover" in reasons[(1, "n1")]
    assert f"(keys {uid(1)}, {uid(99)})" in result.sentence and "(1, 'n1')" in result.sentence

    # the old primary follows the new one: the post-promotion writes arrived, the lost rows stay as they were
    assert keys_db.on_primary("SELECT region, name, qty FROM lines ORDER BY 1, 2") == [
        (0, "n2", 22), (0, "n4", 6), (0, "n6", 9), (1, "n1", 0), (1, "n5", 7.5), (7, "after", 1), (9, "lost", 1)]
    keys_db.on_standby(f"UPDATE docs SET body = 'later' WHERE id = '{uid(4)}'")
    wait_until(lambda: keys_db.on_primary(f"SELECT body FROM docs WHERE id = '{uid(4)}'") == [("later",)], 15,
               "the new primary's write to reach the old one")


async def test_a_table_whose_key_cannot_be_matched_is_refused_naming_it(keys_db: ReplicatedDb) -> None:
    """No primary key, or a key of another width: the quarantine says which table and why, nothing is kept."""
    config = config_for(keys_db, "keep_new", "keep_new")
    assert (await fence(config, "gcp")).ok
    no_key = await quarantine(config, "gcp", [Divergent("nokey", 1, "x")], tag="t")
    assert not no_key.ok and "table nokey on gcp has no primary key: rows cannot be matched" in no_key.sentence
    odd = await quarantine(config, "gcp", [Divergent("lines", 5, "x")], tag="t")
    assert not odd.ok and "table lines: key 5 has 1 value but the key (region, name) has 2" in odd.sentence
    assert keys_db.on_primary(f"SELECT count(*) FROM pg_namespace WHERE nspname = '{Q}'") == [(0,)]
    kept = await quarantine(config, "gcp", [Divergent("lines", (1, "n1"), "x"), Divergent("docs", uid(2), "y")],
                            tag="t")
    assert kept.ok and kept.data["rows"] == 2 and kept.data["tables"][0]["keys"] == [[1, "n1"]], kept.sentence


async def test_last_writer_wins_refuses_tables_whose_versions_cannot_be_carried_across(keys_db: ReplicatedDb) -> None:
    """Columns that differ between the sides, or a column of another type on one side: each named, per table."""
    config = config_for(keys_db, "last_writer_wins", "last_writer_wins")
    keys_db.on_standby("ALTER TABLE docs ADD COLUMN extra int")
    keys_db.on_standby("ALTER TABLE lines ALTER COLUMN updated_at TYPE timestamp")
    async with await connect(config.sites["azure"], statement_timeout=5) as new, \
            await connect(config.sites["gcp"], statement_timeout=5) as back:
        tables, problems = await check(new, back, config, "azure", "gcp")
    assert tables == [] and problems == [
        "table docs: columns differ (only on azure: extra; only on gcp: -): a whole version cannot be carried across",
        "table lines: last_writer_wins column updated_at is timestamp without time zone on azure but timestamp with "
        "time zone on gcp: the versions cannot be ordered"]


async def diverge_for_last_writer(db: ReplicatedDb) -> None:
    """Per docs row: 1 old later, 2 new later, 3 deleted on new (old later), 4 lost insert (99), 5 lost change,
    6 changed on the old primary with an earlier stamp (the new version wins, and no stream would carry it);
    lines: (1, 'n1') old later, (8, 'lost') lost insert, (0, 'n2') new later."""
    on_old(db, f"UPDATE docs SET body = 'old 1', updated_at = '2026-01-03' WHERE id = '{uid(1)}'")
    db.on_standby(f"UPDATE docs SET body = 'new 1', updated_at = '2026-01-02' WHERE id = '{uid(1)}'")
    on_old(db, f"UPDATE docs SET body = 'old 2', updated_at = '2026-01-02' WHERE id = '{uid(2)}'")
    db.on_standby(f"UPDATE docs SET body = 'new 2', updated_at = '2026-01-03' WHERE id = '{uid(2)}'")
    on_old(db, f"UPDATE docs SET body = 'old 3', updated_at = '2026-01-09' WHERE id = '{uid(3)}'")
    db.on_standby(f"DELETE FROM docs WHERE id = '{uid(3)}'")
    on_old(db, f"INSERT INTO docs VALUES ('{uid(99)}', 'lost 99', '2025-12-31 23:59:59.999999+00')")
    on_old(db, f"UPDATE docs SET body = 'old 5', updated_at = '2026-01-01 00:00:00.000001+00' WHERE id = '{uid(5)}'")
    on_old(db, f"UPDATE docs SET body = 'old 6', updated_at = '2025-06-01' WHERE id = '{uid(6)}'")  # an older stamp
    on_old(db, "UPDATE lines SET qty = 111.10, updated_at = '2026-01-05' WHERE (region, name) = (1, 'n1')")
    db.on_standby("UPDATE lines SET qty = 1.01, updated_at = '2026-01-04' WHERE (region, name) = (1, 'n1')")
    on_old(db, "INSERT INTO lines VALUES (8, 'lost', 8.80, '2026-01-01')")
    on_old(db, "UPDATE lines SET qty = 2, updated_at = '2026-01-02' WHERE (region, name) = (0, 'n2')")
    db.on_standby("UPDATE lines SET qty = 3, updated_at = '2026-01-06' WHERE (region, name) = (0, 'n2')")


DOCS = "SELECT id::text, body, (updated_at AT TIME ZONE 'UTC')::text FROM docs ORDER BY id"
LINES = "SELECT region, name, qty::text, (updated_at AT TIME ZONE 'UTC')::text FROM lines ORDER BY 1, 2"


async def test_last_writer_wins_writes_later_old_versions_back_and_a_rerun_neither_repeats_nor_regresses(
        keys_db: ReplicatedDb) -> None:
    """Old later: applied on the new primary and on both after the stream; new later kept (on both, streamed or
    copied); a delete stays; a lost insert is restored; a re-run applies nothing twice and keeps a later write."""
    config = config_for(keys_db, "last_writer_wins", "last_writer_wins")
    await fail_over(keys_db, config)
    await diverge_for_last_writer(keys_db)
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    assert check.differences_found == 9, check.sentence

    # a declared column that cannot order the versions: refused before anything changes
    bad = config_for(keys_db, "last_writer_wins", "last_writer_wins", updated_at="body")
    refused = await prepare_failback(bad, "azure", check, acknowledge=True)
    assert not refused.ok and "last writer wins failed (table docs on azure: last_writer_wins column body is " \
                               "text, not a timestamp, timestamptz or date; table docs on gcp: " in refused.sentence
    assert keys_db.on_primary(f"SELECT count(*) FROM pg_namespace WHERE nspname = '{Q}'") == [(0,)]
    checked = await preflight(bad, service="api", primary="azure")  # reconcile --check says it beforehand
    assert checked.exit_code == 1 and checked.problems == [
        f"table docs on {site}: last_writer_wins column body is text, not a timestamp, timestamptz or date"
        for site in ("azure", "gcp")]
    assert (await preflight(config, service="api", primary="azure")).exit_code == 0

    # first run: stops at the reverse subscription (the old primary cannot reach the new one), after the writes
    broken = config_for(keys_db, "last_writer_wins", "last_writer_wins", replication_port=1)
    first = await prepare_failback(broken, "azure", check)  # the policy settles every row: no acknowledgement
    assert not first.ok and "reverse subscription failed" in first.sentence, first.sentence
    assert first.data["differences"]["unexplained"] == [] and len(first.data["differences"]["last_writer_wins"]) == 4
    judged = {t["table"]: t for t in first.data["last_writer_wins"]["tables"]}
    docs = {r["key"]: (r["outcome"], r["why"]) for r in judged["docs"]["rows"]}
    assert (judged["docs"]["applied"], judged["docs"]["kept_new"], judged["docs"]["present"]) == (3, 3, 0)
    assert (judged["docs"]["applied_keys"], judged["docs"]["kept_new_keys"]) == ([uid(1), uid(5), uid(99)],
                                                                                [uid(2), uid(3), uid(6)])
    assert docs[uid(1)][0] == "applied" and "updated_at later on gcp" in docs[uid(1)][1]
    assert docs[uid(2)][0] == "kept_new" and "updated_at later on azure" in docs[uid(2)][1]
    assert docs[uid(3)] == ("kept_new", "deleted on azure after promotion: the delete is the later write")
    assert docs[uid(99)][0] == "applied" and "a write lost at failover" in docs[uid(99)][1]
    assert docs[uid(5)][0] == "applied"  # a lost change one microsecond later
    assert docs[uid(6)][0] == "kept_new" and docs[uid(6)][1].endswith(
        "copied onto gcp (not written on azure since promotion, so the reverse stream would not carry it)")
    assert on_old(keys_db, f"SELECT body FROM docs WHERE id = '{uid(6)}'") == [("doc 6",)]
    lines = {tuple(r["key"]): r["outcome"] for r in judged["lines"]["rows"]}
    assert lines == {(0, "n2"): "kept_new", (1, "n1"): "applied", (8, "lost"): "applied"}
    step = next(s for s in first.steps if s.name == "last writer wins")
    assert step.status == "ok" and f"docs by updated_at: applied on azure 3 ({uid(1)}, {uid(5)}, {uid(99)})" \
        in step.detail and "lines by updated_at: applied on azure 2 ((1, 'n1'), (8, 'lost')), kept new 1 " \
        "((0, 'n2'))" in step.detail, step.detail
    expected_docs = [(uid(1), "old 1", "2026-01-03 00:00:00"), (uid(2), "new 2", "2026-01-03 00:00:00"),
                     (uid(4), "doc 4", "2026-01-01 00:00:00"), (uid(5), "old 5", "2026-01-01 00:00:00.000001"),
                     (uid(6), "doc 6", "2026-01-01 00:00:00"),
                     (uid(99), "lost 99", "2025-12-31 23:59:59.999999")]
    assert keys_db.on_standby(DOCS) == expected_docs
    assert (1, "n1", "111.10", "2026-01-05 00:00:00") in keys_db.on_standby(LINES)
    assert (8, "lost", "8.80", "2026-01-01 00:00:00") in keys_db.on_standby(LINES)
    assert (0, "n2", "3.00", "2026-01-06 00:00:00") in keys_db.on_standby(LINES)

    # meanwhile a later write on the new primary; the re-run must keep it and write nothing twice
    keys_db.on_standby(f"UPDATE docs SET body = 'app', updated_at = '2026-02-01' WHERE id = '{uid(1)}'")
    expected_docs[0] = (uid(1), "app", "2026-02-01 00:00:00")
    second = await prepare_failback(config, "azure", check)
    assert second.ok, second.sentence
    again = {t["table"]: t for t in second.data["last_writer_wins"]["tables"]}
    assert (again["docs"]["applied"], again["docs"]["kept_new"], again["docs"]["present"]) == (0, 4, 2)
    assert (again["lines"]["applied"], again["lines"]["present"]) == (0, 2)
    assert keys_db.on_standby(DOCS) == expected_docs

    # after the reverse stream both sides hold the winners; the quarantine keeps every old version
    wait_until(lambda: keys_db.on_primary(DOCS) == expected_docs, 15, "the winners to reach the old primary")
    wait_until(lambda: keys_db.on_primary(LINES) == keys_db.on_standby(LINES), 15, "lines to agree")
    q_docs = f'{Q}."{first.data["quarantine"]["tables"][0]["table"].split(".", 1)[1]}"'
    assert keys_db.on_primary(f"SELECT body FROM {q_docs} ORDER BY id") == [
        ("old 1",), ("old 2",), ("old 3",), ("old 5",), ("old 6",), ("lost 99",)]
    again_check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    assert again_check.identical, again_check.sentence


REFUSE_INSERTS = """
CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'inserts paused by the test'; END $$;
CREATE TRIGGER refuse_insert BEFORE INSERT ON lines FOR EACH ROW EXECUTE FUNCTION refuse_insert();
"""
LOST = "SELECT region, name, qty::text FROM lines WHERE name = 'lost'"


async def test_a_restore_the_new_primary_refuses_stops_before_resync_and_the_next_preparation_restores_it(
        keys_db: ReplicatedDb) -> None:
    """Interrupted between its two writes (the old copy deleted, the insert refused): nothing is resynchronised,
    the quarantine still holds the row, and the next run, even from a reconciliation that finds nothing, restores it."""
    config = config_for(keys_db, "keep_new", "last_writer_wins")
    await fail_over(keys_db, config)
    on_old(keys_db, "INSERT INTO lines VALUES (8, 'lost', 8.80, '2026-01-01')")
    keys_db.on_standby(REFUSE_INSERTS)
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    assert check.differences_found == 1, check.sentence

    first = await prepare_failback(config, "azure", check)
    assert not first.ok and "last writer wins failed (table lines: the old versions could not be written onto " \
                            "azure (inserts paused by the test); gcp was not resynchronised" in first.sentence
    assert first.data["last_writer_wins"]["error"] == "lines: inserts paused by the test"
    assert keys_db.on_primary(LOST) == keys_db.on_standby(LOST) == []  # the old copy went first; the insert did not
    assert keys_db.on_primary("SELECT count(*) FROM pg_subscription") == [(0,)]

    keys_db.on_standby("DROP TRIGGER refuse_insert ON lines")
    nothing = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    assert nothing.identical, nothing.sentence  # the row is on neither side now: only the quarantine has it
    second = await prepare_failback(config, "azure", nothing)
    assert second.ok, second.sentence
    [lines] = second.data["last_writer_wins"]["tables"]
    assert (lines["applied"], lines["rows"]) == (1, [{"key": [8, "lost"], "outcome": "applied", "why": (
        "only on gcp and not written on azure since promotion: a write lost at failover, the last one")}])
    assert keys_db.on_standby(LOST) == [(8, "lost", "8.80")]
    wait_until(lambda: keys_db.on_primary(LOST) == [(8, "lost", "8.80")], 15, "the restored row to reach gcp")


async def test_a_lost_delete_still_needs_the_acknowledgement_in_a_last_writer_wins_table(
        keys_db: ReplicatedDb) -> None:
    """The policy judges rows the old primary holds; a row only on the new primary, untouched since, it does not."""
    config = config_for(keys_db, "keep_new", "last_writer_wins")
    await fail_over(keys_db, config)
    on_old(keys_db, "INSERT INTO lines VALUES (8, 'lost', 8.80, '2026-01-01')")
    on_old(keys_db, "DELETE FROM lines WHERE (region, name) = (1, 'n5')")
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    refused = await prepare_failback(config, "azure", check)
    assert not refused.ok and "1 not explained by writes since promotion: lines (1, 'n5') (only on azure)" \
        in refused.sentence, refused.sentence
    assert [u["key"] for u in refused.data["differences"]["last_writer_wins"]] == [(8, "lost")]
    assert "1 not written since, in last_writer_wins tables (judged after the quarantine" in refused.sentence
    assert "quarantine" not in refused.data


async def blocked_on(db: ReplicatedDb, table: str, timeout: float = 15.0) -> None:
    """Until another session of the old primary waits for a lock on ``table``."""
    sql = f"SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = to_regclass('{table}')"
    for _ in range(int(timeout / 0.05)):
        if on_old(db, sql) != [(0,)]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing waited for a lock on {table} within {timeout}s")


async def test_a_row_the_new_primary_deletes_after_the_gate_looked_is_not_inserted_back(keys_db: ReplicatedDb) -> None:
    """The application deletes a row on the new primary after the gate peeked the slot: the last writer step
    decodes the slot again under the table's lock, sees the delete and keeps it (no resurrection)."""
    config = config_for(keys_db, "last_writer_wins", "keep_new")
    await fail_over(keys_db, config)
    on_old(keys_db, f"UPDATE docs SET body = 'old 5', updated_at = '2026-01-05' WHERE id = '{uid(5)}'")  # lost change
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    assert check.differences_found == 1, check.sentence

    # hold the quarantine back (its CREATE TABLE ... LIKE docs waits for this lock): the gate has peeked by then
    holder = await psycopg.AsyncConnection.connect(keys_db.pair.publisher.dsn(keys_db.dbname), autocommit=True,
                                                   options="-c default_transaction_read_only=off")
    async with holder:
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE docs IN ACCESS EXCLUSIVE MODE")
        task = asyncio.create_task(prepare_failback(config, "azure", check))
        try:
            await blocked_on(keys_db, "docs")
            keys_db.on_standby(f"DELETE FROM docs WHERE id = '{uid(5)}'")  # after the gate's peek
        finally:
            await holder.execute("COMMIT")
        result = await task
    assert result.ok, result.sentence
    [docs] = result.data["last_writer_wins"]["tables"]
    assert docs["rows"] == [{"key": uid(5), "outcome": "kept_new",
                             "why": "deleted on azure after promotion: the delete is the later write"}]
    assert keys_db.on_standby(f"SELECT count(*) FROM docs WHERE id = '{uid(5)}'") == [(0,)]
    wait_until(lambda: keys_db.on_primary(f"SELECT count(*) FROM docs WHERE id = '{uid(5)}'") == [(0,)], 15,
               "the delete to reach the old primary")


CODED = """
CREATE TABLE coded (id int PRIMARY KEY, code text NOT NULL, body text, updated_at timestamptz NOT NULL,
                    CONSTRAINT coded_code UNIQUE (code));
CREATE TABLE amounts (k numeric PRIMARY KEY, v int NOT NULL);
"""


@pytest.fixture
def coded_db(pg_pair: PgPair) -> Iterator[ReplicatedDb]:
    """A table keyed by a unique ``code`` whose replica identity is its primary key, and a numeric-keyed table."""
    db = pg_pair.replicate(schema=CODED, tables=("coded", "amounts"))
    db.on_primary(f"INSERT INTO coded SELECT g, 'c' || g, 'body ' || g, '{T0}' FROM generate_series(1, 3) g")
    db.on_primary("INSERT INTO amounts VALUES (1.0, 1), (2.50, 2), (3, 3)")
    db.wait_caught_up()
    yield db
    db.drop()


def coded_config(db: ReplicatedDb) -> DatabaseConfig:
    return DatabaseConfig.model_validate(db.database_config(reconcile={"tables": [
        {"name": "coded", "key": "code", "conflict": "last_writer_wins", "updated_at": "updated_at"}]}))


async def test_a_key_the_replica_identity_does_not_cover_is_refused_up_front_and_never_decoded_as_untouched(
        coded_db: ReplicatedDb) -> None:
    """Key ``code`` under REPLICA IDENTITY DEFAULT (the id): an update of the code on the new primary sends only the
    new code, so the slot's decoding is incomplete naming the table; failback and --check refuse the policy."""
    config = coded_config(coded_db)
    await fail_over(coded_db, config)
    coded_db.on_standby("UPDATE coded SET code = 'c1-renamed' WHERE id = 1")
    async with await connect(config.sites["azure"], statement_timeout=5) as new, \
            await connect(config.sites["gcp"], statement_timeout=5) as back:
        await canonical(new)
        shape = await inspect_table(new, "coded", "code", "azure")
        touched = await peek_touched(new, config.slot_name, config.publication, {("public", "coded"): shape})
        assert not touched.complete and touched.note.startswith("table public.coded: an update or delete on it")
        tables, problems = await check(new, back, config, "azure", "gcp")
    fix = "ALTER TABLE coded REPLICA IDENTITY USING INDEX <the key's unique index> (or FULL)"
    assert tables == [] and problems == [
        "table coded on azure: the key (code) is not covered by the replica identity (default (the primary key): id), "
        f"so a changed or deleted key cannot be told from the reverse slot: {fix}"]
    check_run = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    refused = await prepare_failback(config, "azure", check_run, acknowledge=True)
    assert not refused.ok and "the key (code) is not covered by the replica identity" in refused.sentence
    assert coded_db.on_primary(f"SELECT count(*) FROM pg_namespace WHERE nspname = '{Q}'") == [(0,)]
    checked = await preflight(config, service="api", primary="azure")
    assert checked.exit_code == 1 and [p.split(":")[0] for p in checked.problems] == [
        "table coded on azure", "table coded on gcp"]

    coded_db.on_standby("ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code")
    on_old(coded_db, "ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code")
    async with await connect(config.sites["azure"], statement_timeout=5) as new, \
            await connect(config.sites["gcp"], statement_timeout=5) as back:
        tables, problems = await check(new, back, config, "azure", "gcp")
    assert problems == [] and [t.name for t in tables] == ["coded"]
    assert (await preflight(config, service="api", primary="azure")).exit_code == 0


async def test_reconcile_check_reports_what_failback_would_refuse_instead_of_a_traceback(keys_db: ReplicatedDb) -> None:
    """--check on last_writer_wins tables whose differences the comparison itself does not see (columns not
    compared): updated_at missing on the standby, its type differing, a column only on one side: each a problem
    (exit 1), as failback's own check says it."""
    lww = {"conflict": "last_writer_wins", "updated_at": "updated_at", "exclude": ["updated_at"]}
    config = DatabaseConfig.model_validate(keys_db.database_config(reconcile={"tables": [
        {"name": "docs", "conflict": "last_writer_wins", "updated_at": "updated_at", "columns": ["body"]},
        {"name": "lines", **lww},
        {"name": "ticks", "conflict": "last_writer_wins", "updated_at": "at", "columns": ["v"]}]}))
    keys_db.on_standby("ALTER TABLE docs DROP COLUMN updated_at")
    keys_db.on_standby("ALTER TABLE lines ALTER COLUMN updated_at TYPE timestamp")
    keys_db.on_standby("ALTER TABLE ticks ADD COLUMN extra int")
    checked = await preflight(config, service="api", primary="gcp")
    assert checked.error is None and checked.exit_code == 1, checked.render()
    assert checked.problems == [
        "table docs on azure: last_writer_wins column updated_at not found",
        "table lines: last_writer_wins column updated_at is timestamp with time zone on gcp but timestamp without "
        "time zone on azure: the versions cannot be ordered",
        "table ticks: columns differ (only on gcp: -; only on azure: extra): a whole version cannot be carried across"]
    assert "table docs: PROBLEM: table docs on azure: last_writer_wins column updated_at not found" in checked.render()


async def test_numeric_keys_are_matched_in_one_text_form_whatever_their_display_scale(coded_db: ReplicatedDb) -> None:
    """Keys 1.0 and 2.50 read as ``1`` and ``2.5`` from the slot and from the quarantine (``trim_scale``), as the
    reconciliation reports them, and a key given as ``1`` finds the row stored as 1.0."""
    config = coded_config(coded_db)
    await fail_over(coded_db, config)
    coded_db.on_standby("UPDATE amounts SET v = 20 WHERE k = 2.5")
    on_old(coded_db, "UPDATE amounts SET v = 10 WHERE k = 1")
    async with await connect(config.sites["azure"], statement_timeout=5) as new:
        await canonical(new)
        shape = await inspect_table(new, "amounts", None, "azure")
        touched = await peek_touched(new, config.slot_name, config.publication, {("public", "amounts"): shape})
    assert touched.complete and touched.keys == {("public", "amounts"): {"2.5"}}
    kept = await quarantine(config, "gcp", [Divergent("amounts", "1", "lost"), Divergent("amounts", "2.50", "x")],
                            tag="t")
    assert kept.ok and kept.data["tables"][0]["keys"] == ["1", "2.5"], kept.sentence
    q_table = f'{Q}."{kept.data["tables"][0]["table"].split(".", 1)[1]}"'
    assert on_old(coded_db, f"SELECT k::text, v FROM {q_table} ORDER BY k") == [("1.0", 10), ("2.50", 2)]

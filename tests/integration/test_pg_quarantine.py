"""Failback keeps divergent data: the old primary's differing rows are quarantined before it resyncs.

Two real PostgreSQL 15 clusters (``pg_db``): site ``gcp`` is the publisher (the old primary once
``azure`` is promoted). The old primary is fenced as in a real failover, so every write the tests
make there to create divergence overrides the fence (``force_write``), as a lost write would have
been committed before it.
"""

from __future__ import annotations

from typing import Any

import pytest

from actions.database.failback import prepare_failback
from actions.database.fence import fence
from actions.database.promote import promote
from actions.database.quarantine import Divergent, quarantine
from actions.reconcile import reconcile
from engine.config.database import DatabaseConfig
from tests.support.postgres import ReplicatedDb, wait_until

pytestmark = pytest.mark.real

SCHEMA = "failover_quarantine"
ROW = "SELECT id, owner, balance, updated_at FROM {} WHERE id IN (2, 3, 4, 500) ORDER BY id"


def config_for(db: ReplicatedDb, **overrides: Any) -> DatabaseConfig:
    section = db.database_config(reconcile={"tables": [{"name": "accounts", "conflict": "keep_both"},
                                                       {"name": "orders", "conflict": "keep_both"}]})
    section.update(overrides)
    return DatabaseConfig.model_validate(section)


def on_old(db: ReplicatedDb, sql: str) -> list[tuple[object, ...]]:
    """A write (or read) on the fenced old primary, past the fence."""
    return db.pair.publisher.execute(sql, db.dbname, force_write=True)


def quarantine_tables(db: ReplicatedDb, schema: str = SCHEMA) -> list[str]:
    return [str(r[0]) for r in db.on_primary(
        f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' ORDER BY 1")]


async def diverge_after_failover(db: ReplicatedDb, config: DatabaseConfig) -> list[tuple[object, ...]]:
    """Fence gcp, promote azure, then make the two disagree; return gcp's versions of the differing rows.

    On gcp (lost at failover): row 500 only there, row 2 changed there. On azure after promotion
    (the reverse stream carries them): row 3 updated, row 4 deleted, one new row.
    """
    db.on_primary("INSERT INTO accounts (owner, balance) SELECT 'o' || g, g FROM generate_series(1, 20) g")
    db.wait_caught_up()
    assert (await fence(config, "gcp")).ok
    promoted = await promote(config, "azure")
    assert promoted.ok, promoted.sentence
    on_old(db, "INSERT INTO accounts (id, owner, balance) VALUES (500, 'lost', 5)")
    on_old(db, "UPDATE accounts SET owner = 'changed on gcp', balance = 222 WHERE id = 2")
    db.on_standby("UPDATE accounts SET balance = 333 WHERE id = 3")
    db.on_standby("DELETE FROM accounts WHERE id = 4")
    db.on_standby("INSERT INTO accounts (owner, balance) VALUES ('after', 7)")
    return db.on_primary(ROW.format("accounts"))


async def test_failback_quarantines_divergent_rows_before_resync_and_a_rerun_duplicates_nothing(
        pg_db: ReplicatedDb) -> None:
    """Every row gcp holds differently is kept with its content, listed, never duplicated; gcp then resyncs."""
    config = config_for(pg_db)
    originals = await diverge_after_failover(pg_db, config)
    assert [r[0] for r in originals] == [2, 3, 4, 500]
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    assert check.differences_found == 5, check.sentence

    refused = await prepare_failback(config, "azure", check)  # unexplained rows: nothing is done
    assert not refused.ok and "quarantine" not in refused.data
    assert quarantine_tables(pg_db) == []

    # first attempt: the old primary cannot reach the new one; the rows are kept before that step
    broken = pg_db.database_config(reconcile={"tables": [{"name": "accounts", "conflict": "keep_both"},
                                                         {"name": "orders", "conflict": "keep_both"}]})
    broken["sites"]["azure"].update(replication_port=1)  # type: ignore[index]
    failed = await prepare_failback(DatabaseConfig.model_validate(broken), "azure", check, acknowledge=True)
    assert not failed.ok and "reverse subscription failed" in failed.sentence, failed.sentence
    first = failed.data["quarantine"]
    assert first["rows"] == first["copied"] == 4
    [table] = quarantine_tables(pg_db)
    assert table.startswith("accounts__azure_") and first["tables"][0]["table"] == f"{SCHEMA}.{table}"
    assert first["tables"][0] == {"source": "public.accounts", "table": f"{SCHEMA}.{table}", "rows": 4,
                                  "copied": 4, "keys": [2, 3, 4, 500], "key_count": 4, "keys_truncated": False,
                                  "absent": 0}
    assert f"quarantine: kept 4 rows of gcp in schema {SCHEMA}: {table} 4 (keys 2, 3, 4, 500)" in failed.sentence

    # again, reachable: the same tag (the slot was not consumed), nothing copied twice, then the resync
    result = await prepare_failback(config, "azure", check, acknowledge=True)
    assert result.ok, result.sentence
    again = result.to_dict()["data"]["quarantine"]
    assert again["tag"] == first["tag"] and again["rows"] == 4 and again["copied"] == 0
    assert f"{table} 4 (keys 2, 3, 4, 500; 4 kept earlier)" in result.sentence
    steps = [s.name for s in result.steps]
    assert steps.index("quarantine") < steps.index("reverse subscription")
    kept = f'{SCHEMA}."{table}"'
    assert pg_db.on_primary(ROW.format(kept)) == originals  # the original content, once
    assert pg_db.on_primary(f"SELECT count(*) FROM {kept}") == [(4,)]
    reasons = dict(pg_db.on_primary(f"SELECT id, quarantine_reason FROM {kept}"))  # type: ignore[arg-type]
    assert reasons[500].startswith("only on gcp: not on azure") and reasons[2].startswith("differs from azure: not")
    assert "overwrites it" in reasons[3] and "deletes it" in reasons[4]
    assert {r[0] for r in pg_db.on_primary(f"SELECT quarantine_tag FROM {kept}")} == {first["tag"]}

    # the old primary now follows the new one; the overwritten versions survive in the quarantine only
    assert pg_db.on_primary("SELECT id, balance FROM accounts WHERE id IN (2, 3, 4, 500) ORDER BY id") == [
        (2, 222), (3, 333), (500, 5)]
    pg_db.on_standby("UPDATE accounts SET balance = 999 WHERE id = 2")  # a later write reaches gcp too
    wait_until(lambda: pg_db.on_primary("SELECT balance FROM accounts WHERE id = 2") == [(999,)], 15,
               "the new primary's write to reach the old one")
    assert pg_db.on_primary(f"SELECT owner, balance FROM {kept} WHERE id = 2") == [("changed on gcp", 222)]

    # never replicated: no publication has the schema, the new primary has no such schema
    assert pg_db.on_primary(f"SELECT count(*) FROM pg_publication_tables WHERE schemaname = '{SCHEMA}'") == [(0,)]
    assert pg_db.on_standby(f"SELECT count(*) FROM pg_namespace WHERE nspname = '{SCHEMA}'") == [(0,)]
    # the fence is untouched: new sessions on gcp are still read-only
    assert pg_db.on_primary("SHOW default_transaction_read_only") == [("on",)]

    third = await prepare_failback(config, "azure", check)
    assert third.ok and "quarantine: not repeated: failover_sub already set up on gcp" in third.sentence
    assert pg_db.on_primary(f"SELECT count(*) FROM {kept}") == [(4,)]


async def test_a_for_all_tables_publication_on_the_old_primary_stops_the_failback_before_resync(
        pg_db: ReplicatedDb) -> None:
    """The quarantine would be published: nothing is kept, nothing is resynchronised, the reason is said."""
    config = config_for(pg_db)
    originals = await diverge_after_failover(pg_db, config)
    on_old(pg_db, "DROP PUBLICATION failover_pub")
    on_old(pg_db, "CREATE PUBLICATION failover_pub FOR ALL TABLES")
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    result = await prepare_failback(config, "azure", check, acknowledge=True)
    assert not result.ok
    assert "quarantine failed (4 differing rows of gcp could not be kept (publication failover_pub on gcp is " \
           "FOR ALL TABLES: it would publish the quarantine tables" in result.sentence, result.sentence
    assert ": gcp was not resynchronised" in result.sentence
    assert "FOR ALL TABLES" in result.data["quarantine"]["error"]
    assert [s.name for s in result.steps][-1] == "quarantine"
    assert pg_db.on_primary(f"SELECT count(*) FROM pg_namespace WHERE nspname = '{SCHEMA}'") == [(0,)]  # rolled back
    assert pg_db.on_primary("SELECT count(*) FROM pg_subscription") == [(0,)]
    assert pg_db.on_primary(ROW.format("accounts")) == originals


async def test_a_partly_listed_reconciliation_is_run_again_so_every_row_is_kept(pg_db: ReplicatedDb) -> None:
    """The given reconciliation lists one differing row of four: failback lists them all, and keeps them all."""
    config = config_for(pg_db)
    await diverge_after_failover(pg_db, config)
    listing_one = config.model_copy(update={"reconcile": config.reconcile.model_copy(
        update={"max_reported_rows": 1})})
    check = await reconcile(listing_one, service="api", primary="azure", now=0.0, watermark=None)
    assert check.differences_found == 5 and len(check.tables[0].differences) == 1
    result = await prepare_failback(listing_one, "azure", check, acknowledge=True, quarantine_schema="kept_rows",
                                    quarantine_tag="Incident 42")
    assert result.ok, result.sentence
    assert result.data["differences"]["reconciliation"] == "re-run to list every row"
    assert result.data["quarantine"]["tables"][0]["table"] == "kept_rows.accounts__incident_42"
    assert pg_db.on_primary("SELECT id FROM kept_rows.accounts__incident_42 ORDER BY id") == [
        (2,), (3,), (4,), (500,)]
    assert quarantine_tables(pg_db) == []


async def test_quarantine_alone_keeps_the_first_version_and_is_idempotent(pg_db: ReplicatedDb) -> None:
    """Called directly on a fenced site: copies once, a re-run adds only new keys, a kept row is never replaced."""
    config = config_for(pg_db)
    pg_db.on_primary("INSERT INTO orders (id, account, amount, note) VALUES (1, 7, 10.50, 'first'), "
                     "(2, 7, 3, 'second')")
    assert (await fence(config, "gcp")).ok
    rows = [Divergent("orders", 1, "test"), Divergent("orders", 99, "not there")]
    first = await quarantine(config, "gcp", rows, tag="t1")
    assert first.ok, first.sentence
    assert first.data["tables"][0] | {"keys": None} == {
        "source": "public.orders", "table": f"{SCHEMA}.orders__t1", "rows": 1, "copied": 1, "keys": None,
        "key_count": 2, "keys_truncated": False, "absent": 1}
    assert "orders__t1 1 (keys 1; 1 no longer on gcp)" in first.sentence
    on_old(pg_db, "UPDATE orders SET note = 'edited' WHERE id = 1")
    second = await quarantine(config, "gcp", [*rows, Divergent("orders", 2, "test")], tag="t1")
    assert second.ok and second.data["copied"] == 1 and second.data["rows"] == 2, second.sentence
    assert pg_db.on_primary(f"SELECT id, amount, note FROM {SCHEMA}.orders__t1 ORDER BY id") == [
        (1, 10.5, "first"), (2, 3, "second")]
    nothing = await quarantine(config, "gcp", [], tag="t1")
    assert nothing.ok and nothing.skipped and nothing.data["tables"] == []
    # defaults are not copied: a bigserial's quarantine does not hold on to its sequence, the source can go
    on_old(pg_db, "INSERT INTO accounts (owner, balance) VALUES ('a', 1)")
    serial = await quarantine(config, "gcp", [Divergent("accounts", 1, "x")], tag="t2")
    assert serial.ok and serial.data["rows"] == 1, serial.sentence
    on_old(pg_db, "DROP TABLE accounts")
    assert pg_db.on_primary(f"SELECT owner FROM {SCHEMA}.accounts__t2") == [("a",)]
    bad = await quarantine(config, "gcp", [Divergent("accounts", 1, "x")], tag="t2")
    assert not bad.ok and "table accounts not found on gcp" in bad.sentence


async def test_nothing_is_quarantined_when_the_old_primary_holds_no_differing_row(pg_db: ReplicatedDb) -> None:
    """Only the new primary wrote since promotion: the step is skipped, no schema appears, the resync goes on."""
    config = config_for(pg_db)
    pg_db.on_primary("INSERT INTO accounts (owner, balance) VALUES ('a', 1)")
    pg_db.wait_caught_up()
    assert (await fence(config, "gcp")).ok
    assert (await promote(config, "azure")).ok
    pg_db.on_standby("INSERT INTO accounts (owner, balance) VALUES ('after', 2)")
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    assert check.differences_found == 1
    result = await prepare_failback(config, "azure", check)
    assert result.ok and "quarantine: no row of gcp differs from azure" in result.sentence, result.sentence
    assert result.data["quarantine"] == {"schema": SCHEMA, "tag": None, "rows": 0, "copied": 0, "tables": []}
    assert pg_db.on_primary(f"SELECT count(*) FROM pg_namespace WHERE nspname = '{SCHEMA}'") == [(0,)]

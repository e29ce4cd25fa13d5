"""Reconciliation between two real PostgreSQL 15 clusters: rows, swapped values, watermark, metrics, CLI.

The module's pair replicates a fresh database per test; differences are made by writing on the
standby directly (a subscriber's tables are writable) or with the subscription disabled.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from actions.database.heartbeat import HeartbeatWriter
from actions.reconcile import ReconcileResult, reconcile
from engine.cli import main
from engine.config.database import DatabaseConfig
from tests.support.postgres import ReplicatedDb, wait_until

SITE = {"probes": [{"type": "tcp", "host": "127.0.0.1", "port": 9}]}  # a site needs at least one probe

pytestmark = pytest.mark.real

OLD = "'2020-01-01 00:00:00+00'"
TABLES = [{"name": "accounts", "updated_at": "updated_at", "chunk_rows": 500},
          {"name": "orders", "updated_at": "updated_at", "chunk_rows": 20_000}]


def seed(db: ReplicatedDb, accounts: int = 2000, orders: int = 30_000) -> None:
    db.on_primary(f"INSERT INTO accounts (owner, balance, updated_at) SELECT 'owner ' || g, g * 10, {OLD} "
                  f"FROM generate_series(1, {accounts}) g")
    db.on_primary(f"INSERT INTO orders (account, amount, note, updated_at) SELECT g % 97, (g % 1000) / 10.0, "
                  f"CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END, {OLD} FROM generate_series(1, {orders}) g")
    db.wait_caught_up()


def config_for(db: ReplicatedDb, **reconcile: Any) -> DatabaseConfig:
    section = {"tables": TABLES, **reconcile}
    return DatabaseConfig.model_validate(db.database_config(reconcile=section))


async def run(config: DatabaseConfig, **kwargs: Any) -> ReconcileResult:
    return await reconcile(config, service="api", primary="gcp", now=0.0, **kwargs)


def make_differences(db: ReplicatedDb) -> None:
    """On the standby: one extra row, one missing row, one changed row, two rows with swapped values."""
    db.on_standby(f"INSERT INTO accounts (id, owner, balance, updated_at) VALUES (1000000, 'extra', 1, {OLD})")
    db.on_standby("DELETE FROM orders WHERE id = 12345")
    db.on_standby("UPDATE orders SET amount = amount + 0.01 WHERE id = 777")
    db.on_standby("UPDATE accounts SET balance = CASE id WHEN 10 THEN 200 WHEN 20 THEN 100 END WHERE id IN (10, 20)")


@pytest.mark.parametrize("mode", ["native", "portable"])
async def test_finds_inserted_deleted_updated_and_swapped_rows_and_nothing_else(pg_db: ReplicatedDb,
                                                                                mode: str) -> None:
    """Exactly the five differing rows are found and classified, with either row hash."""
    seed(pg_db)
    make_differences(pg_db)
    result = await run(config_for(pg_db, hash=mode))
    assert result.hash_mode == mode and result.error is None
    found = {(t.table, d.key, d.kind) for t in result.tables for d in t.differences}
    assert found == {("accounts", (1000000,), "missing_on_primary"), ("accounts", (10,), "changed"),
                     ("accounts", (20,), "changed"), ("orders", (12345,), "missing_on_standby"),
                     ("orders", (777,), "changed")}
    assert result.differences_found == 5 and not result.identical
    assert result.sentence == "gcp vs azure: 5 differing rows (accounts 3, orders 2)"
    accounts = result.tables[0]
    assert (accounts.rows_primary, accounts.rows_standby) == (2000, 2001)
    assert accounts.samples[(10,)] == ('(100,10,"owner 10","2020-01-01 00:00:00+00")',
                                    '(200,10,"owner 10","2020-01-01 00:00:00+00")')


async def test_identical_databases_reconcile_clean(pg_db: ReplicatedDb) -> None:
    """Replicated tables with no local changes agree, and the result says so in one sentence."""
    seed(pg_db, accounts=100, orders=1000)
    result = await run(config_for(pg_db))
    assert result.identical, result.sentence
    assert result.sentence == "gcp and azure agree: 2 tables, 1100 rows, 0 metrics"
    assert result.to_dict()["differences_found"] == 0


async def test_rows_newer_than_the_watermark_are_in_flight_not_differences(pg_db: ReplicatedDb) -> None:
    """A row written on the primary after the standby's last applied heartbeat is in flight, named by its key,
    and not waited for while the subscription is paused."""
    seed(pg_db, accounts=100, orders=100)
    pg_db.on_standby("ALTER SUBSCRIPTION failover_sub DISABLE")
    pg_db.on_primary("INSERT INTO accounts (owner, balance) VALUES ('fresh', 5)")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = await run(config_for(pg_db), sleep=sleep)
    assert slept == []  # paused replication cannot deliver it: no wait for it
    assert result.differences_found == 0 and result.tables[0].in_flight == 1
    assert result.sentence.endswith("(1 row still in flight: accounts 101)")
    assert [d.key for d in result.tables[0].in_flight_rows] == [(101,)] and result.exit_code == 1
    after_failover = await run(config_for(pg_db), watermark=None)
    assert after_failover.differences_found == 1
    assert after_failover.tables[0].differences[0].kind == "missing_on_standby"


async def test_heartbeat_watermark_covers_an_in_flight_update_and_delete_while_paused(pg_db: ReplicatedDb) -> None:
    """With beats flowing and the subscription paused, an update and a delete not yet applied are in flight
    (the watermark is the standby's last applied beat); once replication resumes a row only on the standby
    is a real difference again."""
    seed(pg_db, accounts=100, orders=10)
    section = pg_db.database_config(reconcile={"tables": TABLES, "in_flight_margin": "500ms"},
                                    heartbeat={"interval": "1s"})
    config = DatabaseConfig.model_validate(section)
    writer = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
    try:
        await writer.beat(time.time())
        pg_db.wait_caught_up()
        applied = pg_db.on_standby("SELECT extract(epoch FROM written_at)::float8 FROM failover_heartbeat")[0][0]
        pg_db.on_standby("ALTER SUBSCRIPTION failover_sub DISABLE")
        wait_until(lambda: not pg_db.on_standby("SELECT 1 FROM pg_stat_subscription WHERE pid IS NOT NULL"),
                   10, "apply worker to stop")
        await writer.beat(time.time())
        pg_db.on_primary("DELETE FROM accounts WHERE id = 50")
        pg_db.on_primary("UPDATE accounts SET balance = -1, updated_at = now() WHERE id = 51")
        paused = await run(config)
        assert paused.watermark == pytest.approx(float(str(applied)) - 0.5)  # the heartbeat branch, not now()
        assert paused.differences_found == 0, paused.sentence
        assert paused.tables[0].in_flight == 2 and not paused.identical
        pg_db.on_standby("ALTER SUBSCRIPTION failover_sub ENABLE")
        await writer.beat(time.time())
        pg_db.wait_caught_up()
        pg_db.on_standby(f"INSERT INTO accounts (id, owner, balance, updated_at) VALUES (100000, 'extra', 1, {OLD})")
        live = await run(config)
        assert [(d.key, d.kind, d.in_flight) for d in live.tables[0].differences] == [
            ((100000,), "missing_on_primary", False)]
        assert live.tables[0].in_flight == 0 and live.differences_found == 1
    finally:
        await writer.aclose()


async def test_business_metric_mismatch_and_errors_are_reported(pg_db: ReplicatedDb) -> None:
    """A metric off by more than its tolerance fails; one within passes; a failing query is a clear failure."""
    seed(pg_db, accounts=100, orders=100)
    pg_db.on_standby("UPDATE orders SET amount = amount - 5 WHERE id = 50")
    metrics = [{"name": "order_total", "query": "SELECT sum(amount) FROM orders", "tolerance": 1},
               {"name": "order_total_loose", "query": "SELECT sum(amount) FROM orders", "tolerance": 10},
               {"name": "broken", "query": "SELECT sum(nope) FROM orders"},
               {"name": "not_a_number", "query": "SELECT 'NaN'::numeric"},
               {"name": "endless", "query": f"SELECT CASE WHEN inet_server_port() = {pg_db.pair.publisher.port} THEN 1 "
                                            "ELSE 'Infinity'::float8 END"}]
    result = await run(config_for(pg_db, metrics=metrics))
    by_name = {m.name: m for m in result.metrics}
    assert not by_name["not_a_number"].ok  # NaN passes every `diff > tolerance` test: it must be refused
    assert by_name["not_a_number"].reason == "query failed on gcp: the query returned nan, not a finite number"
    assert by_name["endless"].reason == "query failed on azure: the query returned inf, not a finite number"
    by_name = {m.name: m for m in result.metrics}
    assert not by_name["order_total"].ok
    assert by_name["order_total"].reason == "gcp 505 vs azure 500 (difference 5 > tolerance 1)"
    assert by_name["order_total_loose"].ok
    assert not by_name["broken"].ok
    assert by_name["broken"].reason == 'query failed on gcp: column "nope" does not exist'
    assert "metric order_total: gcp 505 vs azure 500" in result.sentence


async def test_table_without_primary_key_and_missing_table_are_refused(pg_pair: Any) -> None:
    """A table without a primary key, or missing on one side, is refused with the reason, never compared."""
    db = pg_pair.replicate(schema="CREATE TABLE loose (a int, b text); CREATE TABLE keyed (id int PRIMARY KEY);",
                           tables=("loose",))
    try:
        db.on_primary("CREATE TABLE only_here (id int PRIMARY KEY)")
        config = DatabaseConfig.model_validate(db.database_config(reconcile={
            "tables": [{"name": "loose"}, {"name": "only_here"}, {"name": "keyed", "key": "other"}]}))
        result = await run(config)
        reasons = [(t.status, t.reason) for t in result.tables]
        assert reasons == [
            ("refused", "table loose on gcp has no primary key: rows cannot be matched (declare `key` with the "
                        "columns of a unique index whose columns are NOT NULL)"),
            ("refused", "table only_here not found on azure"),
            ("refused", "table keyed on gcp: key column other not found")]
        assert result.exit_code == 2
        assert not result.identical
    finally:
        db.drop()


async def test_unreachable_site_gives_a_failed_result(pg_db: ReplicatedDb) -> None:
    """An unreachable standby makes a failed result with the reason, not an exception."""
    section = pg_db.database_config(reconcile={"tables": TABLES})
    section["sites"]["azure"]["port"] = 1  # type: ignore[index]
    result = await run(DatabaseConfig.model_validate(section))
    assert result.error == "azure unreachable: connect refused"
    assert result.sentence == "reconciliation failed: azure unreachable: connect refused"


def write_config(tmp_path: Path, db: ReplicatedDb) -> Path:
    config = {"instance": {"id": "gcp-1", "site": "gcp"},
              "services": {"api": {"active": "gcp",
                                   "sites": {"gcp": SITE, "azure": SITE},
                                   "database": db.database_config(reconcile={"tables": TABLES})}}}
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_cli_reconcile_prints_the_differences(pg_db: ReplicatedDb, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``failover-engine reconcile`` prints each differing row and exits 1; ``db init`` exits 0."""
    seed(pg_db, accounts=50, orders=50)
    pg_db.on_standby("DELETE FROM accounts WHERE id = 7")
    path = write_config(tmp_path, pg_db)
    import asyncio

    code = await asyncio.to_thread(main, ["reconcile", "--config", str(path), "api"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[0] == "gcp vs azure: 1 differing row (accounts 1)"
    assert "    key 7: missing on azure" in out
    code = await asyncio.to_thread(main, ["db", "init", "--config", str(path), "api"])
    assert code == 0, capsys.readouterr()
    code = await asyncio.to_thread(main, ["reconcile", "--config", str(path), "nope"])
    assert code == 2

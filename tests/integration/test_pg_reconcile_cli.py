"""The operator's commands on a real PostgreSQL 15 pair: ``reconcile --check``, ``check-config --connect``,
``db init`` making the publication and subscription, and exit codes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli import main
from tests.support.postgres import PgPair, ReplicatedDb, wait_until

pytestmark = pytest.mark.real

SCHEMA = "CREATE TABLE items (sku text PRIMARY KEY, qty int NOT NULL, updated_at timestamptz DEFAULT now());"


def site_probes(db: ReplicatedDb) -> dict[str, Any]:
    """Each site probed at its own database port (a site needs at least one probe)."""
    return {"gcp": {"probes": [{"type": "tcp", "host": db.pair.publisher.host, "port": db.pair.publisher.port}]},
            "azure": {"probes": [{"type": "tcp", "host": db.pair.subscriber.host, "port": db.pair.subscriber.port}]}}


def write_config(tmp_path: Path, db: ReplicatedDb, tables: list[dict[str, Any]], **sites: dict[str, Any]) -> Path:
    section = db.database_config(reconcile={"tables": tables})
    for site, extra in sites.items():
        section["sites"][site].update(extra)  # type: ignore[index]
    config = {"instance": {"id": "gcp-1", "site": "gcp"},
              "services": {"api": {"active": "gcp", "sites": site_probes(db), "database": section}}}
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def unreplicated(pair: PgPair) -> ReplicatedDb:
    """The same schema on both servers, no publication and no subscription yet."""
    name = f"plain{os.getpid()}_{id(pair) % 10000}"
    for cluster in (pair.publisher, pair.subscriber):
        cluster.execute(f'CREATE DATABASE "{name}"')
        cluster.execute(SCHEMA, name)
    return ReplicatedDb(pair, name)


async def cli(*args: str) -> int:
    return await asyncio.to_thread(main, list(args))


async def test_check_reports_missing_tables_and_columns_before_a_run(pg_pair: PgPair, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``reconcile --check`` and ``check-config --connect`` name a missing table or column (exit 1), pass a
    ready table (exit 0), and an unreachable site is exit 2."""
    db = unreplicated(pair=pg_pair)
    try:
        path = write_config(tmp_path, db, [{"name": "items"}])
        assert await cli("reconcile", "--check", "--config", str(path), "api") == 0
        out = capsys.readouterr().out
        assert "table items: ok: key (sku) from the primary key; compares qty, sku, updated_at" in out
        path = write_config(tmp_path, db, [{"name": "items", "exclude": ["nope"]}, {"name": "ghost"}])
        assert await cli("reconcile", "--check", "--config", str(path), "api") == 1
        out = capsys.readouterr().out
        assert "table items: PROBLEM: table items on gcp: excluded column nope not found" in out
        assert "table ghost: PROBLEM: table ghost not found on gcp" in out
        assert await cli("check-config", "--connect", str(path)) == 1
        assert "api: 2 problems" in capsys.readouterr().out
        path = write_config(tmp_path, db, [{"name": "items"}], azure={"port": 1})
        assert await cli("reconcile", "--check", "--config", str(path), "api") == 2
        assert await cli("reconcile", "--config", str(path), "api") == 2
    finally:
        db.drop()


async def test_db_init_creates_publication_and_subscription(pg_pair: PgPair, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """On a pair with neither, ``db init`` creates both; rows then replicate; a second run changes nothing."""
    db = unreplicated(pair=pg_pair)
    try:
        db.on_primary("INSERT INTO items (sku, qty) VALUES ('a', 1)")
        path = write_config(tmp_path, db, [{"name": "items"}])
        assert await cli("db", "init", "--config", str(path), "api") == 0
        out = capsys.readouterr().out
        assert "publication: ok: created failover_pub on gcp (items, failover_heartbeat)" in out
        assert "subscription: ok: created failover_sub on azure from gcp" in out
        wait_until(lambda: db.on_standby("SELECT count(*) FROM items")[0][0] == 1, 15, "the initial copy")
        assert await cli("db", "init", "--config", str(path), "api") == 0
        assert "publication: ok: failover_pub exists on gcp" in capsys.readouterr().out
        assert await cli("reconcile", "--config", str(path), "api") == 0
    finally:
        db.drop()


async def test_db_init_without_privilege_prints_the_sql_and_the_privilege(pg_pair: PgPair, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A role that may not create the subscription gets the exact statement to run and what it lacks (exit 1)."""
    db = unreplicated(pair=pg_pair)
    try:
        pg_pair.subscriber.execute("DO $$ BEGIN CREATE ROLE limited LOGIN; EXCEPTION WHEN duplicate_object THEN "
                                   "NULL; END $$")
        db.on_standby("GRANT CREATE ON SCHEMA public TO limited")
        path = write_config(tmp_path, db, [{"name": "items"}], azure={"user": "limited"})
        assert await cli("db", "init", "--config", str(path), "api") == 1
        out = capsys.readouterr().out
        assert ("subscription: failed: not allowed to create it on azure: needs superuser (PostgreSQL 16: "
                "pg_create_subscription); run as such a role: CREATE SUBSCRIPTION \"failover_sub\" CONNECTION") in out
        assert "PUBLICATION \"failover_pub\" WITH (slot_name = 'failover_sub');" in out
    finally:
        db.drop()
        pg_pair.subscriber.execute("DROP ROLE IF EXISTS limited")

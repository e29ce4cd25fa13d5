"""Replication slot retention on a real PostgreSQL pair, watched by an engine in this process.

With the subscriber stopped, the publisher's logical slot keeps every WAL segment written since: the
engine reads ``pg_replication_slots`` on the primary every heartbeat interval, exports
``failover_engine_replication_slot_retained_bytes``, shows it in the status and raises one alert when
it passes ``slot_retained_alert`` (one more when it clears). ``db reinit-subscription`` then brings a
subscription whose slot was dropped back with a full copy, and refuses when it would lose data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli import main
from engine.config.loader import parse_config
from engine.runtime.daemon import Engine
from tests.support.postgres import ReplicatedDb, wait_until

pytestmark = pytest.mark.real
LIMIT = 64 * 1024  # slot_retained_alert of the engine under test


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"not seen within {timeout:g}s: {what}")


def config_path(pg_db: ReplicatedDb, tmp_path: Path) -> Path:
    document = {
        "instance": {"id": "e1", "site": "gcp", "listen": "127.0.0.1:0", "tick": "200ms"},
        "journal": {"path": str(tmp_path / "journal.db")},
        "services": {"app": {
            "active": "gcp", "policy": {"auto_failover": False},
            "sites": {"gcp": {"probes": [{"type": "tcp", "host": pg_db.pair.publisher.host,
                                           "port": pg_db.pair.publisher.port}]},
                      "azure": {"probes": [{"type": "tcp", "host": pg_db.pair.subscriber.host,
                                            "port": pg_db.pair.subscriber.port}]}},
            "database": pg_db.database_config(
                slot_retained_alert="64KiB", heartbeat={"interval": "200ms"},
                lag_probe={"interval": "1s", "timeout": "500ms", "statement_timeout": "500ms"},
                reconcile={"enabled": False}),
        }},
    }
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
async def engine(pg_db: ReplicatedDb, tmp_path: Path) -> AsyncIterator[tuple[Engine, Path]]:
    path = config_path(pg_db, tmp_path)
    running = Engine(parse_config(path.read_text(), env={}))
    await running.start(serve_api=False)
    try:
        yield running, path
    finally:
        await running.stop()
        if not pg_db.pair.subscriber.running:
            pg_db.pair.subscriber.start()


def slot_line(engine: Engine) -> dict[str, Any] | None:
    lines = engine.status()["services"]["app"]["replication_slots"] or []
    return next((s for s in lines if s.get("slot") == "failover_sub"), None)


def gauge(engine: Engine) -> float | None:
    prefix = 'failover_engine_replication_slot_retained_bytes{service="app",site="gcp",slot="failover_sub"}'
    line = next((x for x in engine.view.metrics_text().decode().splitlines() if x.startswith(prefix)), None)
    return None if line is None else float(line.split()[-1])


def alerts(engine: Engine) -> list[str]:
    assert engine.journal is not None
    return [e.message for e in reversed(engine.journal.events(service="app", kind="alert"))
            if "replication slot" in e.message]


async def value(x: Any) -> Any:
    return x


async def test_a_stopped_subscriber_fills_the_slot_alerts_once_and_reinit_restores_replication(
        engine: tuple[Engine, Path], pg_db: ReplicatedDb) -> None:
    """Subscriber down + writes: retained bytes grow past 64 KiB, one alert; slot dropped: cleared; the reinit
    command copies everything again on a new slot and streaming resumes."""
    running, path = engine
    first = await until(lambda: value(slot_line(running)), "the slot's status line")
    assert first["over"] is False and first["alert_bytes"] == LIMIT and first["site"] == "gcp"

    pg_db.pair.subscriber.stop()
    pg_db.on_primary("INSERT INTO orders (account, amount, note) "
                     "SELECT g, g, repeat('x', 200) FROM generate_series(1, 2000) g")
    line = await until(lambda: value((s := slot_line(running)) is not None and s["over"] and s),
                       "the slot over its alert size")
    assert line["retained_bytes"] > LIMIT and line["active"] is False
    assert (gauge(running) or 0) > LIMIT
    assert len(alerts(running)) == 1
    assert alerts(running)[0].startswith(f"replication slot failover_sub on gcp (app) retains {line['retained_bytes']}"
                                         f" bytes of WAL, over slot_retained_alert {LIMIT}")
    pg_db.on_primary("INSERT INTO orders (account, amount) VALUES (1, 1)")
    await asyncio.sleep(0.6)  # three more readings, still over: no second alert
    assert len(alerts(running)) == 1

    pg_db.on_primary("SELECT pg_drop_replication_slot('failover_sub')")
    await until(lambda: value(len(alerts(running)) == 2), "the alert clearing")
    assert alerts(running)[1] == ("replication slot failover_sub on gcp (app) is back under slot_retained_alert "
                                  f"{LIMIT}: the slot is gone")
    assert gauge(running) is None

    pg_db.pair.subscriber.start()
    wanted = pg_db.on_primary("SELECT count(*) FROM orders")[0][0]
    assert pg_db.on_standby("SELECT count(*) FROM orders")[0][0] == 0
    assert await asyncio.to_thread(main, ["db", "reinit-subscription", "--config", str(path), "app",
                                          "--site", "gcp", "--dry-run"]) == 1  # the active site: refused
    assert await asyncio.to_thread(main, ["db", "reinit-subscription", "--config", str(path), "app",
                                          "--site", "azure"]) == 0
    wait_until(lambda: pg_db.on_standby("SELECT count(*) FROM orders")[0][0] == wanted, 20, "the copy")
    pg_db.on_primary("INSERT INTO orders (account, amount, note) VALUES (7, 7, 'after reinit')")
    wait_until(lambda: bool(pg_db.on_standby("SELECT 1 FROM orders WHERE note = 'after reinit'")), 20, "streaming")
    again = await until(lambda: value((s := slot_line(running)) is not None and s["active"] and s), "the new slot")
    assert again["over"] is False


async def test_reinit_refuses_to_empty_a_standby_holding_rows_the_primary_lacks(
        pg_db: ReplicatedDb, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A row only on the standby: the reinit refuses naming it, and --dry-run with a clean standby prints the SQL."""
    path = config_path(pg_db, tmp_path)
    pg_db.on_standby("ALTER SUBSCRIPTION failover_sub DISABLE")
    wait_until(lambda: not pg_db.on_primary("SELECT 1 FROM pg_replication_slots WHERE active"), 10, "slot inactive")
    pg_db.on_primary("SELECT pg_drop_replication_slot('failover_sub')")
    pg_db.on_primary("INSERT INTO accounts (owner, balance) VALUES ('on both', 1)")
    pg_db.on_standby("INSERT INTO accounts (id, owner, balance) VALUES (424242, 'only here', 5)")
    assert await asyncio.to_thread(main, ["db", "reinit-subscription", "--config", str(path), "app",
                                          "--site", "azure", "--json"]) == 1
    refused = json.loads(capsys.readouterr().out)
    assert refused["refusals"] == ['"public"."accounts" on azure holds 1 row(s) gcp does not have (key 424242): '
                                   "emptying it would lose them; reconcile and keep them first "
                                   "(failover-engine reconcile)"]
    assert pg_db.on_standby("SELECT count(*) FROM accounts WHERE id = 424242")[0][0] == 1  # nothing changed

    pg_db.on_standby("DELETE FROM accounts WHERE id = 424242")
    assert await asyncio.to_thread(main, ["db", "reinit-subscription", "--config", str(path), "app",
                                          "--site", "azure", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "  would run on azure: ALTER SUBSCRIPTION failover_sub DISABLE;",
        "  would run on azure: ALTER SUBSCRIPTION failover_sub SET (slot_name = NONE);",
        "  would run on azure: DROP SUBSCRIPTION failover_sub;",
        "  would run on azure: CREATE SUBSCRIPTION failover_sub CONNECTION '<gcp, password masked>' PUBLICATION "
        "failover_pub WITH (copy_data = true, create_slot = true, slot_name = 'failover_sub');",
        "dry run: 4 statement(s) would run; nothing changed"]

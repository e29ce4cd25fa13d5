"""A switchover's database half on a real PostgreSQL 15 pair: fence, drain, then a promotion that ends the
apply worker at once instead of waiting for it to notice the DISABLE."""

from __future__ import annotations

import psycopg
import pytest

from actions.database.fence import end_client_sessions, fence
from actions.database.promote import promote
from actions.database.switchover import drain
from engine.config.database import DatabaseConfig
from tests.support import free_port
from tests.support.postgres import ReplicatedDb, wait_until

pytestmark = pytest.mark.real


async def test_after_a_drain_the_promotion_ends_the_apply_worker_and_keeps_every_row(pg_db: ReplicatedDb) -> None:
    """Fence and drain, then promote with end_apply_worker: the worker is ended, every row is there, writes go."""
    config = DatabaseConfig.model_validate(pg_db.database_config())
    pg_db.on_primary("INSERT INTO accounts (owner, balance) SELECT 'o' || g, g FROM generate_series(1, 20) g")
    pg_db.on_primary("INSERT INTO orders (account, amount) SELECT 1, g FROM generate_series(1, 500) g")
    assert pg_db.on_standby("SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL") != [(0,)]
    assert (await fence(config, "gcp")).ok
    drained = await drain(config, "gcp", "azure", writer_site="gcp", timeout=15)
    assert drained.ok, drained.sentence
    result = await promote(config, "azure", end_apply_worker=True)
    assert result.ok, result.sentence
    assert "1 worker ended at once" in result.sentence
    assert pg_db.on_standby("SELECT count(*) FROM pg_stat_subscription WHERE subname = 'failover_sub' "
                            "AND pid IS NOT NULL") == [(0,)]
    assert pg_db.on_standby("SELECT count(*), sum(amount) FROM orders") == [(500, 125250)]
    assert pg_db.on_standby("INSERT INTO orders (account, amount) VALUES (1, 1) RETURNING amount") == [(1,)]


async def test_other_subscriptions_to_the_old_primary_are_still_waited_for(pg_db: ReplicatedDb) -> None:
    """Only the configured subscription (the one the drain proved) is ended at once; another is disabled and
    waited for, never cut mid-transaction."""
    pg_db.on_primary("CREATE TABLE side (id int PRIMARY KEY); CREATE PUBLICATION side_pub FOR TABLE side")
    pg_db.on_standby("CREATE TABLE side (id int PRIMARY KEY)")
    pg_db.on_standby(f"CREATE SUBSCRIPTION side_sub CONNECTION '{pg_db.primary_dsn}' PUBLICATION side_pub")
    config = DatabaseConfig.model_validate(pg_db.database_config())
    result = await promote(config, "azure", end_apply_worker=True)
    assert result.ok, result.sentence
    subscription, other = result.steps[0], result.steps[1]
    assert "ended at once" in subscription.detail
    assert "side_sub (disabled, slot side_sub kept on gcp" in other.detail and "ended" not in other.detail


async def test_ending_client_sessions_breaks_a_read_only_session_on_the_fenced_primary(pg_db: ReplicatedDb) -> None:
    """A session opened after the fence is read-only and kept by a pool; end_client_sessions breaks it."""
    config = DatabaseConfig.model_validate(pg_db.database_config())
    assert (await fence(config, "gcp")).ok
    async with await psycopg.AsyncConnection.connect(pg_db.primary_dsn, autocommit=True) as client:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await client.execute("INSERT INTO orders (account, amount) VALUES (1, 1)")
        assert not client.broken  # a read-only refusal leaves the connection usable: a pool keeps it
        step = await end_client_sessions(config, "gcp", timeout=5)
        assert step.status == "ok" and step.detail == "1 client session ended on gcp", step
        with pytest.raises(psycopg.OperationalError):
            await client.execute("SELECT 1")
        assert client.broken
    # a client asking for a read-write session is refused by the fenced primary at connect (docs/switchover.md)
    with pytest.raises(psycopg.OperationalError, match="read-only"):
        await psycopg.AsyncConnection.connect(pg_db.primary_dsn + " target_session_attrs=read-write")


async def test_ending_client_sessions_on_an_unreachable_server_is_skipped(pg_db: ReplicatedDb) -> None:
    """An unreachable old primary gives a skipped step with the reason, never an exception."""
    section = pg_db.database_config()
    sites = dict(section["sites"])  # type: ignore[call-overload]
    sites["gcp"] = {**sites["gcp"], "port": free_port()}
    config = DatabaseConfig.model_validate({**section, "sites": sites})
    step = await end_client_sessions(config, "gcp", timeout=2)
    assert step.status == "skipped" and "gcp unreachable" in step.detail, step


async def test_a_drain_whose_standby_does_not_apply_fails_within_its_timeout(pg_db: ReplicatedDb) -> None:
    """With the subscription disabled the marker never arrives: the drain fails naming the lagging standby."""
    config = DatabaseConfig.model_validate(pg_db.database_config())
    pg_db.on_standby("ALTER SUBSCRIPTION failover_sub DISABLE")
    result = await drain(config, "gcp", "azure", writer_site="gcp", timeout=1.0)
    assert not result.ok
    assert "azure did not apply the marker within 1s" in result.sentence
    wait_until(lambda: pg_db.on_standby("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                        "'failover-engine drain'") == [(0,)], 5, "the drain's session closed")


async def test_a_drain_to_an_unreachable_standby_fails_with_the_reason(pg_db: ReplicatedDb) -> None:
    """The standby's session, opened while the marker is written, failing to connect fails the drain."""
    section = pg_db.database_config()
    sites = dict(section["sites"])  # type: ignore[call-overload]
    sites["azure"] = {**sites["azure"], "port": free_port()}
    config = DatabaseConfig.model_validate({**section, "sites": sites})
    result = await drain(config, "gcp", "azure", writer_site="gcp", timeout=5.0)
    assert not result.ok
    assert [s.name for s in result.steps] == ["marker", "connect"], result.sentence

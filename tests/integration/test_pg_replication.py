"""Two real PostgreSQL 15 clusters with logical replication: lag, heartbeat, fence, promote, consistency.

Site ``gcp`` is the publisher (primary) and ``azure`` the subscriber (standby) of a fresh database
per test (``pg_db``); the clusters start once for the module.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from actions.consistency import CommitPoint, check_consistency
from actions.database.failback import prepare_failback
from actions.database.fence import fence
from actions.database.heartbeat import HeartbeatWriter, init_database
from actions.database.promote import promote
from actions.database.reverse import drop_reverse_slot
from actions.reconcile import reconcile
from engine.config.database import DatabaseConfig
from engine.core.clock import ManualClock
from probes.postgres import PostgresLagProbe
from tests.support.postgres import ReplicatedDb, wait_until

pytestmark = pytest.mark.real


def config_for(db: ReplicatedDb, **overrides: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate(db.database_config(**overrides))


async def poll(check: Any, timeout: float = 15.0) -> Any:
    """Await ``check()`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_slot_lag_grows_while_subscription_disabled_and_returns_to_zero(pg_db: ReplicatedDb) -> None:
    """Disabling the subscription makes the signal fail with slot lag and a dead apply worker; enabling heals it."""
    config = config_for(pg_db)
    clock = ManualClock(1000.0)
    probe = PostgresLagProbe(config, service="api", primary="gcp", clock=clock)
    writer = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
    try:
        await writer.beat(clock.now())
        pg_db.wait_caught_up()
        first = await probe.observe()
        assert first.ok, first.reason
        assert first.details["slot_lag_bytes"] == 0 and first.details["apply_worker_alive"] is True
        pg_db.on_standby("ALTER SUBSCRIPTION failover_sub DISABLE")
        wait_until(lambda: not pg_db.on_standby("SELECT 1 FROM pg_stat_subscription WHERE pid IS NOT NULL"),
                   10, "apply worker to stop")
        pg_db.on_primary("INSERT INTO accounts (owner, balance) SELECT 'o' || g, g FROM generate_series(1, 5000) g")
        down = await probe.observe()
        assert not down.ok
        assert down.details["slot_lag_bytes"] > 100_000
        assert down.details["apply_worker_alive"] is False
        assert down.reason.startswith("slot lag ") and "apply worker not running (subscription disabled)" in down.reason
        pg_db.on_standby("ALTER SUBSCRIPTION failover_sub ENABLE")

        async def healed() -> bool:
            obs = await probe.observe()
            return obs.ok and obs.details["slot_lag_bytes"] == 0

        await poll(healed)
    finally:
        await writer.aclose()
        await probe.aclose()


async def test_heartbeat_lag_is_zero_on_an_idle_primary(pg_db: ReplicatedDb) -> None:
    """An hour without application writes still reads as caught up, because heartbeats keep flowing."""
    config = config_for(pg_db)
    clock = ManualClock(1_700_000_000.0)
    probe = PostgresLagProbe(config, service="api", primary="gcp", clock=clock)
    writer = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
    try:
        point = await writer.beat(clock.now())
        assert point.heartbeat_at == clock.now() and point.lsn and point.site == "gcp"
        clock.advance(3600)
        await writer.beat(clock.now())
        pg_db.wait_caught_up()
        obs = await probe.observe()
        assert obs.ok and obs.value == 0.0, obs.reason
        assert obs.reason.startswith("heartbeat lag 0.0s")
        assert obs.details["primary_commit"]["heartbeat_at"] == clock.now()
    finally:
        await writer.aclose()
        await probe.aclose()


async def test_heartbeat_lag_counts_when_the_standby_falls_behind(pg_db: ReplicatedDb) -> None:
    """With the subscription disabled, heartbeat lag is the gap between the primary's and the standby's beat."""
    config = config_for(pg_db, lag_probe={"max_lag": "30s"})
    probe = PostgresLagProbe(config, service="api", primary="gcp", clock=ManualClock(1045.0))
    writer = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
    try:
        await writer.beat(1000.0)
        pg_db.wait_caught_up()
        pg_db.on_standby("ALTER SUBSCRIPTION failover_sub DISABLE")
        await writer.beat(1042.0)
        obs = await probe.observe()
        assert obs.value == 42.0
        assert obs.reason.startswith("heartbeat lag 42.0s > 30s, slot lag ")
    finally:
        await writer.aclose()
        await probe.aclose()


async def test_idle_primary_with_a_beat_two_intervals_old_reads_caught_up(pg_db: ReplicatedDb) -> None:
    """The last beat 10 s old (interval 5 s, writer between beats) and no other write: still 0 s and ok."""
    config = config_for(pg_db)
    clock = ManualClock(1_700_000_000.0)
    probe = PostgresLagProbe(config, service="api", primary="gcp", clock=clock)
    writer = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
    try:
        await writer.beat(clock.now())
        pg_db.wait_caught_up()
        clock.advance(10.0)
        obs = await probe.observe()
        assert obs.ok and obs.value == 0.0, obs.reason
        assert obs.details["primary_heartbeat_age_s"] == 10.0 and obs.details["heartbeat_age_s"] == 10.0
    finally:
        await writer.aclose()
        await probe.aclose()


async def test_no_heartbeat_writer_and_a_blocked_apply_worker_fail_the_signal(pg_db: ReplicatedDb) -> None:
    """The writer stopped and the apply worker is stuck on a lock: the lag still reads 0, the signal fails."""
    config = config_for(pg_db)
    clock = ManualClock(1_700_000_000.0)
    probe = PostgresLagProbe(config, service="api", primary="gcp", clock=clock)
    writer = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
    await writer.beat(clock.now())
    await writer.aclose()  # the writer stops here
    pg_db.wait_caught_up()
    blocker = await psycopg.AsyncConnection.connect(pg_db.standby_dsn)
    try:
        await blocker.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        pg_db.on_primary("INSERT INTO accounts (owner, balance) SELECT 'x', g FROM generate_series(1, 2000) g")
        wait_until(lambda: bool(pg_db.on_standby("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                                 "AND backend_type = 'logical replication worker'")),
                   10, "the apply worker to block on the lock")
        first = await probe.observe()
        assert first.ok and first.value == 0.0, first.reason  # nothing stale yet
        assert first.details["apply_worker_alive"] is True and first.details["slot_lag_bytes"] > 0
        clock.advance(20.0)
        silent = await probe.observe()
        assert not silent.ok and silent.value == 0.0
        assert "no heartbeat on gcp for 20s (is the heartbeat writer running?)" in silent.reason
        assert "apply stalled" not in silent.reason
        clock.advance(15.0)
        stuck = await probe.observe()
        assert "apply stalled for 35s (slot position not moving)" in stuck.reason, stuck.reason
    finally:
        await blocker.close()
        await probe.aclose()


async def test_fence_makes_the_old_primary_refuse_an_insert(pg_db: ReplicatedDb) -> None:
    """After the fence a new session cannot INSERT, an old one was ended, and replication kept running."""
    config = config_for(pg_db)
    walsender = pg_db.on_primary("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'failover_sub'")[0][0]
    assert walsender is not None
    victim = await psycopg.AsyncConnection.connect(pg_db.primary_dsn, autocommit=True)
    victim_pid = victim.info.backend_pid
    try:
        result = await fence(config, "gcp")
        assert result.ok, result.sentence
        assert [s.name for s in result.steps] == ["read-only", "sessions", "verify"]
        assert "1 client session ended" in result.sentence
        with pytest.raises(psycopg.OperationalError):
            await victim.execute("SELECT 1")
    finally:
        await victim.close()
    async with await psycopg.AsyncConnection.connect(pg_db.primary_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute("INSERT INTO accounts (owner, balance) VALUES ('late', 1)")
    # not timing-dependent: once the ended session is gone, the same walsender must still be there for a
    # while (a terminated one would be gone too, and a reconnect would come back with another pid)
    wait_until(lambda: not pg_db.on_primary(f"SELECT 1 FROM pg_stat_activity WHERE pid = {victim_pid}"), 10,
               "the ended session to exit")
    for _ in range(10):
        assert pg_db.on_primary("SELECT active_pid FROM pg_replication_slots "
                                "WHERE slot_name = 'failover_sub'") == [(walsender,)]
        await asyncio.sleep(0.05)
    again = await fence(config, "gcp")
    assert again.ok, again.sentence


async def test_promotion_lets_an_insert_without_id_succeed_and_is_idempotent(pg_db: ReplicatedDb) -> None:
    """Promotion disables the subscription and moves sequences past max(id), so default ids do not collide."""
    config = config_for(pg_db, promotion={"sequence_margin": 100})
    pg_db.on_primary("INSERT INTO accounts (owner, balance) SELECT 'o' || g, g FROM generate_series(1, 50) g")
    pg_db.on_primary("INSERT INTO orders (account, amount) SELECT g, g FROM generate_series(1, 70) g")
    pg_db.wait_caught_up()
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg_db.on_standby("BEGIN; INSERT INTO accounts (owner, balance) VALUES ('x', 1); ROLLBACK")
    result = await promote(config, "azure")
    assert result.ok, result.sentence
    assert "slot failover_sub kept on gcp" in result.sentence
    assert "2 of 2 moved" in result.sentence
    again = await promote(config, "azure")
    assert again.ok, again.sentence
    assert "already disabled" in again.sentence and "0 of 2 moved" in again.sentence
    rows = pg_db.on_standby("INSERT INTO accounts (owner, balance) VALUES ('new', 1) RETURNING id")
    assert rows == [(151,)]
    assert pg_db.on_standby("INSERT INTO orders (account, amount) VALUES (1, 1) RETURNING id") == [(171,)]


async def test_promotion_also_disables_other_subscriptions_reading_from_the_old_primary(pg_db: ReplicatedDb) -> None:
    """A second enabled subscription to the old primary is disabled and named; one elsewhere is not touched."""
    pg_db.on_primary("CREATE TABLE side (id int PRIMARY KEY); CREATE PUBLICATION side_pub FOR TABLE side")
    pg_db.on_standby("CREATE TABLE side (id int PRIMARY KEY)")
    pg_db.on_standby(f"CREATE SUBSCRIPTION side_sub CONNECTION '{pg_db.primary_dsn}' PUBLICATION side_pub")
    pg_db.on_standby("CREATE SUBSCRIPTION elsewhere CONNECTION 'host=192.0.2.1 port=5432 dbname=x' "
                     "PUBLICATION p WITH (connect = false)")  # disabled, slotless: never touched
    result = await promote(config_for(pg_db), "azure")
    assert result.ok, result.sentence
    assert [s.name for s in result.steps] == ["subscription", "other subscriptions", "reverse slot", "sequences",
                                              "writes"]
    assert "other subscriptions: also pointing at gcp: side_sub (disabled, slot side_sub kept on gcp" \
        in result.sentence
    assert pg_db.on_standby("SELECT subname, subenabled FROM pg_subscription ORDER BY 1") == [
        ("elsewhere", False), ("failover_sub", False), ("side_sub", False)]
    pg_db.on_primary("INSERT INTO side VALUES (1)")
    await asyncio.sleep(0.3)
    assert pg_db.on_standby("SELECT count(*) FROM side") == [(0,)]


async def test_promotion_does_not_allow_writes_when_sequences_fail(pg_db: ReplicatedDb,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed sequence step leaves the database fenced and says so: writes would collide on ids."""
    import actions.database.promote as promote_module

    async def broken(*_: Any, **__: Any) -> Any:
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    monkeypatch.setattr(promote_module, "sync_sequences", broken)
    pg_db.on_standby(f'ALTER DATABASE "{pg_db.dbname}" SET default_transaction_read_only = on')
    result = await promote(config_for(pg_db), "azure")
    assert not result.ok
    assert "sequences failed (statement timeout); writes failed (not allowed: sequences were not synced)" \
        in result.sentence
    assert pg_db.on_standby("SHOW default_transaction_read_only") == [("on",)]


async def test_promotion_moves_an_unowned_default_sequence_and_an_int4_one(pg_pair: Any) -> None:
    """A ``DEFAULT nextval`` on a sequence no column owns, and a ``serial`` (int4) sequence, both move."""
    schema = ("CREATE SEQUENCE shared_ids AS integer; "
              "CREATE TABLE invoices (id integer PRIMARY KEY DEFAULT nextval('shared_ids'), v int); "
              "CREATE TABLE small (id serial PRIMARY KEY, v int);")
    db = pg_pair.replicate(schema=schema, tables=("invoices", "small"))
    try:
        db.on_primary("INSERT INTO invoices (v) SELECT g FROM generate_series(1, 30) g")
        db.on_primary("INSERT INTO small (v) SELECT g FROM generate_series(1, 40) g")
        db.wait_caught_up()
        result = await promote(config_for(db, promotion={"sequence_margin": 100}), "azure")
        assert result.ok, result.sentence
        moved = {m["sequence"]: (m["table"], m["after"]) for m in result.data["sequences"]}
        assert moved == {"shared_ids": ("invoices", 130), "small_id_seq": ("small", 140)}
        assert db.on_standby("INSERT INTO invoices (v) VALUES (0) RETURNING id") == [(131,)]
        assert db.on_standby("INSERT INTO small (v) VALUES (0) RETURNING id") == [(141,)]
    finally:
        db.drop()


async def test_consistency_reports_the_loss_window_when_the_publisher_dies_with_writes_in_flight(
        pg_db: ReplicatedDb) -> None:
    """Writes after the last replicated heartbeat are the loss window: 42 s against an RPO of 30 s."""
    config = config_for(pg_db)
    writer = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
    probe = PostgresLagProbe(config, service="api", primary="gcp", clock=ManualClock(10_100.0))
    try:
        await writer.beat(10_000.0)
        pg_db.wait_caught_up()
        pg_db.on_standby("ALTER SUBSCRIPTION failover_sub DISABLE")
        pg_db.on_primary("INSERT INTO accounts (owner, balance) SELECT 'lost', g FROM generate_series(1, 10) g")
        last_known = await writer.beat(10_042.0)
        assert (await probe.observe()).value == 42.0
    finally:
        await writer.aclose()
    pg_db.pair.publisher.stop("immediate")
    gone = await probe.observe()
    assert gone.value == 42.0 and gone.details["heartbeat_age_s"] == 100.0
    assert gone.reason == ("heartbeat lag 42.0s > 30s, primary gcp unreachable: connect refused "
                           "(lag measured to the last known primary commit)")
    promoted = await promote(config, "azure")
    assert promoted.ok, promoted.sentence
    assert "detached (gcp unreachable" in promoted.sentence
    assert last_known.primary == "gcp" and last_known.site == "gcp"
    result = await check_consistency(config, "azure", last_known, rpo=30.0)
    assert result.status == "rpo_breached" and result.loss_window_s == 42.0
    assert result.lsn_gap_bytes is not None and result.lsn_gap_bytes > 0  # the lost inserts' WAL
    assert result.sentence == (f"RPO breached: at least about 42 s of writes may be lost (RPO 30s; writes after "
                               f"the last heartbeat (up to 5s) are not counted); {result.lsn_gap_bytes} B of its "
                               f"WAL before the last known commit LSN were not applied")
    within = await check_consistency(config, "azure", last_known, rpo=60.0)
    assert within.ok and within.sentence.startswith("ok: about 42 s of writes may be lost, within RPO 1m")


async def test_consistency_reads_only_the_last_known_writers_beats(pg_db: ReplicatedDb) -> None:
    """Two engines beat on the primary, the azure one with its clock 60 s ahead: only gcp's beats are compared."""
    config = config_for(pg_db)
    gcp = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
    azure = HeartbeatWriter(config, writer_site="azure", primary="gcp")
    try:
        await gcp.beat(10_000.0)
        await azure.beat(10_060.0)
        pg_db.wait_caught_up()
        pg_db.on_standby("ALTER SUBSCRIPTION failover_sub DISABLE")
        wait_until(lambda: not pg_db.on_standby("SELECT 1 FROM pg_stat_subscription WHERE pid IS NOT NULL"),
                   10, "apply worker to stop")
        pg_db.on_primary("INSERT INTO accounts (owner, balance) SELECT 'lost', g FROM generate_series(1, 10) g")
        last_known = await gcp.beat(10_042.0)
    finally:
        await gcp.aclose()
        await azure.aclose()
    result = await check_consistency(config, "azure", last_known, rpo=30.0)
    assert result.status == "rpo_breached" and result.loss_window_s == 42.0, result.sentence
    assert result.new_primary_latest is not None and result.new_primary_latest.site == "gcp"
    caught_up = await check_consistency(config, "azure", CommitPoint(10_000.0, None, "gcp", "gcp"), rpo=30.0)
    assert caught_up.loss_window_s == 0.0
    elsewhere = await check_consistency(config, "azure", CommitPoint(10_000.0, None, "gcp", "azure"), rpo=30.0)
    assert elsewhere.status == "unknown"  # a point of another primary is never compared
    assert elsewhere.sentence == ("data loss unknown: the last known commit point was taken on azure, "
                                  "not on the old primary gcp")


async def test_failback_replicates_back_without_recopying_after_a_clean_reconciliation(pg_db: ReplicatedDb) -> None:
    """After promotion and a clean reconciliation, the old primary subscribes to the new one and catches up."""
    config = config_for(pg_db, reconcile={"tables": [{"name": "accounts"}, {"name": "orders"}]})
    pg_db.on_primary("INSERT INTO accounts (owner, balance) SELECT 'o' || g, g FROM generate_series(1, 20) g")
    pg_db.wait_caught_up()
    assert (await fence(config, "gcp")).ok
    assert (await promote(config, "azure")).ok
    refused = await prepare_failback(config, "azure", None)
    assert not refused.ok and "must be reconciled first" in refused.sentence
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    assert check.identical, check.sentence
    result = await prepare_failback(config, "azure", check)
    assert result.ok, result.sentence
    pg_db.on_standby("INSERT INTO accounts (owner, balance) VALUES ('after', 7)")
    wait_until(lambda: pg_db.on_primary("SELECT count(*) FROM accounts WHERE owner = 'after'") == [(1,)], 15,
               "the write on the new primary to reach the old one")
    assert pg_db.on_primary("SELECT count(*) FROM accounts") == [(21,)]
    again = await prepare_failback(config, "azure", check)
    assert again.ok, again.sentence
    clock = ManualClock()
    probe = PostgresLagProbe(config, service="api", primary="gcp", clock=clock)
    probe.set_primary("azure")  # the reverse direction is measured by the same probe
    writer = HeartbeatWriter(config, writer_site="azure", primary="azure")
    try:
        await writer.beat(clock.now())

        async def reverse_caught_up() -> bool:
            obs = await probe.observe()
            return obs.ok and obs.value == 0.0 and obs.details["apply_worker_alive"] is True

        await poll(reverse_caught_up)
    finally:
        await writer.aclose()


async def test_failback_replays_writes_since_promotion_and_reports_rows_only_the_old_primary_has(
        pg_db: ReplicatedDb) -> None:
    """Promotion keeps a slot; writes on the new primary reach the old one; a lost write there is reported, kept."""
    config = config_for(pg_db, reconcile={"tables": [{"name": "accounts"}, {"name": "orders"}]})
    pg_db.on_primary("INSERT INTO accounts (owner, balance) SELECT 'o' || g, g FROM generate_series(1, 20) g")
    pg_db.wait_caught_up()
    # a heartbeat row of the future primary written before the slot exists (the case that broke the lag probe)
    early = HeartbeatWriter(config, writer_site="azure", primary="azure")
    try:
        await early.beat(1.0)
    finally:
        await early.aclose()
    assert (await fence(config, "gcp")).ok
    promoted = await promote(config, "azure")
    assert promoted.ok, promoted.sentence
    assert "reverse slot: created failover_pub (3 tables), slot failover_sub created" in promoted.sentence
    again = await promote(config, "azure")
    assert again.ok and "slot failover_sub kept" in again.sentence, again.sentence
    # a write the old primary committed that never reached the standby (lost at failover)
    pg_db.pair.publisher.execute("INSERT INTO accounts (id, owner, balance) VALUES (500, 'lost', 5)", pg_db.dbname,
                                 force_write=True)
    # writes on the new primary after promotion: two inserts, an update, a delete
    pg_db.on_standby("INSERT INTO accounts (owner, balance) VALUES ('after', 7), ('after', 8)")
    pg_db.on_standby("UPDATE accounts SET balance = 333 WHERE id = 3")
    pg_db.on_standby("DELETE FROM accounts WHERE id = 4")
    clock = ManualClock(1000.0)
    writer = HeartbeatWriter(config, writer_site="azure", primary="azure")
    probe = PostgresLagProbe(config, service="api", primary="azure", clock=clock)
    try:
        await writer.beat(clock.now())  # an UPDATE of a row the old primary lacks: skipped by the apply worker
        check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
        assert not check.identical and check.differences_found == 5, check.sentence
        refused = await prepare_failback(config, "azure", check)
        assert not refused.ok
        assert "4 differences written on azure after promotion (the slot carries them)" in refused.sentence
        assert "1 not explained by writes since promotion: accounts 500 (only on gcp)" in refused.sentence
        assert refused.data["differences"]["unexplained"] == [
            {"table": "accounts", "key": 500, "kind": "missing_on_primary", "where": "only on gcp"}]
        assert pg_db.on_primary("SELECT count(*) FROM pg_subscription") == [(0,)]  # nothing set up
        result = await prepare_failback(config, "azure", check, acknowledge=True)
        assert result.ok, result.sentence
        assert "acknowledged" in result.sentence and "1 of 1 heartbeat row copied" in result.sentence
        assert pg_db.on_primary("SELECT owner, balance FROM accounts WHERE id IN (3, 4, 500) ORDER BY id") == [
            ("o3", 333), ("lost", 5)]
        assert pg_db.on_primary("SELECT count(*) FROM accounts WHERE owner = 'after'") == [(2,)]
        # the reverse lag probe reads a real lag
        clock.advance(2.0)
        await writer.beat(clock.now())

        async def reverse_measured() -> Any:
            obs = await probe.observe()
            return obs if obs.ok and obs.value == 0.0 and obs.details["apply_worker_alive"] else None

        obs = await poll(reverse_measured)
        assert obs.reason.startswith("heartbeat lag 0.0s"), obs.reason
        pg_db.pair.publisher.execute("ALTER SUBSCRIPTION failover_sub DISABLE", pg_db.dbname, force_write=True)
        wait_until(lambda: not pg_db.on_primary("SELECT 1 FROM pg_stat_subscription WHERE pid IS NOT NULL"),
                   10, "the reverse apply worker to stop")
        clock.advance(3.0)
        await writer.beat(clock.now())
        behind = await probe.observe()
        assert behind.value == 3.0, behind.reason
        pg_db.pair.publisher.execute("ALTER SUBSCRIPTION failover_sub ENABLE", pg_db.dbname, force_write=True)
        twice = await prepare_failback(config, "azure", check)  # idempotent: no gate, no second subscription
        assert twice.ok, twice.sentence
        assert "reconciliation: failover_sub already set up on gcp" in twice.sentence
        assert pg_db.on_primary("SELECT count(*) FROM pg_subscription") == [(1,)]
        assert await poll(reverse_measured)
    finally:
        await writer.aclose()
        await probe.aclose()


async def test_failback_without_the_promotion_slot_is_refused_and_the_slot_can_be_dropped(pg_db: ReplicatedDb) -> None:
    """Failback abandoned (slot dropped, WAL released): preparing it later says a full re-copy is needed."""
    config = config_for(pg_db, reconcile={"tables": [{"name": "accounts"}]})
    assert (await promote(config, "azure")).ok
    dropped = await drop_reverse_slot(config, "azure")  # the operator gave up on failback
    assert dropped.ok and "dropped slot failover_sub on azure" in dropped.sentence, dropped.sentence
    assert (await drop_reverse_slot(config, "azure")).ok  # idempotent
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    result = await prepare_failback(config, "azure", check)
    assert not result.ok
    assert "reverse slot failed (no slot failover_sub on the new primary" in result.sentence
    assert "a full re-copy is needed" in result.sentence


async def test_a_failed_reverse_subscription_keeps_the_password_out_of_the_log_and_does_not_wait(
        pg_db: ReplicatedDb) -> None:
    """The old primary cannot reach the new one: failback fails at once, and no log line holds the password."""
    secret = f"PwLeak-{pg_db.dbname}-secret"
    section = pg_db.database_config(reconcile={"tables": [{"name": "accounts"}]})
    section["sites"]["azure"].update(password=secret, replication_port=1)  # type: ignore[index]
    config = DatabaseConfig.model_validate(section)  # (trust auth ignores the password)
    assert (await promote(config, "azure")).ok
    check = await reconcile(config, service="api", primary="azure", now=0.0, watermark=None)
    started = time.monotonic()
    result = await prepare_failback(config, "azure", check)
    assert time.monotonic() - started < 5.0  # no 30 s catch-up poll after a failed subscription
    assert not result.ok
    assert "reverse subscription failed" in result.sentence
    assert "catch-up failed (not attempted: no reverse subscription)" in result.sentence
    assert secret not in str(result.to_dict())
    assert "could not connect to the publisher" in pg_db.pair.publisher.logfile.read_text()
    assert secret not in pg_db.pair.publisher.logfile.read_text()


async def test_db_init_creates_the_heartbeat_table_and_publishes_it_idempotently(pg_pair: Any) -> None:
    """``db init`` on a database without the table creates it on both sites and replicates it."""
    db = pg_pair.replicate(schema="CREATE TABLE t (id int PRIMARY KEY);", tables=("t",))
    try:
        config = config_for(db)
        first = await init_database(config, "gcp")
        assert first.ok, first.sentence
        assert "added failover_heartbeat to failover_pub" in first.sentence
        second = await init_database(config, "gcp")
        assert second.ok and "already in failover_pub" in second.sentence
        writer = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
        try:
            await writer.beat(5.0)
        finally:
            await writer.aclose()
        wait_until(lambda: db.on_standby("SELECT beat_at FROM failover_heartbeat") == [(5.0,)], 15,
                   "the heartbeat row to replicate")
    finally:
        db.drop()


async def test_a_restarted_publisher_keeps_its_port_and_replication_resumes(pg_db: ReplicatedDb) -> None:
    """The fixture's stop/start keeps the port, so the subscription reconnects and applies new rows."""
    port = pg_db.pair.publisher.port
    pg_db.pair.publisher.stop()
    pg_db.pair.publisher.start()
    assert pg_db.pair.publisher.port == port
    pg_db.on_primary("INSERT INTO accounts (owner, balance) VALUES ('after restart', 1)")
    wait_until(lambda: pg_db.on_standby("SELECT count(*) FROM accounts") == [(1,)], 15,
               "the subscriber to reconnect and apply")

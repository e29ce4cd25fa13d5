"""Synchronous replication on a real PostgreSQL 15 pair: degrade and restore (on), never degrade (strict),
and the loss verdict zero only while synchronous commit is confirmed.

The pair is this module's own (``synchronous_standby_names`` is cluster-wide); every test resets it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from actions.consistency import check_loss
from actions.database.fence import fence, unfence
from actions.database.heartbeat import HeartbeatWriter
from actions.database.synchronous import apply_mode_after_move, observe, reprotect_step, set_standby_name
from engine.config.database import DatabaseConfig
from engine.core.loss import PrimaryEnd
from engine.runtime.sync_watch import SyncWatch
from tests.support.postgres import ReplicatedDb

pytestmark = [pytest.mark.real, pytest.mark.slow]
DEGRADE = {"after": "2s", "check_interval": "200ms", "commit_wait_limit": "500ms"}


@pytest.fixture
def sync_db(pg_db: ReplicatedDb) -> Iterator[ReplicatedDb]:
    """The replicated database; afterwards the standby runs again and the primary names nobody."""
    yield pg_db
    if not pg_db.pair.subscriber.running:
        pg_db.pair.subscriber.start()
    pg_db.pair.publisher.execute("ALTER SYSTEM RESET synchronous_standby_names")
    pg_db.pair.publisher.execute("SELECT pg_reload_conf()")


def config_of(db: ReplicatedDb, mode: str) -> DatabaseConfig:
    return DatabaseConfig.model_validate(db.database_config(synchronous=mode, synchronous_degrade=DEGRADE))


class Journal:
    def __init__(self) -> None:
        self.lines: list[tuple[float, str, bool]] = []

    async def record(self, sentence: str, data: dict[str, Any], alert: bool) -> None:
        self.lines.append((time.time(), sentence, alert))


@pytest.fixture
async def journal() -> AsyncIterator[Journal]:
    yield Journal()


def watch_of(config: DatabaseConfig, journal: Journal) -> SyncWatch:
    return SyncWatch(config, service="app", primary="gcp", clock=time.time, record=journal.record,
                     may_act=lambda: True)


async def tick_until(watch: SyncWatch, kind: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while watch.state.kind != kind:
        assert time.monotonic() < deadline, f"watch stuck in {watch.state.kind}: {watch.status()['sentence']}"
        await watch.tick()
        if watch.state.kind != kind:
            await asyncio.sleep(watch.settings.check_interval)


async def commit_one(db: ReplicatedDb, amount: int) -> float:
    """One acknowledged insert on the primary; returns when COMMIT returned."""
    async with await psycopg.AsyncConnection.connect(db.primary_dsn, autocommit=True) as conn:
        await conn.execute("INSERT INTO orders(account, amount) VALUES (1, %s)", (amount,))
    return time.time()


async def test_on_blocks_commits_while_the_standby_is_stopped_until_degrade_then_restores(
        sync_db: ReplicatedDb, journal: Journal) -> None:
    """`on`: a commit waits for the stopped standby until the watch degrades, then returns; sync is back after
    the standby restarts and catches up; the verdict is zero only while synchronous commit was confirmed."""
    config = config_of(sync_db, "on")
    watch = watch_of(config, journal)
    await tick_until(watch, "sync")
    assert (await observe(config, "gcp")).named
    beats = HeartbeatWriter(config, writer_site="azure", primary="gcp")
    point = await beats.beat(time.time())
    await commit_one(sync_db, 1)  # returns: the standby acknowledges
    sync_db.wait_caught_up()
    zero = await check_loss(config, "azure", point, end=PrimaryEnd(time.time(), "fenced"), sync=watch.evidence())
    assert zero.kind == "zero_by_proof", zero.sentence

    await asyncio.to_thread(sync_db.pair.subscriber.stop, "immediate")
    pending = asyncio.create_task(commit_one(sync_db, 2))
    await tick_until(watch, "degraded")
    acked_at = await asyncio.wait_for(pending, 20)
    degraded_at = next(at for at, line, alert in journal.lines if "degraded to asynchronous" in line and alert)
    assert acked_at >= degraded_at  # the commit returned only after the degrade
    assert not (await observe(config, "gcp")).named
    point = await beats.beat(time.time())  # the primary writes on, asynchronously
    after = await check_loss(config, "gcp", None, end=None, sync=watch.evidence())  # nothing readable as standby
    assert after.kind != "zero_by_proof"
    evidence = watch.evidence()
    assert evidence.degraded_since is not None and evidence.confirmed_at is not None
    assert evidence.covered_until() == evidence.degraded_since

    await asyncio.to_thread(sync_db.pair.subscriber.start)
    await tick_until(watch, "sync")
    assert (await observe(config, "gcp")).named
    assert any("restoring synchronous commit" in line for _, line, _ in journal.lines)
    await commit_one(sync_db, 3)
    await beats.aclose()


async def test_a_degraded_period_is_never_reported_zero(sync_db: ReplicatedDb, journal: Journal) -> None:
    """A primary that outlived the degrade gets a bound, not zero, even though sync was confirmed before."""
    config = config_of(sync_db, "on")
    watch = watch_of(config, journal)
    await tick_until(watch, "sync")
    beats = HeartbeatWriter(config, writer_site="azure", primary="gcp")
    await asyncio.to_thread(sync_db.pair.subscriber.stop, "immediate")
    await tick_until(watch, "degraded")
    point = await beats.beat(time.time())
    await asyncio.to_thread(sync_db.pair.subscriber.start)
    await asyncio.to_thread(sync_db.wait_caught_up)
    verdict = await check_loss(config, "azure", point, end=PrimaryEnd(time.time() + 1, "fenced"),
                               sync=watch.evidence())
    assert verdict.kind == "bounded" and verdict.bound_s is not None and verdict.bound_s >= 0.9, verdict.sentence
    await beats.aclose()


async def test_strict_never_degrades(sync_db: ReplicatedDb, journal: Journal) -> None:
    """`strict`: with the standby stopped well past `after`, the commit keeps waiting and nobody clears the name;
    it returns once the standby is back."""
    config = config_of(sync_db, "strict")
    watch = watch_of(config, journal)
    await tick_until(watch, "sync")
    await asyncio.to_thread(sync_db.pair.subscriber.stop, "immediate")
    pending = asyncio.create_task(commit_one(sync_db, 10))
    await tick_until(watch, "waiting")
    for _ in range(15):  # 3 s of ticks: past the 2 s an `on` watch would degrade after
        await watch.tick()
        await asyncio.sleep(watch.settings.check_interval)
    assert watch.state.kind == "waiting" and not pending.done()
    assert (await observe(config, "gcp")).named
    assert watch.status()["standby_lost"].startswith("strict: with the standby lost")
    await asyncio.to_thread(sync_db.pair.subscriber.start)
    await asyncio.wait_for(pending, 30)
    await tick_until(watch, "sync")
    assert not any("degraded to asynchronous" in line for _, line, _ in journal.lines)


async def test_set_standby_name_is_idempotent_and_moves_keep_the_mode(sync_db: ReplicatedDb) -> None:
    """Naming twice changes nothing the second time; after a move the new primary names the standby (strict)
    and the old one nobody; re-protect under `on` names a caught-up standby."""
    config = config_of(sync_db, "strict")
    first = await set_standby_name(config, "gcp", config.subscription)
    again = await set_standby_name(config, "gcp", config.subscription)
    assert first.detail.startswith("gcp names failover_sub") and again.detail == (
        "gcp already names failover_sub as synchronous standby")
    moved = await apply_mode_after_move(config, "azure")
    assert moved.ok, moved.sentence
    assert sync_db.pair.subscriber.execute("SHOW synchronous_standby_names") == [('"failover_sub"',)]
    assert sync_db.pair.publisher.execute("SHOW synchronous_standby_names") == [("",)]
    sync_db.pair.subscriber.execute("ALTER SYSTEM RESET synchronous_standby_names")
    sync_db.pair.subscriber.execute("SELECT pg_reload_conf()")
    on = config_of(sync_db, "on")
    kept = await reprotect_step(on, "gcp")  # `on` names a standby that streams caught up
    assert kept.status == "ok", kept.detail
    assert sync_db.pair.publisher.execute("SHOW synchronous_standby_names") == [('"failover_sub"',)]


async def test_fence_and_unfence_do_not_wait_for_a_lost_synchronous_standby(sync_db: ReplicatedDb) -> None:
    """Under strict with the standby stopped, the engine's own fence and unfence still complete (their catalog
    changes commit locally; client commits keep waiting)."""
    config = DatabaseConfig.model_validate(sync_db.database_config(
        synchronous="strict", fencing={"timeout": "3s"}, promotion={"timeout": "5s", "statement_timeout": "3s"}))
    assert (await set_standby_name(config, "gcp", config.subscription)).status == "ok"
    await asyncio.to_thread(sync_db.pair.subscriber.stop, "immediate")
    fenced = await fence(config, "gcp")
    assert fenced.ok, fenced.sentence
    unfenced = await unfence(config, "gcp")
    assert unfenced.status == "ok", unfenced.detail

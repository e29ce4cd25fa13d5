"""Bad input against real PostgreSQL: unreachable servers, a wrong password, missing publication or
subscription. Every case is a failed observation or a reported refusal, never a crash or a leak."""

from __future__ import annotations

from typing import Any

import pytest

from actions.consistency import CommitPoint, check_consistency
from actions.database.fence import fence
from actions.database.heartbeat import HeartbeatWriter, init_database
from actions.database.promote import promotable, promote
from engine.config.database import DatabaseConfig
from engine.core.clock import ManualClock
from probes.postgres import PostgresLagProbe
from probes.postgres_conn import PgError
from tests.support.postgres import PgPair, ReplicatedDb

pytestmark = pytest.mark.real

PASSWORD = "s3cret-Pa55word-xyz"


def config_for(db: ReplicatedDb, **sites: dict[str, Any]) -> DatabaseConfig:
    section = db.database_config()
    for site, changes in sites.items():
        section["sites"][site].update(changes)  # type: ignore[index]
    return DatabaseConfig.model_validate(section)


@pytest.fixture(scope="module")
def password_user(pg_pair: PgPair) -> str:
    """A role that must log in with a password (scram) on the standby cluster."""
    cluster = pg_pair.subscriber
    cluster.execute(f"CREATE ROLE guarded LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    hba = cluster.datadir / "pg_hba.conf"
    hba.write_text("host all guarded 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    cluster.execute("SELECT pg_reload_conf()")
    return "guarded"


async def test_unreachable_standby_is_a_failed_observation(pg_db: ReplicatedDb) -> None:
    """A closed port on the standby gives a failed observation naming the site and the cause."""
    probe = PostgresLagProbe(config_for(pg_db, azure={"port": 1}), service="api", primary="gcp",
                             clock=ManualClock())
    obs = await probe.observe()
    assert not obs.ok
    assert obs.reason == "standby azure unreachable: connect refused, slot lag 0 B"
    assert obs.details["apply_worker_alive"] is None and obs.value is None


async def test_wrong_password_is_reported_without_the_password(pg_db: ReplicatedDb, password_user: str) -> None:
    """A wrong password reads 'password authentication failed' and no secret appears anywhere."""
    config = config_for(pg_db, azure={"user": password_user, "password": "wrong-" + PASSWORD})
    probe = PostgresLagProbe(config, service="api", primary="gcp", clock=ManualClock())
    obs = await probe.observe()
    assert obs.reason == "standby azure unreachable: password authentication failed, slot lag 0 B"
    promoted = await promote(config, "azure")
    assert not promoted.ok
    assert promoted.sentence == ("promotion of azure incomplete: connect failed "
                                 "(azure unreachable: password authentication failed)")
    for text in (repr(obs), repr(promoted), str(promoted.to_dict()), repr(config)):
        assert PASSWORD not in text


async def test_right_password_works(pg_db: ReplicatedDb, password_user: str) -> None:
    """The same role with the right password passes: the secret reaches libpq and nowhere else."""
    config = config_for(pg_db, azure={"user": password_user, "password": PASSWORD})
    obs = await PostgresLagProbe(config, service="api", primary="gcp", clock=ManualClock()).observe()
    assert obs.details["apply_worker_alive"] is True, obs.reason


async def test_missing_publication_and_subscription_are_named(pg_db: ReplicatedDb) -> None:
    """Wrong publication and subscription names fail the signal and ``db init`` with clear reasons."""
    section = pg_db.database_config(publication="nope_pub", subscription="nope_sub")
    config = DatabaseConfig.model_validate(section)
    obs = await PostgresLagProbe(config, service="api", primary="gcp", clock=ManualClock()).observe()
    assert not obs.ok
    assert "publication not found on gcp" in obs.reason and "subscription not found on azure" in obs.reason
    init = await init_database(config, "gcp")
    assert not init.ok and init.sentence == ("db init of gcp incomplete: publication failed "
                                             "(publication nope_pub not found on gcp); done: table on primary")
    promoted = await promote(config, "azure")
    assert not promoted.ok  # a misspelt name must not promote while the real subscription applies
    assert promoted.sentence.startswith("promotion of azure incomplete: subscription failed (subscription nope_sub "
                                        "not found in this database: refusing to allow writes")
    assert [s.name for s in promoted.steps] == ["subscription"]
    assert pg_db.on_standby("SELECT subname, subenabled FROM pg_subscription") == [("failover_sub", True)]
    pg_db.on_standby("INSERT INTO accounts (owner, balance) VALUES ('x', 1)")  # not unfenced, not touched


async def test_unreachable_old_primary_skips_the_fence_and_unreachable_standby_fails_promotion(
        pg_db: ReplicatedDb) -> None:
    """Fencing an unreachable server is skipped (not failed) with the reason; promoting one fails and says so."""
    config = config_for(pg_db, gcp={"port": 1}, azure={"port": 1})
    fenced = await fence(config, "gcp")
    assert fenced.ok and fenced.skipped  # best effort: the runbook goes on, the sentence says why
    assert fenced.sentence == "fence of gcp skipped: unreachable (connect refused)"
    promoted = await promote(config, "azure")
    assert not promoted.ok
    assert promoted.sentence == "promotion of azure incomplete: connect failed (azure unreachable: connect refused)"
    consistency = await check_consistency(config, "azure", CommitPoint(1.0), rpo=30)
    assert consistency.status == "unknown" and consistency.alert
    assert consistency.sentence == "data loss unknown: azure unreachable: connect refused"
    writer = HeartbeatWriter(config, writer_site="gcp", primary="gcp")
    with pytest.raises(PgError, match="connect refused"):
        await writer.beat(1.0)
    await writer.aclose()


async def test_fence_can_be_disabled(pg_db: ReplicatedDb) -> None:
    """With fencing disabled in config the fence is skipped and says why."""
    section = pg_db.database_config(fencing={"enabled": False})
    result = await fence(DatabaseConfig.model_validate(section), "gcp")
    assert result.skipped and result.sentence == "fence of gcp skipped: fencing is disabled in the config"


async def test_precheck_tells_a_promotable_standby_from_one_that_is_not(pg_db: ReplicatedDb) -> None:
    """``promotable``: the subscriber is; the publisher (no subscription) is not, for good; a dead port is transient."""
    config = config_for(pg_db)
    assert await promotable(config, "azure") == (None, False)
    problem, transient = await promotable(config, "gcp")
    assert problem is not None and "no subscription failover_sub" in problem and not transient
    dead = config_for(pg_db, azure={"port": 1, "connect_timeout": "1s"})
    problem, transient = await promotable(dead, "azure")
    assert problem is not None and "cannot be reached" in problem and transient
    assert pg_db.on_standby("SELECT subenabled FROM pg_subscription") == [(True,)]  # the check changed nothing

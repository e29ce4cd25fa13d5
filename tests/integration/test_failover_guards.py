"""The failover steps against a real BIND: nothing touches a database once DNS shows another operation's epoch.

A runbook resumed late (after a crash, or an executor frozen and woken) re-reads the epoch written
beside the records before fencing or promoting, and stands down when it is not its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.model import ServiceConfig
from engine.core.operations import Operation
from engine.runtime.failover import FailoverSteps
from engine.runtime.journal import Journal
from tests.support import free_port
from tests.support.bind import BASELINE, NamedServer, dns_config_for
from tests.support.dns_steps import FakeEngine, FakeRuntime


@pytest.fixture
async def steps(bind_zone: NamedServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    dead = {"host": "127.0.0.1", "dbname": "x", "user": "x", "connect_timeout": "1s"}
    config = ServiceConfig.model_validate({
        "active": "gcp",
        "sites": {"gcp": {"probes": []}, "azure": {"probes": []}},
        "dns": dns_config_for(bind_zone),
        "database": {"sites": {"gcp": {**dead, "port": free_port()}, "azure": {**dead, "port": free_port()}}},
    })
    journal = Journal.open(tmp_path / "j.db")
    engine = FakeEngine(journal)
    yield FailoverSteps(engine, FakeRuntime(config), lambda _site, _wait: (0.0, [], None)), bind_zone  # type: ignore[arg-type]
    await journal.close()


def moved_by_someone_else(server: NamedServer) -> None:
    records = tuple(r if r[0] != "_failover-epoch.app" else (r[0], r[1], r[2], ('"epoch=3 site=gcp op=other"',))
                    for r in BASELINE)
    server.write(records)


async def test_steps_go_on_at_the_starting_epoch(steps) -> None:  # type: ignore[no-untyped-def]
    """At the epoch the operation started from, fencing goes ahead (here: the old primary is unreachable)."""
    failover, _ = steps
    op = Operation("op-a", "api", "failover", "gcp", "azure", 1, 2, "auto")
    outcome = await failover.fence(op)
    assert not outcome.stand_down


async def test_fence_promote_and_verify_stand_down_when_dns_moved_on(steps) -> None:  # type: ignore[no-untyped-def]
    """Another operation's epoch in DNS: fence, promote and verify stand down without touching anything."""
    failover, server = steps
    moved_by_someone_else(server)
    op = Operation("op-a", "api", "failover", "gcp", "azure", 1, 2, "auto")
    for step in (failover.precheck, failover.fence, failover.promote, failover.verify_dns):
        outcome = await step(op)
        assert outcome.stand_down, (step.__name__, outcome.summary)
    fence = await failover.fence(op)
    assert fence.summary.startswith("DNS is at epoch 3, gcp")
    assert "another operation moved api; not touching the databases" in fence.summary

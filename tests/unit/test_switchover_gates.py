"""A switchover dry run's gates (engine.core.switchover_gates): every precondition listed, passed or not."""

from __future__ import annotations

from dataclasses import replace

from engine.core.switchover_gates import switchover_gates
from tests.unit.test_gates import facts, site

ALL = ["can_act", "no_drill", "source_healthy", "target_healthy", "quorum", "replication", "standby_caught_up"]


def test_a_healthy_pair_passes_every_gate_and_each_says_why() -> None:
    """Both sites up, quorum, replication up and the standby close behind: seven gates, all ok, with details."""
    result = switchover_gates(facts(gcp="up", switchover_max_lag=5.0), "azure")
    assert [g.gate for g in result.gates] == ALL and result.allowed
    assert result.get("standby_caught_up").detail == (  # type: ignore[union-attr]
        "standby 1.0s behind, within switchover_max_lag 5s")


def test_each_failed_precondition_fails_its_own_gate() -> None:
    """A target down, a lost quorum and a runbook in flight fail target_healthy, quorum and can_act only."""
    ok = facts(gcp="up")
    bad = replace(ok, sites={**ok.sites, "azure": site("azure", "down")}, quorum_ok=False,
                  operation=("op-1", "running"))
    result = switchover_gates(bad, "azure")
    assert {g.gate for g in result.blocked} == {"target_healthy", "quorum", "can_act"}
    assert "op-1" in result.get("can_act").detail  # type: ignore[union-attr]


def test_without_a_database_the_replication_gates_are_not_listed() -> None:
    """A service with no database pair has no replication or lag gate."""
    result = switchover_gates(facts(gcp="up", has_database=False), "azure")
    assert [g.gate for g in result.gates] == ALL[:5]


def test_replication_down_also_fails_the_lag_gate_as_unknown() -> None:
    """With replication down, the lag is not known: the lag gate fails saying so."""
    result = switchover_gates(facts(gcp="up", replication="down", replication_detail="no rows"), "azure")
    assert result.get("standby_caught_up").detail == "unknown while replication is down"  # type: ignore[union-attr]
    assert not result.get("replication").ok  # type: ignore[union-attr]

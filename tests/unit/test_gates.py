"""The gates every move, switchover and drill reads (engine.core.gates): pure facts in, refusals out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.core.decide import SignalView, SiteView
from engine.core.gates import (
    Refusal,
    ServiceFacts,
    cannot_act,
    choose_target,
    drill_refusals,
    failback_gates,
    failover_gates,
    switchover_preconditions,
)
from engine.core.health import Health

UP = SiteView("x", (), 2)


def site(name: str, health: str) -> SiteView:
    if health == "up":
        return SiteView(name, (), 2)
    return SiteView(name, (SignalView("http", Health(health), "3 failures: connection refused"),), 1)


def facts(gcp: str = "down", azure: str = "up", **over: object) -> ServiceFacts:
    base = ServiceFacts(service="api", active="gcp", home="gcp", sites={"gcp": site("gcp", gcp),
                                                                        "azure": site("azure", azure)},
                        has_database=True, lag_s=1.0, rpo=30.0, replication="up", quorum_ok=True)
    return replace(base, **over)  # type: ignore[arg-type]


def test_a_healthy_target_with_lag_inside_the_rpo_may_take_a_failover() -> None:
    """Target up and lag within the RPO: allowed, and the informative gates say why they do not block."""
    result = failover_gates(facts(), "azure", fence_first=False)
    assert result.allowed
    assert [g.gate for g in result.gates] == ["target_healthy", "active_not_healthy", "lag_within_rpo",
                                              "active_site", "quorum", "paused"]
    assert result.get("quorum") is not None and not result.get("quorum").blocking  # type: ignore[union-attr]


def test_an_unhealthy_target_refuses_with_its_reason() -> None:
    """A down target is a blocking gate whose reason names the failing signal."""
    result = failover_gates(facts(azure="down"), "azure")
    assert not result.allowed
    assert result.reasons == ["target_healthy: azure is down (http: 3 failures: connection refused)"]


@pytest.mark.parametrize(("lag", "ok", "detail"), [(None, False, "replication lag unknown"),
                                                   (31.0, False, "lag 31.0s, RPO 30s"),
                                                   (30.0, True, "lag 30.0s, RPO 30s")])
def test_lag_against_the_rpo(lag: float | None, ok: bool, detail: str) -> None:
    """Unknown lag refuses; lag above the RPO refuses; lag equal to it passes."""
    gate = failover_gates(facts(lag_s=lag), "azure").get("lag_within_rpo")
    assert gate is not None and (gate.ok, gate.detail) == (ok, detail)


def test_no_database_means_no_lag_gate() -> None:
    """A service without a database pair has no RPO to keep."""
    assert failover_gates(facts(has_database=False, lag_s=None), "azure").get("lag_within_rpo") is None


def test_moving_away_from_a_healthy_primary_needs_fence_first() -> None:
    """A healthy active site blocks a manual failover unless the operator asks to fence it first."""
    refused = failover_gates(facts(gcp="up"), "azure", fence_first=False)
    assert "a planned move is a switchover" in refused.reasons[0]
    assert failover_gates(facts(gcp="up"), "azure", fence_first=True).allowed


def test_from_a_minority_with_a_lease_quorum_blocks() -> None:
    """Lost quorum with a lease: the old primary may still hold it, so the gate blocks (force to override)."""
    result = failover_gates(facts(has_lease=True, quorum_ok=False), "azure")
    assert [g.gate for g in result.blocked] == ["quorum"]
    assert failover_gates(facts(has_lease=False, quorum_ok=False), "azure").allowed


def test_cannot_act_for_a_witness_an_open_operation_or_a_full_drill() -> None:
    """The refusals every move shares, in the order they are checked."""
    assert cannot_act(facts()) is None
    assert cannot_act(facts(role="witness")) == Refusal("witness", "a witness never acts: send this to an engine")
    op = cannot_act(facts(operation=("api-e2-abc", "halted")))
    assert op is not None and op.code == "operation_in_progress" and "halted" in op.detail
    drill = cannot_act(facts(drill=("drill-1", "full")))
    assert drill is not None and drill.code == "drill_in_progress"
    assert cannot_act(facts(drill=("drill-2", "shadow"))) is None


@pytest.mark.parametrize(("requested", "expected"), [
    (None, "azure"), ("azure", "azure"),
    ("aws", Refusal("unknown_site", "'aws' is not a site of api: ['azure', 'gcp']", "not_found")),
    ("gcp", Refusal("already_active", "api is already active in gcp"))])
def test_choose_target(requested: str | None, expected: object) -> None:
    """The only other site by default; an unknown or the active site is refused with its kind."""
    assert choose_target(facts(), requested) == expected


def test_failback_needs_home_healthy_long_enough_replication_back_and_a_clean_reconciliation() -> None:
    """Each failback gate blocks on its own; an acknowledged reconciliation stops blocking."""
    base = facts(active="azure", gcp="up", home_up_for=600.0, failback_healthy_for=300.0,
                 last_reconciliation={"identical": True, "sentence": "identical"})
    assert failback_gates(base).allowed
    young = failback_gates(replace(base, home_up_for=10.0))
    assert young.reasons == ["home_healthy: gcp up for 10s (need 300s)"]
    down = failback_gates(replace(base, home_up_for=None, sites={**base.sites, "gcp": site("gcp", "down")}))
    assert down.reasons[0].startswith("home_healthy: gcp is not up: http")
    behind = failback_gates(replace(base, replication="down", replication_detail="down for 3 checks"))
    assert behind.reasons == ["reverse_replication: azure -> gcp: down for 3 checks "
                              "(POST .../prepare-failback sets it up)"]
    differs = replace(base, last_reconciliation={"identical": False, "sentence": "2 rows differ"})
    assert failback_gates(differs).reasons == ["reconciliation: 2 rows differ"]
    acknowledged = failback_gates(differs, acknowledge_reconciliation=True)
    assert acknowledged.allowed and acknowledged.get("reconciliation").detail.endswith("(acknowledged)")  # type: ignore[union-attr]


def test_switchover_needs_both_sites_healthy_quorum_and_a_standby_close_behind() -> None:
    """Each precondition is a refusal of kind precondition (412); the engine's own state is a conflict (409)."""
    ok = facts(gcp="up", switchover_max_lag=5.0)
    assert switchover_preconditions(ok, "azure") == []
    codes = [p.code for p in switchover_preconditions(replace(ok, sites={**ok.sites, "azure": site("azure", "down")}),
                                                      "azure")]
    assert codes == ["target_unhealthy"]
    assert [p.code for p in switchover_preconditions(replace(ok, quorum_ok=False), "azure")] == ["no_quorum"]
    lagging = switchover_preconditions(replace(ok, lag_s=9.0), "azure")
    assert [(p.code, p.kind) for p in lagging] == [("standby_lagging", "precondition")]
    assert lagging[0].detail == "standby 9.0s behind, more than switchover_max_lag 5s"
    down = switchover_preconditions(replace(ok, replication="down", replication_detail="no rows"), "azure")
    assert [p.detail for p in down] == ["replication to the standby is not up: no rows"]
    busy = switchover_preconditions(replace(ok, operation=("op-1", "running")), "azure")
    assert [(p.code, p.kind) for p in busy] == [("operation_in_progress", "conflict")]


def test_drills_refuse_while_anything_else_moves_or_blind() -> None:
    """A drill waits for a running drill or runbook, a pause, quorum, busy peers; a full drill needs home."""
    ok = facts(gcp="up")
    assert drill_refusals(ok, "full") == []
    assert [r.code for r in drill_refusals(replace(ok, quorum_ok=None), "shadow")] == ["no_quorum"]
    assert drill_refusals(replace(ok, quorum_ok=None, has_peers=False), "shadow") == []
    every = drill_refusals(replace(ok, role="witness", paused=True, operation=("op", "running"),
                                   peer_busy=("engine-azure runs op",), active="azure"), "full",
                           running_drill="drill-9")
    assert [r.code for r in every] == ["witness", "drill_in_progress", "operation_in_progress", "paused",
                                       "peer_busy", "not_home"]

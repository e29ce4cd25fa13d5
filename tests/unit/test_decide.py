"""Pure decisions: each case asserts the exact sentence an operator will read."""

from __future__ import annotations

from engine.config.model import PolicyConfig
from engine.core.decide import (
    Decision,
    DecisionKind,
    ServiceState,
    SignalView,
    SiteView,
    Snapshot,
    decide,
    site_health,
)
from engine.core.health import Health

UP, DOWN, UNKNOWN = Health.UP, Health.DOWN, Health.UNKNOWN
POLICY = PolicyConfig(cooldown=600)


def snap(gcp: Health, azure: Health, *, gcp_detail: str = "", azure_detail: str = "") -> Snapshot:
    return Snapshot("api", 1000.0, {
        "gcp": SiteView("gcp", (SignalView("http", gcp, gcp_detail),)),
        "azure": SiteView("azure", (SignalView("http", azure, azure_detail),)),
    })


def run(state: ServiceState, snapshot: Snapshot, now: float = 1000.0,
        policy: PolicyConfig = POLICY) -> Decision:
    return decide(state, snapshot, now, policy)


def test_holds_while_active_up() -> None:
    """An up primary means hold, naming the standby's health."""
    d = run(ServiceState("gcp"), snap(UP, UP))
    assert d == Decision(DecisionKind.HOLD, "holding: gcp is up; standby azure up")


def test_holds_while_unknown() -> None:
    """Before the thresholds are reached the engine waits and says why."""
    d = run(ServiceState("gcp"), snap(UNKNOWN, UP, gcp_detail="1/2 successes: 200 in 3 ms"))
    assert d.message == "holding: gcp health not yet known (http: 1/2 successes: 200 in 3 ms)"


def test_fails_over_to_healthy_standby() -> None:
    """A down primary with an up standby is a failover to the standby."""
    d = run(ServiceState("gcp"), snap(DOWN, UP, gcp_detail="3/3 failures: connect refused"))
    assert d.verdict is DecisionKind.FAILOVER
    assert d.target == "azure"
    assert d.message == "failover api gcp -> azure: gcp is down (http: 3/3 failures: connect refused); azure is up"


def test_pages_when_standby_is_not_healthy() -> None:
    """No failover to an unhealthy standby: page instead, with both reasons."""
    d = run(ServiceState("gcp"), snap(DOWN, DOWN, gcp_detail="3/3 failures: timeout after 5s",
                                      azure_detail="3/3 failures: status 503 not in [200]"))
    assert d.verdict is DecisionKind.PAGE
    assert d.message == ("paging: gcp is down (http: 3/3 failures: timeout after 5s), but no healthy standby: "
                         "azure is down (http: 3/3 failures: status 503 not in [200])")


def test_cooldown_blocks_a_second_move() -> None:
    """Within the cool-down after the last move the engine pages rather than flapping traffic."""
    d = run(ServiceState("azure", last_move_at=900.0), snap(UP, DOWN, azure_detail="x"))
    assert d.verdict is DecisionKind.PAGE
    assert d.message == "paging: azure is down (http: x); not moving to gcp: in cool-down for 8m20s after the last move"


def test_cooldown_expires() -> None:
    """After the cool-down the move is allowed again."""
    d = run(ServiceState("azure", last_move_at=0.0), snap(UP, DOWN))
    assert d.verdict is DecisionKind.FAILOVER and d.target == "gcp"


def test_auto_failover_disabled_pages() -> None:
    """With auto_failover off a down primary pages and never moves."""
    d = run(ServiceState("gcp"), snap(DOWN, UP, gcp_detail="x"), policy=PolicyConfig(auto_failover=False))
    assert d.verdict is DecisionKind.PAGE
    assert d.message.endswith("not moving to azure: automatic failover is disabled for this service")


def test_paused_prefixes_and_never_acts() -> None:
    """Paused keeps observing, never acts, and prefixes every sentence with PAUSED:."""
    d = run(ServiceState("gcp", paused=True), snap(DOWN, UP, gcp_detail="x"))
    assert d.verdict is DecisionKind.HOLD and d.target is None
    assert d.message.startswith("PAUSED: failover api gcp -> azure")


def test_site_health_rules() -> None:
    """Any DOWN signal makes the site DOWN; all UP makes it UP; otherwise UNKNOWN."""
    assert site_health([]) is UNKNOWN
    assert site_health([SignalView("a", UP), SignalView("b", DOWN)]) is DOWN
    assert site_health([SignalView("a", UP), SignalView("b", UNKNOWN)]) is UNKNOWN
    assert site_health([SignalView("a", UP), SignalView("b", UP)]) is UP


def test_site_view_counts_healthy_signals() -> None:
    """A view listing only unhealthy signals plus a count of healthy ones derives the same health."""
    from engine.core.decide import SiteView

    assert SiteView("a", (), up=5000).health is UP
    assert SiteView("a", (SignalView("x", DOWN, "3/3 failures: reset"),), up=4999).health is DOWN
    assert SiteView("a", (SignalView("x", UNKNOWN),), up=3).health is UNKNOWN
    assert SiteView("a").health is UNKNOWN

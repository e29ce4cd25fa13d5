"""Quorum and the cluster decision: majorities, partitions, gates, executor choice, sentences verbatim."""

from __future__ import annotations

from engine.config.model import PolicyConfig
from engine.core.decide import DecisionKind, ServiceState
from engine.core.policy import ClusterDecision, decide_cluster, executor_order
from engine.core.quorum import Received, VoterInfo, tally
from engine.core.verdict import ServiceVerdict

GCP = VoterInfo("engine-gcp", "engine", "gcp")
AZURE = VoterInfo("engine-azure", "engine", "azure")
WITNESS = VoterInfo("witness", "witness", "witness")
ENGINES = [GCP, AZURE]
POLICY = PolicyConfig(rpo=30, cooldown=1800)


def view(gcp: str, azure: str, *, lag: float | None = 1.0, shared_down: list[str] | None = None,
         runbook: str | None = None) -> ServiceVerdict:
    return ServiceVerdict(active="gcp", epoch=3, sites={"gcp": gcp, "azure": azure}, lag_s=lag,
                          shared_down=shared_down or [], runbook=runbook)


def heard(v: ServiceVerdict, age: float = 1.0, interval: float = 10.0) -> Received:
    return Received(v, received_at=100.0 - age, interval=interval)


def decide(own_id: str, own: ServiceVerdict, received: dict[str, Received | None],
           voters: list[VoterInfo] | None = None, state: ServiceState | None = None,
           policy: PolicyConfig = POLICY, rpo: bool = True) -> ClusterDecision:
    t = tally(voters or [GCP, AZURE, WITNESS], own_id, own, received, now=100.0)
    return decide_cluster(state or ServiceState("gcp", epoch=3), "api", "gcp", t, own_id, ENGINES, 100.0,
                          policy, rpo_applies=rpo)


def test_majority_down_fails_over_and_the_target_site_acts() -> None:
    """Azure engine and witness see gcp down: azure's engine acts."""
    d = decide("engine-azure", view("down", "up"), {"witness": heard(view("down", "up")), "engine-gcp": None})
    assert d.verdict is DecisionKind.FAILOVER and d.target == "azure" and d.acting
    assert d.message == ("failover api gcp -> azure: 2 of 3 voters see gcp down (need 2), "
                         "2 see azure up; this instance acts")


def test_other_voters_agree_but_do_not_act() -> None:
    """The witness reaches the same decision but names the executor instead of acting."""
    d = decide("witness", view("down", "up"), {"engine-azure": heard(view("down", "up")), "engine-gcp": None})
    assert d.verdict is DecisionKind.FAILOVER and not d.acting
    assert d.executor == "engine-azure"
    assert d.message.endswith("; engine-azure acts")


def test_two_engines_without_witness_hold_and_page_on_silence() -> None:
    """Without a witness, a silent peer cannot be told from a cut link: hold and page."""
    d = decide("engine-azure", view("down", "up"), {"engine-gcp": None}, voters=[GCP, AZURE])
    assert d.verdict is DecisionKind.PAGE
    assert d.message == ("holding: gcp looks down from here but only 1 of 2 voters answer (engine-gcp silent): "
                         "cannot tell a dead site from a cut link, assuming a partition")


def test_stale_verdict_is_no_vote() -> None:
    """A verdict older than two of the sender's intervals does not count."""
    d = decide("engine-azure", view("down", "up"),
               {"witness": heard(view("down", "up"), age=21.0), "engine-gcp": None})
    assert d.verdict is DecisionKind.PAGE
    assert "only 1 of 3 voters answer (engine-gcp, witness silent)" in d.message


def test_unknown_health_waits() -> None:
    """Before a majority has judged the primary the engine waits and says so."""
    d = decide("engine-azure", view("unknown", "up"), {"witness": heard(view("up", "up"))})
    assert d.message == "holding: gcp health not yet known (1 of 3 voters see it up, need 2)"


def test_minority_down_holds() -> None:
    """One voter seeing the primary down is not enough while the others see it up."""
    d = decide("engine-azure", view("down", "up"),
               {"witness": heard(view("up", "up")), "engine-gcp": heard(view("up", "up"))})
    assert d.verdict is DecisionKind.HOLD
    assert d.message == "holding: 1 of 3 voters see gcp down (need 2)"


def test_cut_link_between_engines_with_witness_seeing_both_holds() -> None:
    """Engines that cannot reach each other but both see up sites do nothing."""
    d = decide("engine-azure", view("up", "up"), {"witness": heard(view("up", "up")), "engine-gcp": None})
    assert d.verdict is DecisionKind.HOLD
    assert d.message == "holding: gcp is up for 2 of 3 voters"


def test_unhealthy_standby_blocks() -> None:
    """No failover to a standby that a majority does not see up."""
    d = decide("engine-azure", view("down", "down"), {"witness": heard(view("down", "unknown"))})
    assert d.verdict is DecisionKind.PAGE
    assert d.message == ("paging: 2 of 3 voters see gcp down (need 2); not moving: "
                         "no standby is up for a majority of voters")


def test_lag_above_rpo_blocks_using_the_worst_report() -> None:
    """The worst fresh lag report is compared with the RPO."""
    d = decide("engine-azure", view("down", "up", lag=2.0), {"witness": heard(view("down", "up", lag=42.0))})
    assert d.verdict is DecisionKind.PAGE
    assert d.message.endswith("not moving: standby lag 42.0s exceeds RPO 30s")


def test_unknown_lag_blocks_when_a_database_is_configured() -> None:
    """With a database pair but no lag ever measured, the move is refused."""
    d = decide("engine-azure", view("down", "up", lag=None), {"witness": heard(view("down", "up", lag=None))})
    assert d.message.endswith("not moving: replication lag is unknown")
    d = decide("engine-azure", view("down", "up", lag=None), {"witness": heard(view("down", "up", lag=None))},
               rpo=False)
    assert d.verdict is DecisionKind.FAILOVER


def test_shared_dependency_down_blocks() -> None:
    """A shared dependency a majority sees down blocks the move: it would fail there too."""
    d = decide("engine-azure", view("down", "up", shared_down=["payments"]),
               {"witness": heard(view("down", "up", shared_down=["payments"]))})
    assert d.message.endswith("not moving: shared dependency payments is down: it would fail there too")
    d = decide("engine-azure", view("down", "up", shared_down=["payments"]), {"witness": heard(view("down", "up"))})
    assert d.verdict is DecisionKind.FAILOVER


def test_failback_is_never_automatic() -> None:
    """Once away from home, a down active site pages instead of moving back."""
    state = ServiceState("azure", epoch=4, last_move_at=-10_000.0)
    own = ServiceVerdict(active="azure", epoch=4, sites={"gcp": "up", "azure": "down"}, lag_s=0.0)
    d = decide("engine-gcp", own, {"witness": heard(own)}, state=state)
    assert d.verdict is DecisionKind.PAGE
    assert d.message.endswith("not moving: azure is not the home site gcp: failback is a human decision")


def test_operation_under_way_blocks_and_pause_prefixes() -> None:
    """A runbook reported by any voter blocks (a hold: it is being handled, nobody is paged); pause prefixes
    the sentence and never acts."""
    d = decide("engine-azure", view("down", "up"), {"witness": heard(view("down", "up", runbook="op-7"))})
    assert d.verdict is DecisionKind.HOLD and not d.acting
    assert d.message.endswith("(need 2); witness runs op-7")
    d = decide("engine-azure", view("down", "up"), {"witness": heard(view("down", "up"))},
               state=ServiceState("gcp", epoch=3, paused=True))
    assert d.verdict is DecisionKind.HOLD and not d.acting
    assert d.message.startswith("PAUSED: failover api gcp -> azure")


def test_executor_fallback_order() -> None:
    """Target-site engines act first by default; a configured order is honoured."""
    assert executor_order(ENGINES, "azure", []) == ["engine-azure", "engine-gcp"]
    assert executor_order(ENGINES, "azure", ["engine-gcp", "engine-azure"]) == ["engine-gcp", "engine-azure"]


def test_evidence_names_every_voter() -> None:
    """The decision carries who saw what, for the operation record."""
    d = decide("engine-azure", view("down", "up"), {"witness": heard(view("down", "up")), "engine-gcp": None})
    ev = d.evidence
    assert ev["majority"] == 2 and ev["active_down"] == ["engine-azure", "witness"]
    assert [v["voter"] for v in ev["votes"]] == ["engine-gcp", "engine-azure", "witness"]
    assert ev["votes"][0]["view"] is None


def test_a_halted_operation_is_told_as_halted_never_this_instance_acts() -> None:
    """With an operation halted here, a move the rules would start pages naming it; nobody 'acts'."""
    t = tally([GCP, AZURE, WITNESS], "engine-azure", view("down", "up"),
              {"witness": heard(view("down", "up")), "engine-gcp": None}, now=100.0)
    d = decide_cluster(ServiceState("gcp", epoch=3), "api", "gcp", t, "engine-azure", ENGINES, 100.0, POLICY,
                       rpo_applies=True, halted=("api-e4-abc", "failover of api stuck at fence: lease"))
    assert d.verdict is DecisionKind.PAGE and not d.acting and d.executor is None
    assert d.message == ("halted: operation api-e4-abc is halted (failover of api stuck at fence: lease); nothing "
                         "moves for api until an operator retries or aborts it (`failover-engine operation "
                         "api-e4-abc --retry` or `--abort`); the rules say: failover api gcp -> azure: 2 of 3 voters "
                         "see gcp down (need 2), 2 see azure up")


def test_a_halted_operation_is_named_beside_a_hold() -> None:
    """Any other decision keeps its verdict and says the operation is halted."""
    t = tally([GCP, AZURE, WITNESS], "engine-azure", view("up", "up"), {"witness": heard(view("up", "up"))},
              now=100.0)
    d = decide_cluster(ServiceState("gcp", epoch=3), "api", "gcp", t, "engine-azure", ENGINES, 100.0, POLICY,
                       halted=("api-e4-abc", "failover of api stuck at fence: lease"))
    assert d.verdict is DecisionKind.HOLD
    assert d.message == ("holding: gcp is up for 2 of 3 voters; operation api-e4-abc is halted (failover of api "
                         "stuck at fence: lease)")

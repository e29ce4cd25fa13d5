"""DNS drift (actions.dns.drift) and the gates that read it: a foreign change is named, blocks every move
until acknowledged, and blocks automatic moves too."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from actions.dns.drift import consistent_site, drift
from actions.dns.state import MIXED, UNKNOWN, DnsState, Epoch, RecordState, format_epoch, target_state
from engine.config.dns import RecordConfig
from engine.config.model import PolicyConfig
from engine.core.decide import DecisionKind, ServiceState, SiteView
from engine.core.gates import ServiceFacts, cannot_act, drill_refusals, switchover_preconditions
from engine.core.policy import decide_cluster
from engine.core.quorum import Received, VoterInfo, tally
from engine.core.verdict import ServiceVerdict

APP = RecordConfig.model_validate({"name": "app", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}})
API = RecordConfig.model_validate(
    {"name": "api", "type": "AAAA", "ttl": "30s", "targets": {"gcp": ["2001:db8::10"], "azure": ["2001:db8:1::10"]}})
CONFIGS = {"app.example.test.": APP, "api.example.test.": API}
EPOCH_NAME = "_failover-epoch.app.example.test."
TEXT = format_epoch(3, "gcp", "app-e3-abcdef")


def read(app: tuple[str, ...] = ("192.0.2.10",), api: tuple[str, ...] = ("2001:db8::10",), *, app_ttl: int = 60,
         api_ttl: int = 30, epoch_text: str | None = TEXT) -> DnsState:
    """A read of both records, each matched to its site the way a provider matches it."""
    def site(values: tuple[str, ...], config: RecordConfig) -> str:
        return next((s for s, v in config.targets.items() if sorted(v) == sorted(values)), UNKNOWN)
    records = (RecordState("app.example.test.", "A", app_ttl, app, site(app, APP)),
               RecordState("api.example.test.", "AAAA", api_ttl, api, site(api, API)))
    epoch = Epoch(0)
    if epoch_text is not None:
        fields = dict(t.split("=", 1) for t in epoch_text.split())
        epoch = Epoch(int(fields["epoch"]), fields.get("site"), fields.get("op"), epoch_text)
    return DnsState("example.test", records, epoch, EPOCH_NAME)


def expected(state: DnsState, seen: str | None = TEXT) -> tuple[str, ...]:
    return drift(state, CONFIGS, active="gcp", epoch=3, seen=seen).differences


def test_records_as_expected_show_no_drift() -> None:
    """Values of the active site, configured TTLs and the epoch record the engine saw: no drift at all."""
    found = drift(read(), CONFIGS, active="gcp", epoch=3, seen=TEXT)
    assert not found and found.differences == ()


def test_a_foreign_value_matches_no_site() -> None:
    """An A record someone pointed elsewhere is named with what it answers."""
    assert expected(read(app=("203.0.113.99",))) == (
        "app.example.test A answers 203.0.113.99: matches no site",
        "mixed answer: app.example.test -> unknown, api.example.test -> gcp")


def test_a_mixed_answer_names_each_record_and_the_expected_site() -> None:
    """One record moved to the other site, the other not: a mixed answer, and which record left the active site."""
    state = read(app=("198.51.100.10",))
    assert state.site == MIXED
    assert expected(state) == ("mixed answer: app.example.test -> azure, api.example.test -> gcp",
                               "app.example.test A points to azure, expected gcp at epoch 3")


def test_a_changed_ttl_is_drift() -> None:
    """A TTL other than the configured one is named with both values."""
    assert expected(read(app_ttl=3600)) == ("app.example.test A TTL 3600s, configured 60s",)


def test_an_epoch_record_rewritten_at_the_same_epoch_is_drift() -> None:
    """Same epoch number, different text than the engine saw: someone else wrote it."""
    rewritten = "epoch=3 site=gcp op=someone"
    assert expected(read(epoch_text=rewritten)) == (
        f"epoch record _failover-epoch.app.example.test rewritten at epoch 3: {rewritten!r}, "
        f"the engine saw {TEXT!r}",)


def test_an_epoch_record_that_went_back_or_vanished_is_drift() -> None:
    """An epoch behind the engine's, or no epoch record at all, is a drift."""
    assert expected(read(epoch_text="epoch=2 site=gcp")) == (
        "epoch record _failover-epoch.app.example.test says epoch 2, behind the engine's 3",)
    assert expected(read(epoch_text=None)) == ("epoch record _failover-epoch.app.example.test is missing, "
                                               "expected epoch 3",)


def test_an_epoch_record_naming_another_site_than_the_records_is_drift() -> None:
    """The epoch record says azure while every record points to gcp."""
    assert expected(read(epoch_text="epoch=3 site=azure op=x"), seen=None) == (
        "epoch record _failover-epoch.app.example.test names azure at epoch 3, the records point to gcp",
        "epoch record _failover-epoch.app.example.test names azure at epoch 3, expected gcp")


def test_a_higher_consistent_epoch_is_a_move_not_a_drift_of_the_read_itself() -> None:
    """A peer's move (records, epoch record and TTLs agree on azure) is consistent: the caller adopts it."""
    moved = read(app=("198.51.100.10",), api=("2001:db8:1::10",), epoch_text="epoch=4 site=azure op=app-e4-aa")
    assert consistent_site(moved, CONFIGS) == "azure"
    assert drift(moved, CONFIGS).differences == ()
    assert consistent_site(read(app=("203.0.113.99",)), CONFIGS) is None
    assert consistent_site(read(app_ttl=5), CONFIGS) is None


def test_the_same_drift_has_the_same_key_and_a_different_one_another() -> None:
    """The acknowledgement covers exactly one drift: its key is stable for the same differences only."""
    one = drift(read(app=("203.0.113.99",)), CONFIGS, active="gcp", epoch=3)
    again = drift(read(app=("203.0.113.99",)), CONFIGS, active="gcp", epoch=3)
    other = drift(read(app=("203.0.113.98",)), CONFIGS, active="gcp", epoch=3)
    assert one.key == again.key != other.key


def test_without_an_expected_epoch_only_the_read_itself_is_compared() -> None:
    """``dns show`` without the journal: a consistent read is fine, a foreign value is not."""
    assert not drift(read(), CONFIGS)
    assert drift(read(app=("203.0.113.99",)), CONFIGS)


@given(site=st.sampled_from(["gcp", "azure"]), epoch=st.integers(1, 10**6), op=st.text("0123456789abcdef", min_size=1,
                                                                                   max_size=12))
def test_every_state_a_shift_writes_is_free_of_drift(site: str, epoch: int, op: str) -> None:
    """What the engine itself writes (any site, epoch and op token) never reads back as a drift, and is a move."""
    written = target_state(read(), CONFIGS, site, epoch, op)
    assert drift(written, CONFIGS, active=site, epoch=epoch, seen=written.epoch.text).differences == ()
    assert consistent_site(written, CONFIGS) == site
    assert drift(written, CONFIGS, active=site, epoch=epoch, seen="epoch=0 site=x").differences != ()


# -- the gates ------------------------------------------------------------------------------------
UP = SiteView("x", (), 2)
FACTS = ServiceFacts(service="app", active="gcp", home="gcp", sites={"gcp": UP, "azure": UP}, quorum_ok=True)
DRIFTED = replace(FACTS, dns_drift="app.example.test A answers 203.0.113.99: matches no site")


def test_an_unacknowledged_drift_refuses_every_move_with_its_reason() -> None:
    """Failover and failback (cannot_act), switchover and a full drill are refused naming dns_drift."""
    refused = cannot_act(DRIFTED)
    assert refused is not None and refused.code == "dns_drift"
    assert refused.detail.startswith("dns_drift: app.example.test A answers 203.0.113.99: matches no site; ")
    assert "acknowledge-drift" in refused.detail
    assert "dns_drift" in [r.code for r in switchover_preconditions(DRIFTED, "azure")]
    assert "dns_drift" in [r.code for r in drill_refusals(DRIFTED, "full")]


def test_no_drift_or_an_acknowledged_one_refuses_nothing() -> None:
    """Without a drift (an acknowledged one is None in the facts) no gate names it; a shadow drill never."""
    assert cannot_act(FACTS) is None
    assert "dns_drift" not in [r.code for r in drill_refusals(DRIFTED, "shadow")]


def test_an_automatic_failover_pages_instead_of_moving_over_a_drift() -> None:
    """A majority sees gcp down, every other gate passes, but the drift holds the move and pages why."""
    gcp, azure, witness = (VoterInfo("engine-gcp", "engine", "gcp"), VoterInfo("engine-azure", "engine", "azure"),
                           VoterInfo("witness", "witness", "witness"))
    own = ServiceVerdict(active="gcp", epoch=3, sites={"gcp": "down", "azure": "up"}, lag_s=1.0, shared_down=[])
    votes = tally([gcp, azure, witness], "engine-azure", own, {"witness": Received(own, 99.0, 10.0),
                                                               "engine-gcp": None}, now=100.0)
    args = (ServiceState("gcp", epoch=3), "app", "gcp", votes, "engine-azure", [gcp, azure], 100.0,
            PolicyConfig(rpo=30, cooldown=1800))
    assert decide_cluster(*args, rpo_applies=True).verdict is DecisionKind.FAILOVER
    held = decide_cluster(*args, rpo_applies=True, dns_drift="app.example.test TTL 3600s, configured 60s")
    assert held.verdict is DecisionKind.PAGE and not held.acting
    assert held.reasons == ("dns_drift: app.example.test TTL 3600s, configured 60s (not acknowledged)",)
    assert {"gate": "dns_drift", "ok": False,
            "detail": "dns_drift: app.example.test TTL 3600s, configured 60s (not acknowledged)"} \
        in held.evidence["gates"]

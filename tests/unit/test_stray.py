"""The stray-primary rule: who is the rightful primary for the epoch, and when a writable database is fenced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.core.stray import DbSeen, EpochClaim, retry_after, stray_decision

OWN = EpochClaim("this engine", 2, "azure")  # after a failover: azure active at epoch 2
DNS = EpochClaim("DNS", 2, "azure")
WRITABLE_GCP = DbSeen("gcp", True, False, "takes writes")


def test_a_returning_writable_ex_primary_is_fenced() -> None:
    """gcp takes writes, azure is active at epoch 2 for this engine, its peers and DNS: fence gcp."""
    d = stray_decision(WRITABLE_GCP, OWN, [EpochClaim("witness", 2, "azure")], [], DNS, True)
    assert d.fence and d.stray and d.rightful == "azure"
    assert d.reason == ("the database in gcp takes writes but azure is the active site at epoch 2 "
                        "(DNS agrees: azure at epoch 2)")


def test_the_active_site_of_the_current_epoch_is_never_fenced() -> None:
    """The active site's database taking writes is the rightful primary."""
    d = stray_decision(DbSeen("azure", True, False), OWN, [EpochClaim("engine-gcp", 2, "azure")], [], DNS, True)
    assert not d.fence and not d.stray and d.reason == "azure is the active site at epoch 2"


def test_read_only_or_unreachable_is_nothing_to_do() -> None:
    """A read-only or unreachable database is not a stray primary."""
    assert stray_decision(DbSeen("gcp", False, False), OWN, [], [], DNS, True).reason == \
        "the database in gcp is read-only"
    d = stray_decision(DbSeen("gcp", None, None, "connection refused"), OWN, [], [], DNS, True)
    assert not d.fence and not d.stray and d.reason == "the database in gcp is not known (connection refused)"


def test_never_while_an_operation_runs() -> None:
    """An operation under way (here or at a peer) owns the databases: neither fenced nor alerted as a stray."""
    d = stray_decision(WRITABLE_GCP, OWN, [], ["engine-azure runs shop-e3-abc"], DNS, True)
    assert not d.fence and not d.stray
    assert d.reason == ("the database in gcp takes writes but engine-azure runs shop-e3-abc: the runbook owns the "
                        "databases")


def test_a_subscribed_standby_is_not_a_primary() -> None:
    """A writable database with an enabled subscription is a logical standby: not fenced."""
    d = stray_decision(DbSeen("gcp", True, True), OWN, [], [], DNS, True)
    assert not d.fence and not d.stray


def test_an_engine_behind_a_peer_waits_until_it_adopted_the_epoch() -> None:
    """This engine believes gcp active at 1 but a peer reports azure at 2: it never fences the new primary."""
    stale = EpochClaim("this engine", 1, "gcp")
    d = stray_decision(DbSeen("azure", True, False), stale, [EpochClaim("engine-azure", 2, "azure")], [], None, False)
    assert not d.fence and d.stray is False
    assert d.reason == "engine-azure reports epoch 2 (active azure) and this engine knows 1: not fencing azure " \
        "before adopting it"


def test_dns_ahead_of_this_engine_also_holds_the_fence() -> None:
    """DNS at a higher epoch than this engine knows: not fencing until adopted."""
    stale = EpochClaim("this engine", 1, "gcp")
    d = stray_decision(DbSeen("azure", True, False), stale, [], [], EpochClaim("DNS", 2, "azure"), True)
    assert not d.fence


def test_unreadable_dns_means_no_fence() -> None:
    """With DNS configured but unreadable, who is active cannot be confirmed: not fencing, but a stray is said."""
    d = stray_decision(WRITABLE_GCP, OWN, [], [], None, True)
    assert not d.fence and d.stray and "DNS could not be read" in d.reason


def test_without_dns_configured_the_epochs_decide() -> None:
    """A service without DNS: this engine's and its peers' epochs agree, so the stray is fenced."""
    d = stray_decision(WRITABLE_GCP, OWN, [EpochClaim("witness", 2, "azure")], [], None, False)
    assert d.fence and d.reason == "the database in gcp takes writes but azure is the active site at epoch 2"


def test_disagreement_at_the_same_epoch_is_not_fenced() -> None:
    """DNS names gcp at the epoch this engine thinks azure is active: say so, do not fence."""
    d = stray_decision(WRITABLE_GCP, OWN, [], [], EpochClaim("DNS", 2, "gcp"), True)
    assert not d.fence and d.reason == "DNS says gcp is active at epoch 2, this engine says azure: not fencing"


def test_paused_alerts_but_never_fences() -> None:
    """Paused: the same evaluation prefixed PAUSED, a stray said, nothing fenced."""
    d = stray_decision(WRITABLE_GCP, OWN, [], [], DNS, True, paused=True)
    assert not d.fence and d.stray and d.reason.startswith("PAUSED: the database in gcp takes writes")


def test_retries_back_off_doubling_up_to_the_cap() -> None:
    """A failed fence is tried again after the interval doubling per failure, capped at max_backoff."""
    assert [retry_after(n, 0.5, 60.0) for n in range(10)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert retry_after(10_000, 0.5, 60.0) == 60.0


SITES = st.sampled_from(["gcp", "azure"])
CLAIMS = st.builds(EpochClaim, st.sampled_from(["a", "b"]), st.integers(0, 4), SITES)


@given(st.builds(DbSeen, SITES, st.sampled_from([True, False, None]), st.sampled_from([True, False, None])),
       st.builds(EpochClaim, st.just("this engine"), st.integers(0, 4), SITES), st.lists(CLAIMS, max_size=3),
       st.lists(st.just("x runs y"), max_size=1), st.one_of(st.none(), CLAIMS), st.booleans(), st.booleans())
def test_never_fences_the_rightful_primary(seen: DbSeen, own: EpochClaim, peers: list[EpochClaim], busy: list[str],
                                           dns: EpochClaim | None, dns_configured: bool, paused: bool) -> None:
    """Whatever is known: a fence only of a writable, unsubscribed database outside the active site of the highest
    epoch anyone reports, with nothing under way, not paused, and DNS read when configured."""
    d = stray_decision(seen, own, peers, busy, dns, dns_configured, paused=paused)
    if d.fence:
        top = max([own, *peers] + ([dns] if dns else []), key=lambda c: c.epoch)
        assert seen.writable is True and not seen.subscribed and not busy and not paused
        assert seen.site != own.active and top.epoch == own.epoch
        assert all(c.active == own.active for c in [own, *peers, *([dns] if dns else [])] if c.epoch == own.epoch)
        assert dns is not None or not dns_configured

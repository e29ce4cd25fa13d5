"""The write lease is about a writable database: the local primary's writability and when the lease is free."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.core.lease_echo import Certification
from engine.core.lease_rules import DOWN_AFTER, LeaseRelease, OldSiteEngine, PrimaryWritability, lease_release
from engine.core.verdict import ServiceVerdict


def view(writable: bool | None, *, active: str = "gcp", epoch: int = 3) -> ServiceVerdict:
    return ServiceVerdict(active=active, epoch=epoch, sites={"gcp": "down", "azure": "up"}, primary_writable=writable)


def test_no_beat_yet_is_unknown() -> None:
    """Before any heartbeat result the local primary's writability is unknown."""
    w = PrimaryWritability(stale_after=5.0)
    assert w.writable(100.0) is None and w.describe(100.0) == "no heartbeat result yet"


def test_a_beat_that_wrote_says_writable() -> None:
    """A successful heartbeat says writable while it is news."""
    w = PrimaryWritability(stale_after=5.0)
    w.beat(True, 10.0)
    assert w.writable(14.0) is True
    assert w.writable(15.5) is None  # too old: not known any more


def test_one_failed_beat_is_a_blip_two_say_not_writable() -> None:
    """One failed heartbeat leaves it unknown; DOWN_AFTER in a row say not writable, with the reason."""
    w = PrimaryWritability(stale_after=5.0)
    w.beat(True, 10.0)
    w.beat(False, 10.3, "connection refused")
    assert w.writable(10.4) is None
    for i in range(DOWN_AFTER - 1):
        w.beat(False, 10.6 + i, "connection refused")
    assert w.writable(11.0) is False
    assert w.describe(11.0) == f"not writable ({DOWN_AFTER} heartbeats failed in a row: connection refused)"
    w.beat(True, 11.5)
    assert w.writable(11.6) is True  # back: writable again


def test_a_failed_streak_goes_stale_to_unknown() -> None:
    """Not writable is news only while the last beat result is fresh: a stuck loop says unknown."""
    w = PrimaryWritability(stale_after=2.0)
    w.beat(False, 1.0, "x")
    w.beat(False, 1.5, "x")
    assert w.writable(3.4) is False and w.writable(3.6) is None


NOT = Certification(False, (), 29.9)
YES = Certification(True, ("azure-1", "witness"), 0.0)


def test_the_lease_is_free_once_the_old_sites_engine_reports_its_primary_down() -> None:
    """A fresh verdict at the starting epoch, old site active, primary not writable: promote at once."""
    release = lease_release([OldSiteEngine("engine-gcp", 0.1, True, view(False), NOT)], "gcp", 3)
    assert release == LeaseRelease(True, 0.0, ("engine-gcp",),
                                   ("engine-gcp reports its primary not writable (lease given up)",))


def test_a_live_engine_whose_primary_writes_keeps_the_lease() -> None:
    """Heard 0.1 s ago, its primary writable (or unknown), not certified silent: at least 29.9 s to go."""
    for writable in (True, None):
        release = lease_release([OldSiteEngine("engine-gcp", 0.1, True, view(writable), NOT)], "gcp", 3)
        assert not release.free and release.remaining_s == 29.9 and release.released_by == ()
        assert release.sentence == "engine-gcp last heard here 0.1s ago (not yet certified silent)"


def test_a_report_about_another_epoch_or_active_site_does_not_free_it() -> None:
    """Only a report at the operation's starting epoch with the old site still active gives the lease up."""
    for stale in (view(False, epoch=2), view(False, active="azure")):
        assert not lease_release([OldSiteEngine("engine-gcp", 1.0, True, stale, NOT)], "gcp", 3).free


def test_certified_silence_frees_it() -> None:
    """An engine certified silent by enough voters frees the lease, and the sentence names the certifiers."""
    release = lease_release([OldSiteEngine("engine-gcp", 7.0, True, None, YES)], "gcp", 3)
    assert release.free and release.sentence == ("engine-gcp last heard here 7.0s ago (certified silent by "
                                                 "azure-1, witness)")
    never = lease_release([OldSiteEngine("engine-gcp", 2.0, False, None, NOT)], "gcp", 3)
    assert not never.free and never.remaining_s == 29.9
    assert never.sentence == "engine-gcp never heard since this engine started 2.0s ago (not yet certified silent)"


def test_every_engine_of_the_old_site_must_give_up_or_fall_silent() -> None:
    """Two engines in the old site: one reporting its primary down is not enough while the other holds it."""
    engines = [OldSiteEngine("gcp-1", 0.2, True, view(False), NOT),
               OldSiteEngine("gcp-2", 5.0, True, view(True), Certification(False, (), 2.5))]
    release = lease_release(engines, "gcp", 3)
    assert not release.free and release.remaining_s == 2.5 and release.released_by == ("gcp-1",)


def test_no_engine_in_the_old_site_means_nothing_to_wait_for() -> None:
    """Without an engine in the old site the lease is free at once."""
    release = lease_release([], "gcp", 3)
    assert release.free and release.sentence == "no engine there"


@given(st.lists(st.tuples(st.booleans(), st.sampled_from([True, False, None]), st.booleans()), max_size=4))
def test_free_exactly_when_every_engine_gave_up_or_was_certified_silent(
        engines: list[tuple[bool, bool | None, bool]]) -> None:
    """Free iff each engine reports its primary not writable or is certified silent."""
    old = [OldSiteEngine(f"e{i}", 1.0, True, view(w) if fresh else None, YES if certified else NOT)
           for i, (certified, w, fresh) in enumerate(engines)]
    release = lease_release(old, "gcp", 3)
    expected = all((fresh and w is False) or certified for certified, w, fresh in engines)
    assert release.free is expected
    assert (release.remaining_s == 0.0) is expected

"""The echo lease (pure): the holder's expiry, the majority's certificates of silence, and that the two
never overlap: whenever the runner may promote, the holder's fence was already complete on its own clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.lease_echo import Certifier, certifiers_needed, certify_silent, judge_holder_lease, lease_expiry
from tests.support.lease_sim import HOLDER, simulate


def test_the_expiry_is_the_majority_minus_one_th_newest_echo_plus_the_length() -> None:
    """Five voters (majority 3): the holder needs two promises, so the second newest stamp counts."""
    assert lease_expiry([10.0, 12.0, 11.0, 3.0], 3, 6.0) == 17.0
    assert lease_expiry([10.0], 3, 6.0) is None
    assert lease_expiry([10.0], 2, 6.0) == 16.0


def test_the_startup_grace_counts_from_the_start() -> None:
    """Right after a start no echo can be back yet: the process's start stands in for a stamp."""
    assert lease_expiry([], 2, 6.0, floor=100.0) == 106.0
    assert lease_expiry([104.0], 2, 6.0, floor=100.0) == 110.0


def test_the_holder_fences_fence_lead_before_expiry() -> None:
    """Echoed at 10.0 with a 6 s lease and a 2.5 s lead: holding until 13.5, fencing from then on."""
    hold = judge_holder_lease([10.0], 2, 6.0, 2.5, 13.4)
    assert (hold.action, hold.expires_at, hold.fence_at, hold.granted) == ("hold", 16.0, 13.5, 2)
    assert judge_holder_lease([10.0], 2, 6.0, 2.5, 13.5).action == "fence"
    assert judge_holder_lease([], 2, 6.0, 2.5, 0.0).action == "fence"  # never granted, no grace


def test_three_voters_need_both_others_to_certify() -> None:
    """n=3, majority 2: the holder keeps a lease with one promise, so both other voters must certify."""
    assert certifiers_needed(3, 2) == 2 and certifiers_needed(5, 3) == 3


def test_certified_when_silence_is_ripe_and_given_after_the_holder_had_to_fence() -> None:
    """Both heard the engine last at 100; at 106.5 the silence is ripe, the voter's word given after 104."""
    certs = [Certifier("me", 100.0, 106.5), Certifier("witness", 100.0, 105.0)]
    ok = certify_silent(certs, 2, 6.0, 2.5, 6.5, 106.5)
    assert ok.certified and ok.by == ("me", "witness")
    early = certify_silent(certs, 2, 6.0, 2.5, 6.5, 106.0)
    assert not early.certified and early.remaining_s == 0.5


def test_a_word_given_before_the_holder_had_to_fence_does_not_count() -> None:
    """The witness's verdict was made before 103.5 (its echo of us is that old): later echoes may renew it."""
    certs = [Certifier("me", 100.0, 110.0), Certifier("witness", 100.0, 103.0)]
    assert not certify_silent(certs, 2, 6.0, 2.5, 6.5, 110.0).certified
    assert not certify_silent([Certifier("me", 100.0, 110.0), Certifier("witness", 100.0, None)],
                              2, 6.0, 2.5, 6.5, 110.0).certified


def test_a_voter_that_heard_the_engine_lately_does_not_certify() -> None:
    """One voter still hears the engine: with three voters the release waits."""
    certs = [Certifier("me", 100.0, 110.0), Certifier("witness", 109.0, 109.8)]
    result = certify_silent(certs, 2, 6.0, 2.5, 6.5, 110.0)
    assert not result.certified and result.remaining_s == 5.5


def test_a_clean_cut_is_released_within_the_wait_and_a_few_ticks() -> None:
    """The holder cut off from both voters at 10 s fences first; the runner promotes by 10 + 6.5 + 2 ticks."""
    cut = frozenset({(HOLDER, "v1"), (HOLDER, "v2"), ("v1", HOLDER), ("v2", HOLDER)})
    out = simulate(1, 3, 6.0, 2.0, 0.5, 0.5, 10.0, cut, 0.0, 0.01)
    assert out.fence_at is not None and out.release_at is not None
    assert out.fence_at + 2.0 <= out.release_at <= 10.0 + 6.5 + 2.0


LINKS = [(a, b) for a in ("h", "v1", "v2", "v3", "v4") for b in ("h", "v1", "v2", "v3", "v4") if a != b]


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), voters=st.sampled_from([3, 5]), length=st.floats(4.6, 12.0),
       fence=st.floats(0.1, 2.0), cut_at=st.floats(0.0, 15.0), cut=st.sets(st.sampled_from(LINKS)),
       drop=st.floats(0.0, 0.6), max_delay=st.floats(0.001, 3.0), whole=st.booleans())
def test_whenever_the_runner_may_promote_the_holder_has_fenced(
        seed: int, voters: int, length: float, fence: float, cut_at: float, cut: set[tuple[str, str]],
        drop: float, max_delay: float, whole: bool) -> None:
    """For random clocks, delays, drops, reorderings and (asymmetric) cuts: release implies that the holder
    started fencing at least its fencing timeout earlier (its fence complete on its own clock)."""
    names = {"h"} | {f"v{i}" for i in range(1, voters)}
    if whole:  # the holder cut off both ways (or dead), plus whatever else
        cut |= {(a, b) for a, b in LINKS if HOLDER in (a, b)}
    links = frozenset((a, b) for a, b in cut if a in names and b in names)
    out = simulate(seed, voters, length, fence, 0.5, 0.5, cut_at, links, drop, max_delay, end=cut_at + 25.0)
    if out.release_at is not None:
        assert out.fence_at is not None, out
        assert out.fence_at + fence <= out.release_at, out

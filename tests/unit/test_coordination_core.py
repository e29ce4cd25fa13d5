"""The coordination seam's pure parts: the lease holder's self-fence rule, the epoch and operator records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.clock import ManualClock
from engine.core.coordination import (
    NO_EPOCH,
    Epoch,
    Holder,
    HolderView,
    Unavailable,
    Vote,
    judge_holder,
    keepalive_due,
)
from engine.core.coordination_values import Arm, Breaker, DriftAck, DrillLock, OperatorValue, Pause, decode, encode

AZURE = Holder("azure", "azure-1")


def test_a_fresh_lease_is_kept_with_its_sentence() -> None:
    """Renewed 2 s ago with a 20 s TTL: keep, valid for at least 18 s."""
    judgement = judge_holder(HolderView(ttl=20, renewed_at=100), now=102, fence_timeout=10, margin=1)
    assert judgement.action == "keep"
    assert judgement.message == "holding: lease renewed 2.0s ago, valid for at least 18.0s"
    assert (judgement.expires_at, judgement.fence_at) == (120, 109)


def test_failing_renewals_are_late_before_the_fence_point() -> None:
    """Renewals failing for 7 s of a 20 s lease that needs 11 s to fence: late, fencing in 2 s, not yet fencing."""
    judgement = judge_holder(HolderView(ttl=20, renewed_at=100), now=107, fence_timeout=10, margin=1)
    assert judgement.action == "late"
    assert judgement.message == "holding: lease renewal late by 2.0s; self-fencing in 2.0s unless renewed"


def test_the_holder_fences_when_keepalive_failed_longer_than_the_lease_allows() -> None:
    """On an injected clock: no renewal since t0, the rule turns to fence exactly at ttl - fence_timeout - margin."""
    clock = ManualClock()
    view = HolderView(ttl=20, renewed_at=clock.monotonic())
    actions = []
    for _ in range(12):
        actions.append(judge_holder(view, clock.monotonic(), fence_timeout=10, margin=1).action)
        clock.advance(1)
    assert actions == ["keep"] * 6 + ["late"] * 3 + ["fence"] * 3
    judgement = judge_holder(view, 9.0, fence_timeout=10, margin=1)
    assert judgement.message == ("self-fencing: no lease renewal for 9.0s; the lease may expire in 11.0s and "
                                 "fencing needs 10s + margin 1s")


def test_a_lost_lease_fences_at_once() -> None:
    """The store saying the lease is gone fences even right after a renewal."""
    judgement = judge_holder(HolderView(ttl=20, renewed_at=100, lost=True), now=100.5, fence_timeout=10, margin=1)
    assert (judgement.action, judgement.message) == ("fence", "self-fencing: the store says the write lease is gone")


@given(ttl=st.floats(2, 300), silent=st.floats(0, 400), fence_timeout=st.floats(0, 60), margin=st.floats(0, 5))
def test_the_holder_never_keeps_writing_into_the_fencing_window(ttl: float, silent: float, fence_timeout: float,
                                                                  margin: float) -> None:
    """Whatever the numbers, a holder not fencing has fence_timeout + margin left before the lease may expire."""
    judgement = judge_holder(HolderView(ttl, 1000.0), 1000.0 + silent, fence_timeout, margin)
    assert judgement.expires_at - judgement.fence_at == pytest.approx(fence_timeout + margin)
    if judgement.action != "fence":
        assert judgement.expires_at - (1000.0 + silent) > fence_timeout + margin - 1e-6


def test_keepalive_is_due_after_its_interval() -> None:
    """A renewal is due once the interval since the last successful one has passed."""
    view = HolderView(ttl=20, renewed_at=50)
    assert not keepalive_due(view, 54.9, interval=5)
    assert keepalive_due(view, 55, interval=5)


def test_an_epoch_record_round_trips() -> None:
    """An epoch written as a record reads back equal, with the store's revision."""
    epoch = NO_EPOCH.successor("azure", AZURE, "t-1")
    assert Epoch.from_record(epoch.record(), 7) == Epoch(1, "azure", AZURE, "t-1", 7)


@pytest.mark.parametrize("record", [{}, {"epoch": -1}, {"epoch": True}, {"epoch": 2, "site": 5}])
def test_an_epoch_record_that_does_not_decode_is_malformed(record: dict[str, object]) -> None:
    """A record without a whole, non-negative epoch number or with a non-text site is malformed, never a guess."""
    result = Epoch.from_record(record, 3)  # type: ignore[arg-type]
    assert isinstance(result, Unavailable) and result.kind == "malformed"


def test_a_vote_record_round_trips() -> None:
    """A vote written as a record reads back equal, with the store's revision."""
    vote = Vote("shop", "azure-1", "azure", 3, {"gcp": "down", "azure": "up"}, 1_700_000_000.5)
    assert Vote.from_record("shop", vote.record(), 9) == Vote("shop", "azure-1", "azure", 3, vote.summary,
                                                             vote.at, 9)


VALUES = st.one_of(
    st.builds(Pause, st.booleans(), st.one_of(st.none(), st.floats(0, 1e10)), st.text(max_size=20)),
    st.builds(Breaker, st.integers(0, 1000), st.booleans()),
    st.builds(Arm, st.booleans()),
    st.builds(DrillLock, st.text(max_size=10), st.text(max_size=10), st.floats(0, 1e10)),
    st.builds(DriftAck, st.text(max_size=40)),
)


@given(value=VALUES, by=st.text(max_size=10), at=st.floats(0, 1e10))
def test_every_operator_value_round_trips(value: OperatorValue, by: str, at: float) -> None:
    """Any operator value, encoded with who and when, decodes to the same value, who and when."""
    assert decode(value.key, encode(value, by, at)) == (value, by, at)


@pytest.mark.parametrize(("key", "record"), [
    ("pause", {"key": "pause", "value": {"paused": "yes", "until": None, "reason": ""}, "by": "a", "at": 1}),
    ("breaker", {"key": "breaker", "value": {"count": -1, "tripped": False}, "by": "a", "at": 1}),
    ("arm", {"key": "breaker", "value": {"armed": True}, "by": "a", "at": 1}),
    ("drift_ack", {"key": "drift_ack", "value": {"fingerprint": "x"}, "by": "a"}),
])
def test_an_operator_record_that_does_not_decode_names_its_key(key: str, record: dict[str, object]) -> None:
    """A stored operator record of the wrong shape is reported as a sentence naming its key."""
    problem = decode(key, record)  # type: ignore[arg-type]
    assert isinstance(problem, str) and problem.startswith(f"operator key {key}:")


def test_a_pause_with_an_expiry_ends_by_itself() -> None:
    """A pause until t is active before t and over from t on; a pause without expiry lasts."""
    assert Pause(True, 100.0, "maintenance").active(99.9)
    assert not Pause(True, 100.0, "maintenance").active(100.0)
    assert Pause(True, None, "maintenance").active(1e12)
    assert not Pause(False, None, "").active(0)

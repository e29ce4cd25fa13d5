"""Cadence maths: fixed phase, jitter around the nominal slot, no drift, skipped slots counted."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from engine.core.cadence import Cadence, default_jitter, phase_for


def test_phase_is_stable_and_inside_the_interval() -> None:
    """The same name always gets the same phase, within [0, interval)."""
    assert phase_for("api/gcp/http", 10) == phase_for("api/gcp/http", 10)
    assert 0 <= phase_for("api/gcp/http", 10) < 10
    assert phase_for("api/gcp/http", 10) != phase_for("api/azure/http", 10)


def test_phases_spread_signals() -> None:
    """A thousand signals spread over the interval rather than bunching at its start."""
    phases = sorted(phase_for(f"svc/site/probe{i}", 10.0) for i in range(1000))
    buckets = [0] * 10
    for p in phases:
        buckets[int(p)] += 1
    assert min(buckets) > 60 and max(buckets) < 140


@given(st.integers(min_value=1, max_value=10_000))
def test_kth_slot_does_not_drift(k: int) -> None:
    """The k-th due time is start + phase + k * interval, however many slots came before."""
    cadence = Cadence(start=100.0, interval=10.0, phase=3.0)
    for _ in range(k):
        cadence.advance_past(cadence.nominal(cadence.k))  # each check ran exactly on time
    assert cadence.due() == 100.0 + 3.0 + k * 10.0


def test_jitter_is_bounded_and_does_not_accumulate() -> None:
    """Jitter moves a slot by at most the jitter, around the nominal time, never cumulatively."""
    rng = random.Random(7)
    cadence = Cadence(start=0.0, interval=10.0, phase=1.0, jitter=default_jitter(10.0))
    assert default_jitter(10.0) == 0.2 and default_jitter(60.0) == 0.25
    for _ in range(1000):
        due = cadence.due(rng)
        assert abs(due - cadence.nominal(cadence.k)) <= 0.2
        cadence.advance_past(due)
    assert cadence.k == 1000


def test_late_loop_skips_missed_slots() -> None:
    """When the loop wakes three intervals late, the stale slots are skipped and counted."""
    cadence = Cadence(start=0.0, interval=10.0, phase=0.0)
    skipped = cadence.advance_past(35.0)
    assert skipped == 2
    assert cadence.nominal(cadence.k) == 30.0

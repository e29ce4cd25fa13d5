"""The data-loss verdict (engine.core.loss): an upper bound it can justify, zero only by proof."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.loss import (
    LossEvidence,
    PrimaryEnd,
    Seen,
    SyncEvidence,
    clock_text,
    judge,
    rpo_gate,
    write_stall,
)

T = 1_700_000_000.0
ON = SyncEvidence("on", confirmed_at=T, degrade_after=10.0, check_interval=1.0)
STRICT = SyncEvidence("strict", confirmed_at=T)

CASES = [
    # (name, evidence, kind, bound_s, unknown_since)
    ("async, engine silent", LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 2.5, "engine_silent")),
     "bounded", 2.5, None),
    ("async, fenced", LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 4, "fenced")), "bounded", 4.0, None),
    ("async, no end known", LossEvidence(Seen(T), Seen(T + 1)), "unknown", None, T),
    ("nothing known", LossEvidence(end=PrimaryEnd(T, "fenced")), "unknown", None, None),
    ("WAL applied up to the last seen commit", LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 3, "fenced"),
                                                            lsn_gap_bytes=0), "bounded", 2.0, None),
    ("WAL not applied", LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 3, "fenced"), lsn_gap_bytes=4096),
     "bounded", 3.0, None),
    ("fenced before the applied beat (a drain)", LossEvidence(Seen(T + 5), Seen(T + 5),
                                                              PrimaryEnd(T + 4, "fenced")), "zero_by_proof", 0.0, None),
    ("silent before the applied beat: an assumption, not a proof",
     LossEvidence(Seen(T + 5), Seen(T + 5), PrimaryEnd(T + 4, "engine_silent")), "bounded", 0.0, None),
    ("on, silent within the delay, but a lease lets a cut-off engine act later",
     LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 8, "engine_silent"), lease_end_at=T + 12, sync=ON),
     "bounded", 0.0, None),
    ("strict confirmed, no end", LossEvidence(Seen(T), Seen(T + 1), sync=STRICT), "zero_by_proof", 0.0, None),
    ("on, ended within the degrade delay", LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 8, "engine_silent"),
                                                        sync=ON), "zero_by_proof", 0.0, None),
    ("on, ended after a possible degrade", LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 12, "engine_silent"),
                                                        sync=ON), "bounded", 3.0, None),
    ("on, no end: unknown from the earliest degrade", LossEvidence(Seen(T), Seen(T + 1), sync=ON),
     "unknown", None, T + 9),
    ("on, degraded", LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 6, "fenced"),
                                  sync=SyncEvidence("on", T, degraded_since=T + 2, degrade_after=10.0)),
     "bounded", 4.0, None),
    ("on, never confirmed", LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 2, "fenced"),
                                         sync=SyncEvidence("on", None, degrade_after=10.0)), "bounded", 2.0, None),
    ("strict, degrade record older than the confirmation is ignored",
     LossEvidence(Seen(T), sync=SyncEvidence("strict", T, degraded_since=T - 5)), "zero_by_proof", 0.0, None),
]


@pytest.mark.parametrize(("name", "evidence", "kind", "bound", "since"), CASES, ids=[c[0] for c in CASES])
def test_verdict_table(name: str, evidence: LossEvidence, kind: str, bound: float | None,
                       since: float | None) -> None:
    """Each row of evidence gives its verdict kind, bound and unknown-since moment."""
    verdict = judge(evidence)
    assert (verdict.kind, verdict.bound_s, verdict.unknown_since) == (kind, bound, since), verdict.sentence
    assert verdict.ok == (kind == "zero_by_proof") and verdict.alert == (kind != "zero_by_proof")


def test_bounded_sentence_says_what_is_known_and_what_is_assumed() -> None:
    """An engine that went silent is an assumption (a whole-site loss), stated, never "it fences itself"."""
    verdict = judge(LossEvidence(Seen(T), Seen(T + 1), PrimaryEnd(T + 2.5, "engine_silent"), lease_end_at=T + 10,
                                 standby="azure", primary="gcp"))
    assert verdict.sentence == (
        f"possible loss <= 2.5 s: azure has every acknowledged write up to {clock_text(T)}, gcp may have "
        f"acknowledged writes until {clock_text(T + 2.5)} (1.5 s of it unobserved); known: azure applied gcp's "
        f"heartbeat of {clock_text(T)}; gcp was last seen writing at {clock_text(T + 1)}; gcp's engine went silent "
        f"at {clock_text(T + 2.5)}; assumed: gcp's database stopped with its engine (a whole-site loss); if the "
        f"database outlived its engine, its self-fencing lease ended by {clock_text(T + 10)}: possible loss <= 10 s")
    assert verdict.status == "possible loss <= 2.5 s" and verdict.bound_if_outlived_s == 10.0
    assert "fences itself" not in verdict.sentence


def test_zero_sentence_names_its_proof_and_assumptions() -> None:
    """Zero by proof says which confirmation it rests on and what it assumes of clients and operators."""
    verdict = judge(LossEvidence(Seen(T), sync=STRICT, standby="azure", primary="gcp"))
    assert verdict.status == "ok" and verdict.metric_value() == 0.0
    assert verdict.sentence.startswith("no acknowledged write lost, by proof (strict synchronous commit")
    assert "only this engine changes synchronous_standby_names" in verdict.assumed


def test_unknown_reports_infinite_metric_and_since() -> None:
    """Unknown is +Inf in the metric and "unknown since T" in status."""
    verdict = judge(LossEvidence(Seen(T)))
    assert verdict.metric_value() == math.inf and verdict.status == f"unknown since {clock_text(T)}"
    assert verdict.to_dict()["kind"] == "unknown"


times = st.floats(min_value=0, max_value=1000, allow_nan=False)


@given(has=times, seen=times, end=times, confirmed=times, degraded=st.one_of(st.none(), times),
       after=st.floats(min_value=0.5, max_value=100), strict=st.booleans())
def test_a_degraded_period_is_never_zero(has: float, seen: float, end: float, confirmed: float,
                                         degraded: float | None, after: float, strict: bool) -> None:
    """Zero by proof only when no acknowledged write can have been made without the standby before the end."""
    sync = SyncEvidence("strict" if strict else "on", T + confirmed, None if degraded is None else T + degraded,
                        after, 0.25)
    verdict = judge(LossEvidence(Seen(T + has), Seen(T + seen), PrimaryEnd(T + end, "fenced"), sync=sync))
    covered = sync.covered_until()
    assert covered is not None
    if verdict.ok:  # the standby has every write acknowledged before the end (or strict never acknowledged one)
        assert covered == math.inf or T + end <= max(covered, T + has)
    else:
        assert verdict.kind == "bounded" and verdict.bound_s is not None
    if degraded is not None and degraded >= confirmed and end > max(degraded, has):
        assert not verdict.ok  # the primary outlived the degrade and what the standby holds: never zero


@given(has=times, gap=times, tail=times)
def test_bound_covers_every_write_between_the_applied_beat_and_the_end(has: float, gap: float, tail: float) -> None:
    """Asynchronous: the bound is at least the span from the standby's applied beat to the primary's end."""
    end = T + has + gap + tail
    verdict = judge(LossEvidence(Seen(T + has), Seen(T + has + gap), PrimaryEnd(end, "engine_silent")))
    assert verdict.kind == "bounded" and verdict.bound_s is not None
    assert verdict.bound_s >= round(end - (T + has), 3) - 1e-9


def test_rpo_gate_passes_on_confirmed_synchronous_commit_whatever_the_lag() -> None:
    """Confirmed synchronous commit passes the RPO gate; an expired confirmation falls back to the lag."""
    ok, detail = rpo_gate(None, 30.0, ON, T + 5)
    assert ok and detail.startswith("synchronous commit (on) confirmed at")
    assert rpo_gate(None, 30.0, ON, T + 20) == (False, "replication lag is unknown")
    assert rpo_gate(42.0, 30.0, SyncEvidence(), T) == (False, "standby lag 42.0s exceeds RPO 30s")


def test_write_stall_per_mode() -> None:
    """The RTO estimate learns how long writes wait on a lost standby: none, the degrade delay, or forever."""
    assert write_stall("off", 10.0)[0] == 0.0
    assert write_stall("on", 10.0)[0] == 10.0
    assert write_stall("strict", 10.0)[0] is None

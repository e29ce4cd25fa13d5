"""The data-loss window after a failover, judged against the RPO: pure."""

from __future__ import annotations

import pytest

from actions.consistency import CommitPoint, assess, primary_end, silent_since
from engine.core.loss import PrimaryEnd


def test_loss_window_above_rpo_is_a_breach_with_the_sentence() -> None:
    """42 s between the last known primary commit and the new primary's latest beat breaches a 30 s RPO."""
    result = assess(CommitPoint(1042.0, "0/3000000", "gcp"), CommitPoint(1000.0, "0/2000000", "gcp"), 30.0)
    assert (result.status, result.loss_window_s, result.alert) == ("rpo_breached", 42.0, True)
    assert result.sentence == ("RPO breached: at least about 42 s of writes may be lost "
                               "(RPO 30s; writes after the last heartbeat are not counted)")


@pytest.mark.parametrize(("window", "sentence"), [
    (0.0, "ok: the new primary has every write up to the last known primary commit "
          "(writes after the last heartbeat (up to 5s) are not counted)"),
    (4.5, "ok: about 4.5 s of writes may be lost, within RPO 1m (writes after the last heartbeat (up to 5s) "
          "are not counted)"),
    (60.0, "ok: about 60 s of writes may be lost, within RPO 1m (writes after the last heartbeat (up to 5s) "
           "are not counted)"),
])
def test_windows_within_rpo_are_ok(window: float, sentence: str) -> None:
    """A window up to the RPO is ok, and the sentence gives the size and says it is a lower bound."""
    result = assess(CommitPoint(1000.0 + window), CommitPoint(1000.0), 60.0, interval=5.0)
    assert result.ok and result.sentence == sentence


def test_the_wal_gap_is_reported_when_known() -> None:
    """The exact LSN comparison is appended: all applied, or how many bytes were not."""
    applied = assess(CommitPoint(1000.0), CommitPoint(1000.0), 60.0, lsn_gap_bytes=0)
    assert applied.sentence.endswith("; its WAL was applied up to the last known commit LSN")
    missing = assess(CommitPoint(1042.0), CommitPoint(1000.0), 30.0, lsn_gap_bytes=4096)
    assert missing.sentence.endswith("; 4096 B of its WAL before the last known commit LSN were not applied")
    assert missing.to_dict()["lsn_gap_bytes"] == 4096


def test_new_primary_ahead_counts_as_no_loss() -> None:
    """A replicated beat newer than the journal's point (journal lagged) means no loss, not a negative one."""
    assert assess(CommitPoint(1000.0), CommitPoint(1005.0), 30.0).loss_window_s == 0.0


def test_unknown_when_either_point_is_missing() -> None:
    """Without a journal point or a replicated heartbeat the loss is unknown, and that alerts."""
    no_journal = assess(None, CommitPoint(1.0), 30.0)
    no_beat = assess(CommitPoint(1.0), None, 30.0)
    assert no_journal.status == no_beat.status == "unknown" and no_journal.alert
    assert no_journal.sentence == "data loss unknown: no last known primary commit point in the journal"
    assert no_beat.sentence == "data loss unknown: the new primary holds no replicated heartbeat"


def test_commit_point_round_trips_and_reads_the_probe_detail() -> None:
    """``to_dict``/``from_dict`` round-trip, and the lag probe's ``primary_commit`` detail is accepted."""
    point = CommitPoint(1700000000.5, "0/1505EE0", "gcp", "gcp")
    assert CommitPoint.from_dict(point.to_dict()) == point
    assert point.to_dict()["primary"] == "gcp"
    assert CommitPoint.from_dict({"heartbeat_at": 12, "lsn": "0/1"}) == CommitPoint(12.0, "0/1", None, None)
    result = assess(point, CommitPoint(1700000000.0), 30.0)
    assert result.to_dict()["last_known"] == point.to_dict()


def test_primary_end_prefers_a_fence_then_a_report_then_silence() -> None:
    """The end of the old primary is the strongest fact known: fenced, reported down, or its engine silent."""
    assert primary_end(fenced_at=5.0, reported_down_at=4.0, engine_silent_at=3.0) == PrimaryEnd(5.0, "fenced")
    assert primary_end(reported_down_at=4.0, engine_silent_at=3.0) == PrimaryEnd(4.0, "reported_down")
    assert primary_end(engine_silent_at=3.0) == PrimaryEnd(3.0, "engine_silent")
    assert primary_end(engine_silent_at=float("nan")) is None and primary_end() is None


def test_silent_since_adds_one_cadence_and_one_timeout() -> None:
    """An engine last heard at T is silent by T + its cadence + one request timeout at the latest."""
    assert silent_since(100.0, 0.25, 0.25) == 100.5

"""When the promotion may end the standby's apply worker at once (engine.core.apply_stop)."""

from __future__ import annotations

from typing import Any

from engine.core.apply_stop import apply_stop


def rec(state: str, started: float, finished: float | None, **data: Any) -> dict[str, Any]:
    return {"state": state, "started_at": started, "finished_at": finished, "data": data}


def test_a_drain_after_the_fence_lets_the_worker_be_ended_at_once() -> None:
    """A done fence followed by a done drain proves every acknowledged write applied: end the worker at once."""
    decision = apply_stop({"fence": rec("done", 10.0, 10.05), "drain": rec("done", 10.06, 10.1, ok=True)})
    assert decision.at_once
    assert "drain proved" in decision.why


def test_without_a_drain_the_worker_is_waited_for() -> None:
    """A failover (no drain step) or a drain not finished waits for the apply worker to exit by itself."""
    assert not apply_stop({"fence": rec("done", 10.0, 10.05)}).at_once
    assert not apply_stop({"fence": rec("done", 10.0, 10.05), "drain": rec("started", 10.06, None)}).at_once
    assert not apply_stop({"fence": rec("done", 10.0, 10.05), "drain": rec("failed", 10.06, 12.0)}).at_once


def test_a_fence_skipped_or_missing_means_waiting() -> None:
    """Without a fence this operation made, nothing stops clients from committing: wait for the worker."""
    assert not apply_stop({"drain": rec("done", 10.06, 10.1, ok=True)}).at_once
    assert not apply_stop({"fence": rec("skipped", 10.0, 10.05), "drain": rec("done", 10.06, 10.1)}).at_once


def test_a_fence_again_after_the_drain_voids_its_proof() -> None:
    """A resumed operation fences again after the drain: the drain no longer covers the time since, so wait."""
    steps = {"fence": rec("done", 20.0, 20.05), "drain": rec("done", 10.06, 10.1, ok=True)}
    decision = apply_stop(steps)
    assert not decision.at_once
    assert "fenced again" in decision.why


def test_a_drain_that_says_not_ok_is_no_proof() -> None:
    """A drain record whose result is not ok proves nothing (defensive: such a drain fails its step)."""
    assert not apply_stop({"fence": rec("done", 10.0, 10.05), "drain": rec("done", 10.06, 10.1, ok=False)}).at_once

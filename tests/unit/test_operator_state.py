"""The cluster-wide operator state's merge rule (engine.core.operator_state)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.core.operator_state import (
    KEYS,
    Stamped,
    breaker_open,
    disagreements,
    merge,
    merge_all,
    next_version,
    paused,
    write,
)
from engine.core.verdict import ServiceVerdict


def stamp(version: int, voter: str, **value: object) -> Stamped:
    return Stamped(dict(value), version, voter, 100.0 + version, "alice")


def test_higher_version_wins_whichever_side_holds_it() -> None:
    """Per key, the entry with the higher version is kept, from either side."""
    old, new = stamp(1, "engine-gcp", paused=True), stamp(2, "engine-azure", paused=False)
    assert merge({"pause": old}, {"pause": new})[0]["pause"] == new
    assert merge({"pause": new}, {"pause": old})[0]["pause"] == new


def test_keys_merge_independently() -> None:
    """A key only one side has is kept; each key has its own winner."""
    merged, conflicts = merge({"pause": stamp(3, "a", paused=True)}, {"arm": stamp(1, "b", armed_at=5.0)})
    assert set(merged) == {"pause", "arm"} and conflicts == []


def test_same_version_different_values_is_a_conflict_won_by_the_voter_id() -> None:
    """Two writes at one version with different values: the higher voter id wins and the conflict is reported."""
    a, b = stamp(4, "engine-azure", paused=True), stamp(4, "engine-gcp", paused=False)
    merged, conflicts = merge({"pause": a}, {"pause": b})
    assert merged["pause"] == b
    assert len(conflicts) == 1 and conflicts[0].kept == b and conflicts[0].overruled == a
    assert conflicts[0].to_dict()["version"] == 4


def test_the_same_write_seen_twice_is_no_conflict() -> None:
    """Merging an entry with itself changes nothing and reports nothing."""
    a = stamp(4, "engine-gcp", paused=True)
    assert merge({"pause": a}, {"pause": a}) == ({"pause": a}, [])


def test_a_write_takes_a_version_above_everything_seen() -> None:
    """A new write is versioned max(seen, every held version) + 1 and names its voter."""
    state = {"pause": stamp(7, "a", paused=True)}
    assert next_version(3, state) == 8 and next_version(10, state) == 11
    out = write(state, 10, "arm", {"armed_at": 1.0}, "engine-gcp", 50.0, "bob")
    assert out["arm"].version == 11 and out["arm"].voter == "engine-gcp" and out["arm"].by == "bob"


def test_an_unknown_key_is_refused() -> None:
    """Only the five operator keys exist."""
    try:
        write({}, 0, "colour", {}, "a", 0.0, None)
    except ValueError as exc:
        assert "colour" in str(exc)
    else:
        raise AssertionError("an unknown key was written")


def test_pause_with_expiry() -> None:
    """A pause holds until its expiry, then reads as resumed; a resume entry is not paused."""
    state = {"pause": stamp(1, "a", paused=True, until=200.0, reason="maintenance")}
    assert paused(state, 150.0) == (True, 200.0)
    assert paused(state, 200.0) == (False, None)
    assert paused({"pause": stamp(2, "a", paused=True, until=None)}, 1e9) == (True, None)
    assert paused({"pause": stamp(2, "a", paused=False)}, 0.0) == (False, None)
    assert paused({}, 0.0) == (False, None)


def test_breaker_open_until_an_arm_written_after_the_trip() -> None:
    """The breaker is open when tripped and not re-armed by a later (higher-version) arm."""
    trip = stamp(5, "engine-azure", open=True, since=10.0, reason="3 failovers")
    assert breaker_open({"breaker": trip}) == trip.value
    assert breaker_open({"breaker": trip, "arm": stamp(4, "engine-gcp", armed_at=1.0)}) == trip.value
    assert breaker_open({"breaker": trip, "arm": stamp(6, "engine-gcp", armed_at=20.0)}) is None
    assert breaker_open({}) is None


def test_disagreements_name_the_fields_voters_differ_on() -> None:
    """Fields with more than one value across voters are listed; shared ones are not."""
    views = {"a": {"active": "gcp", "epoch": 3}, "b": {"active": "gcp", "epoch": 4}, "c": {"active": "gcp"}}
    assert disagreements(views) == ["epoch"]


entries = st.builds(
    lambda key, version, voter, flag: (key, Stamped({"paused": flag}, version, voter, float(version), None)),
    st.sampled_from(KEYS), st.integers(0, 6), st.sampled_from(["engine-gcp", "engine-azure", "witness"]),
    st.booleans())


@given(st.lists(entries, max_size=12), st.randoms(use_true_random=False))
def test_any_delivery_order_converges(writes: list[tuple[str, Stamped]], rnd: object) -> None:
    """Whatever order, grouping or repetition the entries arrive in, every voter ends with the same state."""
    singles = [{key: entry} for key, entry in writes]
    reference = merge_all(singles)
    shuffled = list(singles) + singles[: len(singles) // 2]  # some delivered twice
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert merge_all(shuffled) == reference
    # delivered in two batches merged on two voters, then exchanged (a partition healing)
    half = len(shuffled) // 2
    left, right = merge_all(shuffled[:half]), merge_all(shuffled[half:])
    assert merge(left, right)[0] == merge(right, left)[0] == reference


def test_a_verdict_carries_operator_state_and_older_verdicts_still_parse() -> None:
    """The optional operator field round-trips through JSON; a verdict without it parses; oversized values fail."""
    body = {"active": "gcp", "epoch": 3, "sites": {"gcp": "up"},
            "operator": {"pause": {"value": {"paused": True, "until": None, "reason": "x"}, "version": 4,
                                   "voter": "engine-gcp", "at": 1.5, "by": "alice"}}}
    got = ServiceVerdict.model_validate(json.loads(json.dumps(body)))
    assert got.operator is not None and got.operator["pause"].value["until"] is None
    assert ServiceVerdict.model_validate({"active": "gcp", "epoch": 3, "sites": {}}).operator is None
    with pytest.raises(ValidationError):
        ServiceVerdict.model_validate({**body, "operator": {"pause": {**body["operator"]["pause"],  # type: ignore
                                                                       "value": {"reason": "x" * 5000}}}})
    with pytest.raises(ValidationError):
        ServiceVerdict.model_validate({**body, "operator": {"colour": body["operator"]["pause"]}})  # type: ignore

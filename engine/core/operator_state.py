"""Cluster-wide operator state in peer mode (pure): who changed what, with a version, and how voters agree.

Each operator key of a service (pause, breaker, arm, drill lock, DNS drift acknowledgement) is one
:class:`Stamped` entry: its value, a Lamport-style ``version`` (the writer's highest version seen + 1)
and the writing voter. Every verdict carries the sender's entries; every voter merges what it
receives with :func:`merge`: per key the entry with the higher ``(version, voter)`` wins, so any two
voters that have seen the same entries hold the same state, whatever the order they saw them in (the
merge is commutative, associative and idempotent). Two entries with the same version and different
values were written concurrently on two voters (e.g. on both sides of a partition): the voter id breaks
the tie, and the pair is reported as a :class:`Conflict` so an operator sees what was overruled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

KEYS = ("pause", "breaker", "arm", "drill_lock", "drift_ack")


@dataclass(frozen=True, slots=True)
class Stamped:
    """One operator key's value as written by ``voter`` (``by``: the operator or the engine) at version ``version``."""

    value: Mapping[str, Any]
    version: int
    voter: str
    at: float
    by: str | None = None

    @property
    def order(self) -> tuple[int, str]:
        return (self.version, self.voter)

    def to_dict(self) -> dict[str, Any]:
        return {"value": dict(self.value), "version": self.version, "voter": self.voter, "at": self.at,
                "by": self.by}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stamped:
        return cls(dict(data["value"]), int(data["version"]), str(data["voter"]), float(data["at"]),
                   None if data.get("by") is None else str(data["by"]))


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two writes of ``key`` at the same version with different values: ``kept`` won on the voter id."""

    key: str
    kept: Stamped
    overruled: Stamped

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "version": self.kept.version, "kept": self.kept.to_dict(),
                "overruled": self.overruled.to_dict()}


State = Mapping[str, Stamped]


def pick(a: Stamped | None, b: Stamped | None) -> Stamped | None:
    """The winner of two entries of one key: the higher ``(version, voter)``; a tie in both is the same write."""
    if a is None:
        return b
    if b is None:
        return a
    if b.order != a.order:
        return b if b.order > a.order else a
    # one voter never writes two values at one version; should a corrupt journal say so, stay order-independent
    return b if _canon(b.value) > _canon(a.value) else a


def _canon(value: Mapping[str, Any]) -> str:
    return repr(sorted((str(k), repr(v)) for k, v in value.items()))


def merge(mine: State, theirs: State) -> tuple[dict[str, Stamped], list[Conflict]]:
    """``mine`` and ``theirs`` merged key by key, and the conflicts the merge came across."""
    merged: dict[str, Stamped] = {}
    conflicts: list[Conflict] = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        won = pick(a, b)
        assert won is not None
        merged[key] = won
        if a is not None and b is not None and a.version == b.version and a.voter != b.voter \
                and dict(a.value) != dict(b.value):
            conflicts.append(Conflict(key, won, b if won is a else a))
    return merged, conflicts


def merge_all(states: Iterable[State]) -> dict[str, Stamped]:
    """Every state merged (the order does not matter)."""
    out: dict[str, Stamped] = {}
    for state in states:
        out, _ = merge(out, state)
    return out


def next_version(seen: int, state: State) -> int:
    """The version of a new write: above every version this voter has seen (Lamport clock)."""
    return max([seen, *(s.version for s in state.values())]) + 1


def write(state: State, seen: int, key: str, value: Mapping[str, Any], voter: str, at: float,
          by: str | None) -> dict[str, Stamped]:
    """``state`` with ``key`` set to ``value`` by this voter, at a version above all seen."""
    if key not in KEYS:
        raise ValueError(f"unknown operator key {key!r}; known: {list(KEYS)}")
    return {**state, key: Stamped(dict(value), next_version(seen, state), voter, at, by)}


def paused(state: State, now: float) -> tuple[bool, float | None]:
    """Whether the merged state pauses the service at ``now``, and until when (None: until resumed)."""
    entry = state.get("pause")
    if entry is None or not entry.value.get("paused"):
        return False, None
    until = entry.value.get("until")
    if until is not None and now >= float(until):
        return False, None
    return True, None if until is None else float(until)


def breaker_open(state: State) -> Mapping[str, Any] | None:
    """The breaker's trip record when the merged state has it open: tripped, and not re-armed after the trip."""
    trip, arm = state.get("breaker"), state.get("arm")
    if trip is None or not trip.value.get("open"):
        return None
    if arm is not None and arm.order > trip.order:
        return None
    return trip.value


def disagreements(views: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The fields of per-voter views (voter -> field -> value) on which the voters do not all agree."""
    fields = sorted({f for view in views.values() for f in view})
    return [f for f in fields if len({repr(view.get(f)) for view in views.values()}) > 1]

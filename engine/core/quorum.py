"""Counting votes (pure): which voters are fresh, and how many see a site down or up.

A voter is an engine instance or the witness; this instance is always one. A peer's verdict is a
vote only while it is fresh: received less than two of the sender's intervals ago (measured on
this instance's monotonic clock, so clock skew between hosts cannot keep a dead peer voting).
A majority is more than half of the *configured* voters, fresh or not: two engines without a
witness need both, which is how a partition is told from a dead site (it cannot be; so we hold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.core.verdict import ServiceVerdict


@dataclass(frozen=True, slots=True)
class Vote:
    """One voter's view of one service, with how old it is here."""

    voter: str
    role: str
    site: str
    view: ServiceVerdict | None  # None: no fresh verdict from this voter
    age_s: float | None = None


@dataclass(frozen=True, slots=True)
class Tally:
    """Votes about one service."""

    votes: tuple[Vote, ...]

    @property
    def voters(self) -> int:
        return len(self.votes)

    @property
    def majority(self) -> int:
        return self.voters // 2 + 1

    @property
    def fresh(self) -> tuple[Vote, ...]:
        return tuple(v for v in self.votes if v.view is not None)

    @property
    def missing(self) -> tuple[Vote, ...]:
        return tuple(v for v in self.votes if v.view is None)

    def count(self, site: str, health: str) -> int:
        return sum(1 for v in self.fresh if v.view is not None and v.view.sites.get(site) == health)

    def who(self, site: str, health: str) -> list[str]:
        return [v.voter for v in self.fresh if v.view is not None and v.view.sites.get(site) == health]

    def has(self, site: str, health: str) -> bool:
        return self.count(site, health) >= self.majority

    def shared_down(self) -> list[str]:
        """Shared dependencies a majority of voters see down."""
        counts: dict[str, int] = {}
        for vote in self.fresh:
            assert vote.view is not None
            for dep in set(vote.view.shared_down):
                counts[dep] = counts.get(dep, 0) + 1
        return sorted(d for d, c in counts.items() if c >= self.majority)

    def worst_lag(self) -> float | None:
        lags = [v.view.lag_s for v in self.fresh if v.view is not None and v.view.lag_s is not None]
        return max(lags) if lags else None

    def busy(self) -> list[str]:
        """Operations or drills other voters report under way."""
        out = []
        for v in self.fresh:
            assert v.view is not None
            if v.view.runbook:
                out.append(f"{v.voter} runs {v.view.runbook}")
            if v.view.drill:
                out.append(f"{v.voter} announces drill {v.view.drill}")
        return out


@dataclass(frozen=True, slots=True)
class VoterInfo:
    id: str
    role: str
    site: str


@dataclass(frozen=True, slots=True)
class Received:
    """A peer's latest verdict for a service, with when it arrived (monotonic) and its interval."""

    view: ServiceVerdict
    received_at: float
    interval: float


def tally(voters: Sequence[VoterInfo], own_id: str, own: ServiceVerdict,
          received: Mapping[str, Received | None], now: float) -> Tally:
    """Build the tally for one service from this voter's own view and its peers' latest ones."""
    votes = []
    for voter in voters:
        if voter.id == own_id:
            votes.append(Vote(voter.id, voter.role, voter.site, own, 0.0))
            continue
        got = received.get(voter.id)
        if got is None:
            votes.append(Vote(voter.id, voter.role, voter.site, None, None))
            continue
        age = now - got.received_at
        fresh = age <= 2 * got.interval
        votes.append(Vote(voter.id, voter.role, voter.site, got.view if fresh else None, age))
    return Tally(tuple(votes))

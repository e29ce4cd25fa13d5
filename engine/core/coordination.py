"""The coordination seam (pure): what the engine needs from a coordination store, whichever it is.

In the spirit of Patroni's ``AbstractDCS``, one :class:`Coordination` protocol states what
coordination means here, and each backend (``peer``: signed verdicts and a majority; ``etcd``:
keys, transactions, leases and watches) implements only that. The daemon never knows which
store it runs on; the contract tests in ``tests/integration/test_coordination_contract.py`` run
against every backend.

What it holds, per service:

- the **epoch** (:class:`Epoch`): read with the store's revision of it, moved only by
  compare-and-set on that revision (:class:`EpochMove` says won or lost, and the winner's value);
- the **write lease** (:class:`LeaseGrant`): at most one holder (site + voter), with a TTL the
  holder renews; a holder cut off from the store fences itself (:func:`judge_holder`);
- the **votes**: one verdict summary per voter (:class:`Vote`);
- the **operator state** (:class:`Pause`, :class:`Breaker`, :class:`Arm`, :class:`DrillLock`,
  :class:`DriftAck`), each key with the store's version and written by compare-and-set on it;
- a **watch** of all of it (:class:`Change`, or :class:`Resync` when changes may have been missed).

Failures are values, never exceptions: every call returns its result or :class:`Unavailable`.

Errors (values)::

    Unavailable(kind)
     ├── "unreachable"  no endpoint answered in time, or the store has no quorum
     ├── "rejected"     the store refused the request (auth, permission, bad request)
     └── "malformed"    an answer or a stored record that does not decode
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from engine.core.coordination_values import (
    Arm,
    Breaker,
    DriftAck,
    DrillLock,
    JsonObject,
    OperatorKey,
    OperatorValue,
    Pause,
)

__all__ = [
    "Arm", "Breaker", "Change", "Coordination", "DriftAck", "DrillLock", "Epoch", "EpochMove", "Holder",
    "HolderJudgement", "HolderView", "JsonObject", "LeaseGrant", "LeaseLost", "LeaseRenewed", "LeaseTaken",
    "OperatorEntry", "OperatorKey", "OperatorValue", "OperatorView", "OperatorWrite", "Pause", "Resync",
    "Unavailable", "Vote", "judge_holder", "keepalive_due",
]


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The store gave no usable answer; nothing is known about the outcome beyond ``reason``."""

    kind: Literal["unreachable", "rejected", "malformed"]
    reason: str


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease or moved an epoch: a voter and the site it runs in."""

    site: str
    voter: str

    def __str__(self) -> str:
        return f"{self.voter}@{self.site}"


@dataclass(frozen=True, slots=True)
class Epoch:
    """The epoch of a service as the store has it. ``revision`` is the store's version of the record
    (0: never written, ``number`` 0). ``token`` is unique per move, so a mover whose answer was lost
    can tell its own move from another's."""

    number: int
    site: str | None
    moved_by: Holder | None
    token: str
    revision: int

    def successor(self, site: str, by: Holder, token: str) -> Epoch:
        """The epoch one move later (revision unknown until the store assigns it)."""
        return Epoch(self.number + 1, site, by, token, 0)

    def record(self) -> JsonObject:
        holder = None if self.moved_by is None else {"site": self.moved_by.site, "voter": self.moved_by.voter}
        return {"epoch": self.number, "site": self.site, "moved_by": holder, "token": self.token}

    @staticmethod
    def from_record(record: JsonObject, revision: int) -> Epoch | Unavailable:
        number, site, token, moved = (record.get("epoch"), record.get("site"), record.get("token"),
                                      record.get("moved_by"))
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            return Unavailable("malformed", f"epoch record has no epoch number: {record!r}")
        if site is not None and not isinstance(site, str):
            return Unavailable("malformed", "epoch record's site is not a string")
        holder = None
        if isinstance(moved, Mapping):
            mv_site, mv_voter = moved.get("site"), moved.get("voter")
            if isinstance(mv_site, str) and isinstance(mv_voter, str):
                holder = Holder(mv_site, mv_voter)
        return Epoch(number, site, holder, token if isinstance(token, str) else "", revision)


NO_EPOCH = Epoch(0, None, None, "", 0)


@dataclass(frozen=True, slots=True)
class EpochMove:
    """The outcome of a compare-and-set of the epoch: ``current`` is the winner's epoch either way."""

    won: bool
    current: Epoch
    message: str


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A write lease held by ``holder``. ``renewed_at`` is the local monotonic time at which the
    request that last granted or renewed it was *sent*: the store counts the TTL from no earlier."""

    service: str
    holder: Holder
    lease_id: int
    ttl: float
    renewed_at: float


@dataclass(frozen=True, slots=True)
class LeaseTaken:
    """Someone else holds the lease (``holder`` None: held, but its record does not decode)."""

    service: str
    holder: Holder | None


@dataclass(frozen=True, slots=True)
class LeaseRenewed:
    grant: LeaseGrant  # with renewed_at moved to the sending time of this renewal
    remaining: float  # the TTL the store reports after the renewal


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """The store says the lease is gone (expired or revoked): the holder must fence at once."""

    reason: str


@dataclass(frozen=True, slots=True)
class Vote:
    """One voter's verdict summary for one service. ``at`` is the voter's wall clock (shown as an age,
    never compared across hosts for safety); ``revision`` the store's version of it."""

    service: str
    voter: str
    site: str
    epoch: int
    summary: JsonObject
    at: float
    revision: int = 0

    def record(self) -> JsonObject:
        return {"voter": self.voter, "site": self.site, "epoch": self.epoch, "summary": dict(self.summary),
                "at": self.at}

    @staticmethod
    def from_record(service: str, record: JsonObject, revision: int) -> Vote | Unavailable:
        voter, site, epoch, summary, at = (record.get(k) for k in ("voter", "site", "epoch", "summary", "at"))
        if not (isinstance(voter, str) and isinstance(site, str) and isinstance(epoch, int)
                and isinstance(summary, Mapping) and isinstance(at, int | float)):
            return Unavailable("malformed", f"vote record of {service} does not decode")
        return Vote(service, voter, site, epoch, summary, float(at), revision)


@dataclass(frozen=True, slots=True)
class OperatorEntry:
    """One operator key as stored: its value, who set it and when, and the store's version of it."""

    value: OperatorValue
    by: str
    at: float
    version: int


@dataclass(frozen=True, slots=True)
class OperatorView:
    """Every operator key of a service that is set, read at one store revision."""

    entries: Mapping[OperatorKey, OperatorEntry]
    revision: int
    problems: tuple[str, ...] = ()  # keys whose record did not decode (shown, never guessed)

    def version(self, key: OperatorKey) -> int:
        entry = self.entries.get(key)
        return 0 if entry is None else entry.version


@dataclass(frozen=True, slots=True)
class OperatorWrite:
    """The outcome of a versioned write: ``current`` is what the store holds now (the winner's)."""

    written: bool
    current: OperatorEntry | None
    message: str


@dataclass(frozen=True, slots=True)
class Change:
    """One change seen by a watch. ``name`` is the voter (votes) or the operator key (operator)."""

    service: str
    kind: Literal["epoch", "lease", "vote", "operator"]
    name: str
    revision: int
    record: JsonObject | None  # None: deleted (a lease expired, a key removed)


@dataclass(frozen=True, slots=True)
class Resync:
    """The watch may have missed changes (history compacted, stream restarted): re-read everything."""

    reason: str
    revision: int


class Coordination(Protocol):
    """What the engine asks of a coordination store. Every method returns a value or
    :class:`Unavailable`, within the backend's deadline; none raises for a network failure."""

    async def read_epoch(self, service: str) -> Epoch | Unavailable: ...

    async def move_epoch(self, service: str, expected: Epoch, site: str, by: Holder, token: str, *,
                         lease: LeaseGrant | None = None) -> EpochMove | Unavailable:
        """Move the epoch to ``expected.number + 1`` if the store still has ``expected.revision``
        (and, with ``lease``, only while that lease holds the service's lease key)."""
        ...

    async def acquire_lease(self, service: str, holder: Holder, ttl: float) -> LeaseGrant | LeaseTaken | Unavailable:
        ...

    async def renew_lease(self, grant: LeaseGrant) -> LeaseRenewed | LeaseLost | Unavailable: ...

    async def release_lease(self, grant: LeaseGrant) -> Unavailable | None: ...

    async def read_lease(self, service: str) -> Holder | Unavailable | None: ...

    async def publish_vote(self, vote: Vote) -> int | Unavailable:
        """Store ``vote`` (replacing the voter's previous one); returns its revision."""
        ...

    async def read_votes(self, service: str) -> tuple[Vote, ...] | Unavailable: ...

    async def read_operator(self, service: str) -> OperatorView | Unavailable: ...

    async def write_operator(self, service: str, value: OperatorValue, by: str, at: float, *,
                             expect_version: int) -> OperatorWrite | Unavailable:
        """Write one operator key if its version is still ``expect_version`` (0: not set yet)."""
        ...

    def watch(self, service: str, since_revision: int) -> AsyncIterator[Change | Resync | Unavailable]:
        """Changes after ``since_revision`` until the consumer stops iterating; on failure it yields
        :class:`Unavailable` and resumes, or :class:`Resync` when changes may have been missed."""
        ...

    async def close(self) -> None: ...


# --- the lease holder's rule ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HolderView:
    """What a lease holder knows of its lease: the granted TTL and when the last successful grant or
    renewal was sent (local monotonic seconds); ``lost`` once the store said the lease is gone."""

    ttl: float
    renewed_at: float
    lost: bool = False


@dataclass(frozen=True, slots=True)
class HolderJudgement:
    action: Literal["keep", "late", "fence"]
    expires_at: float  # earliest moment the store may let the lease go (local monotonic)
    fence_at: float  # the holder must start fencing by then at the latest
    message: str


def keepalive_due(view: HolderView, now: float, interval: float) -> bool:
    """A renewal is due ``interval`` after the last successful one (by default a quarter of the TTL)."""
    return now - view.renewed_at >= interval


def judge_holder(view: HolderView, now: float, fence_timeout: float, margin: float,
                 interval: float | None = None) -> HolderJudgement:
    """Whether the holder of a write lease may keep its database writable.

    The store counts the TTL from when it received the last renewal, which is no earlier than when the
    holder sent it; so the lease cannot expire before ``renewed_at + ttl`` on the holder's own clock
    (clock *rate* differences are what ``margin`` covers). Another site can take the lease after that
    moment, so the holder must have finished fencing by then: it starts at
    ``renewed_at + ttl - fence_timeout - margin``. Renewals failing before that is ``late``, never a
    reason to fence; the store saying the lease is gone is one at once. ``interval`` is how often
    renewals are due (default a quarter of the TTL): a renewal older than that is late.
    """
    expires_at = view.renewed_at + view.ttl
    fence_at = expires_at - fence_timeout - margin
    silent = now - view.renewed_at
    due = view.ttl / 4 if interval is None else interval
    if view.lost:
        return HolderJudgement("fence", expires_at, now, "self-fencing: the store says the write lease is gone")
    if now >= fence_at:
        return HolderJudgement(
            "fence", expires_at, fence_at,
            f"self-fencing: no lease renewal for {silent:.1f}s; the lease may expire in "
            f"{max(expires_at - now, 0.0):.1f}s and fencing needs {fence_timeout:g}s + margin {margin:g}s")
    if silent > due + 1e-9:
        return HolderJudgement(
            "late", expires_at, fence_at,
            f"holding: lease renewal late by {silent - due:.1f}s; self-fencing in {fence_at - now:.1f}s "
            "unless renewed")
    return HolderJudgement("keep", expires_at, fence_at,
                           f"holding: lease renewed {silent:.1f}s ago, valid for at least {expires_at - now:.1f}s")

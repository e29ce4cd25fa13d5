"""The self-fencing lease measured through echoes (pure, every time passed in): the holder's expiry and
the majority's certificates of silence. The design and its proof sketch: docs/lease.md.

Holder side (:func:`judge_holder_lease`). Voter ``j`` echoes the newest verdict of the holder it received,
stamped ``s`` on the holder's monotonic clock; ``j`` promises not to certify the holder silent until
``length`` after it received that verdict, so that promise lasts until ``s + length`` on the holder's
clock at least. Counting itself as one voter, the holder needs ``majority - 1`` promises: its lease ends
at the (majority-1)-th largest stamp + ``length``, and it must start fencing ``fence_lead`` before that.

Release side (:func:`certify_silent`). Seen from the runner (its own monotonic clock), a certifier ``j`` is
one of its verdicts: received at ``received_at``, saying ``j`` had not heard the engine for ``silent_s``,
sent after ``j`` received the runner's own verdict stamped ``sent_after`` (the runner's echo in it). So
``j`` last received from the engine no later than ``received_at - silent_s`` and the verdict was sent no
earlier than ``sent_after``. ``j`` certifies once ``silent_s + (now - received_at) >= wait``. A set of
certifiers proves the holder started fencing by an instant ``t`` when every one of them had received
nothing from it between ``t + fence_lead - length`` and ``t`` (their echoes sent before ``t`` expire
before ``t + fence_lead``), i.e. when the latest "last received" + ``length - fence_lead`` is no later
than the earliest ``sent_after``. With the ``n - majority + 1`` such certifiers among the ``n - 1``
voters other than the holder, at most ``majority - 2`` promises can remain: the holder lost its lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class HolderLease:
    """What the holder knows of its lease at ``now``: ``expires_at``/``fence_at`` on its monotonic clock."""

    action: Literal["hold", "fence"]
    granted: int  # voters whose promise still runs at now (itself included)
    expires_at: float
    fence_at: float

    def sentence(self, now: float) -> str:
        if self.action == "fence":
            return (f"lease expires in {self.expires_at - now:.1f}s with {self.granted} voter(s) still promising: "
                    "fencing now so the fence is done before it does")
        return f"leased for {self.expires_at - now:.1f}s more; fencing at the latest in {self.fence_at - now:.1f}s"


def lease_expiry(stamps: Sequence[float], majority: int, length: float, floor: float | None = None) -> float | None:
    """When the holder's lease ends (its clock): the (majority-1)-th largest echoed stamp + ``length``, never
    before ``floor + length`` (the startup grace); None when it never had one."""
    need = majority - 1
    ordered = sorted(stamps, reverse=True)
    best = ordered[need - 1] if need >= 1 and len(ordered) >= need else (float("inf") if need < 1 else None)
    if floor is not None:
        best = floor if best is None else max(best, floor)
    return None if best is None else best + length


def judge_holder_lease(stamps: Sequence[float], majority: int, length: float, fence_lead: float, now: float,
                       floor: float | None = None) -> HolderLease:
    """Whether the holder keeps its database writable at ``now``: it fences from ``expiry - fence_lead`` on."""
    expiry = lease_expiry(stamps, majority, length, floor)
    granted = 1 + sum(1 for s in stamps if s + length > now)
    if expiry is None:
        return HolderLease("fence", granted, now, now)
    fence_at = expiry - fence_lead
    return HolderLease("fence" if now >= fence_at else "hold", granted, expiry, fence_at)


@dataclass(frozen=True, slots=True)
class Certifier:
    """One voter's word about an engine's silence, on the runner's monotonic clock. ``last_heard``: no later
    than this the voter last received the engine's verdict; ``sent_after``: its word was given no earlier
    than this (None: unknown, it cannot certify). The runner itself: ``last_heard`` exact, ``sent_after`` now."""

    id: str
    last_heard: float
    sent_after: float | None


@dataclass(frozen=True, slots=True)
class Certification:
    certified: bool
    by: tuple[str, ...]  # the certifiers that prove it (empty when not certified)
    remaining_s: float  # the least time until enough certificates could be ripe (0 once certified)


def certify_silent(certifiers: Sequence[Certifier], needed: int, length: float, fence_lead: float, wait: float,
                   now: float) -> Certification:
    """Do ``needed`` of ``certifiers`` prove the engine fenced itself (see the module docstring)? Exact: for each
    candidate earliest ``sent_after`` t, take every certifier given at or after t whose silence is ripe
    (``now - last_heard >= wait``) and whose last receipt is at least ``length - fence_lead`` before t."""
    if needed <= 0:
        return Certification(True, (), 0.0)
    known = [c for c in certifiers if c.sent_after is not None]
    for t in sorted({c.sent_after for c in known if c.sent_after is not None}, reverse=True):
        chosen = [c for c in known if c.sent_after is not None and c.sent_after >= t
                  and now - c.last_heard >= wait and c.last_heard + length - fence_lead <= t]
        if len(chosen) >= needed:
            return Certification(True, tuple(sorted(c.id for c in chosen)), 0.0)
    ripening = sorted(max(0.0, wait - (now - c.last_heard)) for c in known)
    remaining = ripening[needed - 1] if len(ripening) >= needed else wait
    return Certification(False, (), max(remaining, 1e-3))


def certifiers_needed(voters: int, majority: int) -> int:
    """Certificates of silence needed among the ``voters - 1`` voters other than the holder: all but the
    ``majority - 2`` whose promises cannot keep the holder leased on their own."""
    return voters - majority + 1

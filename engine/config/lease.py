"""The self-fencing lease (pure): how long the majority must wait before promoting, so that an active
site cut off from the voters has fenced its own database first.

An engine keeps the *grant* of a voter while that voter's verdict is fresh and lists it among the
voters it hears (``Verdict.hears``); with the grants of a majority (itself included) it may keep its
database writable. Cut off, it loses the grants within :func:`grant_loss_bound` of the moment the
majority last heard it: the majority stops listing it after two ticks without its verdict, its next
broadcast leaves within a tick (plus the post deadline), and the cut-off engine treats that last
verdict as fresh for two more ticks. It then waits ``self_fence_after`` (a short blip must not
fence a healthy primary) and fences, which takes at most ``fencing.timeout``.

So the majority, before promoting a standby whose old primary it could not fence itself, waits
until the old site's engines have been silent for at least

    grant_loss_bound(tick) + self_fence_after + fencing.timeout + LEASE_MARGIN

``check-config`` refuses a ``lease_wait`` shorter than that. Every voter is assumed to run the
same ``tick`` (the freshness of a verdict is counted in the sender's interval, capped at four of
the receiver's ticks). Durations are measured on each host's monotonic clock: skew between hosts
does not enter, except through the message-age check already bounded by the peering's skew
allowance (included in the bound).
"""

from __future__ import annotations

from dataclasses import dataclass

LEASE_MARGIN = 2.0  # seconds on top of the worst case: scheduling, a slow fence's last statement
SKEW_ALLOWANCE = 2.0  # engine.peering.SKEW_ALLOWANCE (kept equal by a test; that module is not pure)


def grant_loss_bound(tick: float) -> float:
    """Longest time from "the majority last heard the engine" to "it knows it lost the grants"."""
    return 5 * tick + SKEW_ALLOWANCE


@dataclass(frozen=True, slots=True)
class Lease:
    self_fence_after: float
    fence_timeout: float
    tick: float
    wait: float  # what the majority waits (configured or the minimum)

    @property
    def minimum(self) -> float:
        return required_wait(self.tick, self.self_fence_after, self.fence_timeout)

    def explain(self) -> str:
        return (f"{grant_loss_bound(self.tick):g}s to lose the grants (5 ticks of {self.tick:g}s + "
                f"{SKEW_ALLOWANCE:g}s skew) + self_fence_after {self.self_fence_after:g}s + fencing timeout "
                f"{self.fence_timeout:g}s + margin {LEASE_MARGIN:g}s = {self.minimum:g}s")


def required_wait(tick: float, self_fence_after: float, fence_timeout: float) -> float:
    return round(grant_loss_bound(tick) + self_fence_after + fence_timeout + LEASE_MARGIN, 3)


def lease_for(tick: float, self_fence_after: float | None, fencing_enabled: bool, fence_timeout: float,
              lease_wait: float | None) -> Lease | None:
    """The lease of a service, or None when it has no self-fencing (no database, fencing off, or
    ``self_fence_after: null``)."""
    if self_fence_after is None or not fencing_enabled:
        return None
    minimum = required_wait(tick, self_fence_after, fence_timeout)
    return Lease(self_fence_after, fence_timeout, tick, minimum if lease_wait is None else lease_wait)

"""The self-fencing lease (pure arithmetic): a holder measures it on its own monotonic clock, through echoes.

Every verdict carries its sender's process nonce (``boot``) and its send time on the sender's monotonic
clock (``sent_mono``); every voter echoes, for each peer it has heard, that peer's latest ``(boot,
sent_mono)`` and how long ago it received it (``silent_s``, on the voter's own monotonic clock). A voter
promises not to certify a peer silent until ``length`` after it *received* that peer's verdict, which
is no earlier than the peer sent it. So the engine in the active site (the holder), seeing its own stamp
``s`` echoed by a voter, holds that voter's promise until ``s + length`` on its own clock; with the
promises of a majority (itself included) it keeps its database writable, and it starts fencing itself at

    expiry - fencing.timeout - HOLDER_MARGIN            (expiry: the (majority-1)-th largest echoed s + length)

The majority, before promoting a standby whose old primary it could not fence, waits until enough
voters certify the old site's engines silent for ``length + DRIFT_MARGIN`` (:mod:`engine.core.lease_rules`).
No wall clock enters: each side subtracts times of its own clock only. ``check-config`` refuses a
length that leaves the holder less than two ticks of slack (:func:`problem`). docs/lease.md.
"""

from __future__ import annotations

from dataclasses import dataclass

HOLDER_MARGIN = 0.5  # seconds: the holder's fence is complete this long before its lease expires
DRIFT_MARGIN = 0.5  # seconds the majority waits beyond the lease: clock rate drift and scheduling
DEFAULT_LENGTH = 6.0  # the shipped lease: tick 1 s, a 2 s fence -> 1.5 s beyond two ticks of echo delay
DEFAULT_SLACK = 1.5  # what a default lease leaves beyond two ticks when the fence or the tick is longer


def default_length(tick: float, fence_timeout: float) -> float:
    """The lease when the config names none: 6 s, or longer so that the holder keeps 1.5 s of slack."""
    return max(DEFAULT_LENGTH, round(fence_timeout + HOLDER_MARGIN + 2 * tick + DEFAULT_SLACK, 3))


@dataclass(frozen=True, slots=True)
class Lease:
    """The self-fencing lease of a service: its ``length``, the database's fencing timeout and the tick."""

    length: float
    fence_timeout: float
    tick: float

    @property
    def fence_lead(self) -> float:
        """How long before its expiry the holder starts fencing (the fence is done ``HOLDER_MARGIN`` early)."""
        return self.fence_timeout + HOLDER_MARGIN

    @property
    def hold(self) -> float:
        """How long after its newest echoed stamp a holder keeps writing: ``length - fence_lead``."""
        return round(self.length - self.fence_lead, 3)

    @property
    def wait(self) -> float:
        """The silence the majority certifies before promoting: ``length + DRIFT_MARGIN``."""
        return round(self.length + DRIFT_MARGIN, 3)

    @property
    def slack(self) -> float:
        """Renewal hiccup the holder survives beyond the normal echo delay of two ticks."""
        return round(self.hold - 2 * self.tick, 3)

    def explain(self) -> str:
        return (f"lease {self.length:g}s: the holder fences {self.fence_lead:g}s before it expires (fencing "
                f"timeout {self.fence_timeout:g}s + margin {HOLDER_MARGIN:g}s), so it writes for {self.hold:g}s "
                f"after its newest echoed renewal; the majority waits for {self.wait:g}s of certified silence "
                f"(lease + drift margin {DRIFT_MARGIN:g}s)")


def problem(lease: Lease) -> str | None:
    """Why ``lease`` is refused (the holder would fence on an ordinary renewal delay), or None."""
    if lease.slack > 0:
        return None
    minimum = lease.fence_lead + 2 * lease.tick
    return (f"{lease.length:g}s is too short: it must exceed fencing.timeout {lease.fence_timeout:g}s + margin "
            f"{HOLDER_MARGIN:g}s + 2 ticks of {lease.tick:g}s = {minimum:g}s, or the engine in the active site "
            f"fences its healthy database whenever a renewal is a little late; raise it or lower fencing.timeout")


def lease_for(tick: float, length: float | None, fencing_enabled: bool, fence_timeout: float) -> Lease | None:
    """The lease of a service, or None when it has no self-fencing (fencing off, or ``lease: null``)."""
    if length is None or not fencing_enabled:
        return None
    return Lease(length, fence_timeout, tick)

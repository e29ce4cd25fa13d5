"""When each signal is due: fixed phase, bounded jitter, no drift (pure).

The k-th check of a signal is due at ``start + phase + k * interval + jitter_k``: the phase spreads
signals over the interval (derived from the signal's name, so it is the same on every restart),
and the jitter is drawn per slot around the nominal time, so it never accumulates. A check that
starts late does not move the next one.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


def phase_for(name: str, interval: float) -> float:
    """A stable offset in [0, interval) for ``name``."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") / 2**64) * interval


@dataclass(slots=True)
class Cadence:
    """The due times of one signal."""

    start: float
    interval: float
    phase: float
    jitter: float = 0.0
    k: int = 0

    def nominal(self, k: int) -> float:
        return self.start + self.phase + k * self.interval

    def due(self, rng: random.Random | None = None) -> float:
        """The current slot's due time, with its jitter (drawn from ``rng``)."""
        offset = 0.0
        if self.jitter and rng is not None:
            offset = rng.uniform(-self.jitter, self.jitter)
        return max(self.start, self.nominal(self.k) + offset)

    def advance_past(self, now: float) -> int:
        """Move to the first slot after ``now``; return how many slots were skipped."""
        skipped = 0
        self.k += 1
        while self.nominal(self.k) <= now - self.interval:
            self.k += 1
            skipped += 1
        return skipped


def default_jitter(interval: float) -> float:
    """±2 % of the interval, at most 250 ms: enough to de-synchronise, small enough to keep cadence."""
    return min(0.02 * interval, 0.25)

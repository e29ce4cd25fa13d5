"""Time, injected.

Pure code never reads the clock: it takes ``now`` (seconds since the epoch, a float). The async
shell reads a :class:`Clock`; tests pass a :class:`ManualClock` that jumps, so hours of simulated
probing take milliseconds.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall time for records and monotonic time for deadlines."""

    def now(self) -> float:
        """Seconds since the epoch (wall clock): what journals and humans see."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes back: for intervals and deadlines."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to; wall and monotonic time move together."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward; moving it back is a bug in the test."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._wall += seconds
        self._mono += seconds

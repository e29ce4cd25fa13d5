"""Health machines: one per signal, UNKNOWN → UP ⇄ DOWN, driven by consecutive results.

Theory of operation
-------------------
A machine sees a stream of observations (ok or not). It counts consecutive successes and
consecutive failures; a success resets the failure count and a failure resets the success count.
It moves only when a count reaches its threshold:

======== ========= ================================ =========
state    outcome   condition                        next
======== ========= ================================ =========
UNKNOWN  success   successes >= success_threshold   UP
UNKNOWN  failure   failures  >= failure_threshold   DOWN
UP       failure   failures  >= failure_threshold   DOWN
DOWN     success   successes >= success_threshold   UP
======== ========= ================================ =========

Any other (state, outcome) pair keeps the state. The legal moves are the table
:data:`TRANSITIONS`; asking for any other move raises :class:`IllegalTransition` (a bug, never a
silent no-op). The machine is pure: time comes in with each observation, and its history can be
replayed with :func:`replay` to rebuild the same state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class Health(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


# (state, outcome) -> state reached when that outcome's count hits its threshold.
TRANSITIONS: dict[tuple[Health, Outcome], Health] = {
    (Health.UNKNOWN, Outcome.SUCCESS): Health.UP,
    (Health.UNKNOWN, Outcome.FAILURE): Health.DOWN,
    (Health.UP, Outcome.FAILURE): Health.DOWN,
    (Health.DOWN, Outcome.SUCCESS): Health.UP,
}

LEGAL_MOVES = frozenset((state, target) for (state, _), target in TRANSITIONS.items())


class IllegalTransition(RuntimeError):
    """A move the table does not allow was requested."""


@dataclass(frozen=True, slots=True)
class Step:
    """One recorded input of a machine."""

    at: float
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Change:
    """A state change, returned by :meth:`HealthMachine.observe` when one happens."""

    at: float
    previous: Health
    current: Health
    reason: str


class HealthMachine:
    """Consecutive-count state machine for one signal."""

    def __init__(self, failure_threshold: int = 3, success_threshold: int = 2, *,
                 history: int = 16) -> None:
        if failure_threshold < 1 or success_threshold < 1:
            raise ValueError("thresholds must be >= 1")
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.state = Health.UNKNOWN
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.since: float | None = None
        self.last: Step | None = None
        self.history: deque[Step] = deque(maxlen=history)

    def observe(self, ok: bool, at: float, reason: str = "") -> Change | None:
        """Feed one result; return the :class:`Change` if the state moved."""
        step = Step(at, ok, reason)
        self.history.append(step)
        self.last = step
        if ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            outcome, count, threshold = Outcome.SUCCESS, self.consecutive_successes, self.success_threshold
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            outcome, count, threshold = Outcome.FAILURE, self.consecutive_failures, self.failure_threshold
        target = TRANSITIONS.get((self.state, outcome))
        if target is None or count < threshold:
            return None
        return self._move(target, at, reason)

    def _move(self, target: Health, at: float, reason: str) -> Change:
        if (self.state, target) not in LEGAL_MOVES:
            raise IllegalTransition(f"{self.state} -> {target} is not a legal move")
        change = Change(at, self.state, target, reason)
        self.state = target
        self.since = at
        return change

    def force(self, target: Health, at: float, reason: str) -> Change:
        """Move directly (used when restoring state); illegal moves raise."""
        return self._move(target, at, reason)

    def describe(self) -> str:
        """One phrase for status and decision sentences, e.g. ``3/3 failures: connect refused``."""
        last = self.last.reason if self.last else "no observation yet"
        if self.consecutive_failures:
            return f"{self.consecutive_failures}/{self.failure_threshold} failures: {last}"
        if self.state is not Health.UP and self.consecutive_successes:
            return f"{self.consecutive_successes}/{self.success_threshold} successes: {last}"
        return last


def replay(steps: list[Step] | tuple[Step, ...], failure_threshold: int = 3,
           success_threshold: int = 2) -> HealthMachine:
    """Rebuild a machine from its recorded inputs."""
    machine = HealthMachine(failure_threshold, success_threshold, history=max(16, len(steps)))
    for step in steps:
        machine.observe(step.ok, step.at, step.reason)
    return machine

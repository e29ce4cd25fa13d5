"""Operations: one move of one service, and its lifecycle as a transition table.

An :class:`Operation` names a move of a service from one site to another at a given epoch. Its
lifecycle is the table :data:`TRANSITIONS` (in the manner of h11's state machine): a request that
wins the claim becomes ``running``; a running operation ends ``done``, ``stood_down`` (another
executor won the epoch race) or ``halted`` (a step failed for good, or the runbook deadline passed);
a halted one is ``retried`` (running again) or ``aborted`` by an operator. After a restart a running
operation is ``resumed`` and a halted one is ``restored`` in place, so it keeps blocking new runbooks.
An event the table does not list for a state is an :class:`IllegalTransition`, never a silent no-op.

Pure: no I/O, no clock; the runner and the operator actions apply :func:`advance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class OpState(StrEnum):
    REQUESTED = "requested"  # a move asked for, not yet claimed (never journaled as such)
    RUNNING = "running"
    DONE = "done"
    HALTED = "halted"
    STOOD_DOWN = "stood_down"
    ABORTED = "aborted"


class OpEvent(StrEnum):
    CLAIM = "claim"  # the one open operation of its service: journaled, its runbook starts
    FINISH = "finish"  # every step done or skipped
    STAND_DOWN = "stand_down"  # another operation owns the epoch
    HALT = "halt"  # a step failed for good, or the runbook deadline passed
    RESUME = "resume"  # the engine restarted while it ran: continue from the first unfinished step
    RESTORE = "restore"  # the engine restarted while it was halted: put it back in place
    RETRY = "retry"  # an operator runs a halted one again from its first unfinished step
    ABORT = "abort"  # an operator gives a halted one up


TRANSITIONS: Mapping[tuple[OpState, OpEvent], OpState] = {
    (OpState.REQUESTED, OpEvent.CLAIM): OpState.RUNNING,
    (OpState.RUNNING, OpEvent.FINISH): OpState.DONE,
    (OpState.RUNNING, OpEvent.STAND_DOWN): OpState.STOOD_DOWN,
    (OpState.RUNNING, OpEvent.HALT): OpState.HALTED,
    (OpState.RUNNING, OpEvent.RESUME): OpState.RUNNING,
    (OpState.HALTED, OpEvent.RESTORE): OpState.HALTED,
    (OpState.HALTED, OpEvent.RETRY): OpState.RUNNING,
    (OpState.HALTED, OpEvent.ABORT): OpState.ABORTED,
}

OPEN = frozenset({OpState.RUNNING, OpState.HALTED})  # an open operation blocks every new one of its service
FINAL = frozenset({OpState.DONE, OpState.STOOD_DOWN, OpState.ABORTED})


class IllegalTransition(Exception):
    """An event the lifecycle table does not allow in the operation's state."""

    def __init__(self, state: OpState, event: OpEvent) -> None:
        allowed = sorted(str(e) for (s, e) in TRANSITIONS if s is state)
        super().__init__(f"an operation that is {state} cannot {event} (allowed: {allowed or 'nothing'})")
        self.state = state
        self.event = event


def next_state(state: OpState, event: OpEvent) -> OpState:
    """The state after ``event``, or :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


class StepState(StrEnum):
    PENDING = "pending"
    STARTED = "started"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a step function returns: a sentence, data for the record, and how the runbook goes on."""

    summary: str
    data: Mapping[str, Any] = field(default_factory=dict)
    skipped: bool = False
    stand_down: bool = False

    @classmethod
    def skip(cls, summary: str, **data: Any) -> Outcome:
        return cls(summary, data, skipped=True)


class StepFailed(Exception):
    """A step failed; ``retry`` False means retrying cannot help (e.g. bad credentials)."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


@dataclass
class Operation:
    id: str
    service: str
    kind: str
    source: str
    target: str
    epoch_from: int
    epoch_to: int
    trigger: str
    state: OpState = OpState.RUNNING
    created_at: float = 0.0
    finished_at: float | None = None
    message: str = ""
    actor: str | None = None
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def advance(self, event: OpEvent) -> OpState:
        """Apply ``event`` through the lifecycle table (raises :class:`IllegalTransition`)."""
        self.state = next_state(self.state, event)
        return self.state

    @property
    def is_open(self) -> bool:
        return self.state in OPEN

    def current_step(self) -> str | None:
        """The step that was under way (journaled started, never finished), if any."""
        return next((name for name, rec in self.steps.items() if str(rec.get("state")) == StepState.STARTED), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "service": self.service, "kind": self.kind, "source": self.source,
            "target": self.target, "epoch_from": self.epoch_from, "epoch_to": self.epoch_to,
            "trigger": self.trigger, "state": str(self.state), "created_at": self.created_at,
            "finished_at": self.finished_at, "message": self.message, "actor": self.actor,
            "reason": self.reason, "evidence": self.evidence, "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operation:
        fields = dict(data)
        fields["state"] = OpState(fields["state"])
        return cls(**fields)


def planned(op: Operation | None) -> bool:
    """A planned move (switchover, a failback or full drill with both sites healthy) runs the switchover runbook."""
    return op is not None and bool(op.evidence.get("planned"))


def fence_required(op: Operation | None) -> bool:
    """A manual failover away from a healthy primary (``fence_first``) and a switchover need the fence to hold."""
    return op is not None and bool(op.evidence.get("require_fence"))

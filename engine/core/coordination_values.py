"""Operator state kept cluster-wide (pure): pause with its expiry, the circuit breaker, arm, the drill
lock and the acknowledged DNS drift, each one key of a service, and their records.

Every coordination backend stores these the same way: :func:`encode` turns a value into a JSON
object (with who set it and when), :func:`decode` turns a stored object back into a value or names
the problem. A record that does not decode is reported, never guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeAlias

JsonValue: TypeAlias = "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
JsonObject: TypeAlias = Mapping[str, JsonValue]

OperatorKey = Literal["pause", "breaker", "arm", "drill_lock", "drift_ack"]
OPERATOR_KEYS: tuple[OperatorKey, ...] = ("pause", "breaker", "arm", "drill_lock", "drift_ack")


@dataclass(frozen=True, slots=True)
class Pause:
    """Automatic action paused until ``until`` (wall seconds; None: until resumed)."""

    key: ClassVar[OperatorKey] = "pause"
    paused: bool
    until: float | None
    reason: str

    def active(self, now: float) -> bool:
        return self.paused and (self.until is None or now < self.until)


@dataclass(frozen=True, slots=True)
class Breaker:
    """The circuit breaker: automatic moves counted in its window, and whether it has tripped."""

    key: ClassVar[OperatorKey] = "breaker"
    count: int
    tripped: bool


@dataclass(frozen=True, slots=True)
class Arm:
    """Whether automatic action is armed (an operator re-arms after the breaker trips)."""

    key: ClassVar[OperatorKey] = "arm"
    armed: bool


@dataclass(frozen=True, slots=True)
class DrillLock:
    """A full drill under way: nobody else moves the service until ``until`` (wall seconds)."""

    key: ClassVar[OperatorKey] = "drill_lock"
    drill: str
    holder: str
    until: float


@dataclass(frozen=True, slots=True)
class DriftAck:
    """An operator acknowledged the foreign DNS state ``fingerprint``: moves are no longer blocked by it."""

    key: ClassVar[OperatorKey] = "drift_ack"
    fingerprint: str


OperatorValue = Pause | Breaker | Arm | DrillLock | DriftAck


def encode(value: OperatorValue, by: str, at: float) -> dict[str, JsonValue]:
    """The stored record of ``value``, set by ``by`` at wall time ``at``."""
    body: dict[str, JsonValue]
    match value:
        case Pause():
            body = {"paused": value.paused, "until": value.until, "reason": value.reason}
        case Breaker():
            body = {"count": value.count, "tripped": value.tripped}
        case Arm():
            body = {"armed": value.armed}
        case DrillLock():
            body = {"drill": value.drill, "holder": value.holder, "until": value.until}
        case DriftAck():
            body = {"fingerprint": value.fingerprint}
    return {"key": value.key, "value": body, "by": by, "at": at}


def _number(value: object) -> float | None:
    """``value`` as seconds when it is a JSON number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def decode(key: OperatorKey, record: JsonObject) -> tuple[OperatorValue, str, float] | str:
    """``(value, by, at)`` from a stored record of ``key``, or the problem with it as a sentence."""
    body, by, at = record.get("value"), record.get("by"), record.get("at")
    stamp = _number(at)
    if record.get("key") != key or not isinstance(body, Mapping) or not isinstance(by, str) or stamp is None:
        return f"operator key {key}: record does not decode"
    problem = f"operator key {key}: value does not decode: {dict(body)!r}"
    match key:
        case "pause":
            paused, until, reason = body.get("paused"), body.get("until"), body.get("reason")
            if isinstance(paused, bool) and (until is None or _number(until) is not None) and isinstance(reason, str):
                return Pause(paused, _number(until), reason), by, stamp
        case "breaker":
            count, tripped = body.get("count"), body.get("tripped")
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0 and isinstance(tripped, bool):
                return Breaker(count, tripped), by, stamp
        case "arm":
            armed = body.get("armed")
            if isinstance(armed, bool):
                return Arm(armed), by, stamp
        case "drill_lock":
            drill, holder, until = body.get("drill"), body.get("holder"), _number(body.get("until"))
            if isinstance(drill, str) and isinstance(holder, str) and until is not None:
                return DrillLock(drill, holder, until), by, stamp
        case "drift_ack":
            fingerprint = body.get("fingerprint")
            if isinstance(fingerprint, str):
                return DriftAck(fingerprint), by, stamp
    return problem

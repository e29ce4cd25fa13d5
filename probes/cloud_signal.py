"""What the cloud metric probes share: judging a point, staleness, bounded retries and error reasons.

Pure helpers (:func:`judge`, :func:`stale_reason`, :func:`worst`) take values and ``now`` and return
reasons; :func:`with_retries` is the only loop, used with every SDK retry switched off so a check
can never hang in a client's default 90-second retry.

Errors raised here (every other failure is returned as ``(ok=False, reason)``)::

    CloudProbeError             a cloud query gave no usable answer; str() is the reason
     ├── RetriesExhausted       every attempt hit a transient error ("unavailable after 3 attempts")
     └── CredentialError        credentials could not be built (never carries the secret)
"""

from __future__ import annotations

import asyncio
import math
import operator
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from engine.config.cloud import CloudRetry, Condition

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}
_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


class CloudProbeError(Exception):
    """A cloud query gave no usable answer; the message is a short, secret-free reason."""


class RetriesExhausted(CloudProbeError):
    """Every attempt failed with a transient error."""

    def __init__(self, what: str, attempts: int) -> None:
        self.what = what
        self.attempts = attempts
        super().__init__(f"{what} after {attempts} attempt{'s' if attempts != 1 else ''}")


class CredentialError(CloudProbeError):
    """Credentials could not be built from the probe config."""


def format_value(value: float) -> str:
    """A measured value for a reason: ``42.0``, ``0.125``, ``1234567.0``."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return repr(float(round(value, 6)))


def format_threshold(value: float) -> str:
    return f"{value:g}"


def judge(label: str, value: float, condition: Condition) -> tuple[bool, str]:
    """Judge ``value``: ``(True, "lag 12.0 <= 30")`` or ``(False, "lag 42.0 > 30")``."""
    ok = not math.isnan(value) and _OPS[condition.op](value, condition.threshold)
    op = condition.op if ok else _NEGATED[condition.op]
    return ok, f"{label} {format_value(value)} {op} {format_threshold(condition.threshold)}"


def stale_reason(age_s: float) -> str:
    """The reason for a newest point ``age_s`` old (or no point within a window of that length)."""
    return f"no data for {max(age_s, 0):.0f}s (stale)"


def worst(values: Sequence[float], condition: Condition) -> int:
    """Index of the value nearest to breaking the condition (the largest for ``<``, smallest for ``>``)."""
    if condition.op in ("<", "<="):
        return max(range(len(values)), key=lambda i: values[i])
    if condition.op in (">", ">="):
        return min(range(len(values)), key=lambda i: values[i])
    return 0


@dataclass(frozen=True, slots=True)
class Point:
    """The newest usable point of one series: its value, its time (epoch seconds) and a name."""

    value: float
    at: float
    series: str


def judge_series(points: Sequence[Point], *, now: float, label: str, condition: Condition,
                 stale_after: float, window: float, missing: Sequence[str] = (),
                 ) -> tuple[bool, str, float | None, dict[str, object]]:
    """Judge the newest point of every series: all must be fresh and meet the condition.

    ``missing`` names expected series (resources) with no point in the window: each is stale.
    Returns ``(ok, reason, value, details)`` for :class:`probes.base.BaseProbe`. With several series
    the reason names the failing one and says how many failed (``... (2 of 3 series, db-2)``).
    """
    if not points and not missing:
        return False, stale_reason(window), None, {"series": 0}
    failures: list[tuple[str, float | None, str, float]] = [
        (stale_reason(window), None, name, window) for name in missing]
    verdicts: list[tuple[bool, str]] = []
    for point in points:
        age = now - point.at
        if age > stale_after:
            failures.append((stale_reason(age), None, point.series, age))
            continue
        ok, reason = judge(label, point.value, condition)
        verdicts.append((ok, reason))
        if not ok:
            failures.append((reason, point.value, point.series, age))
    count = len(points) + len(missing)
    if failures:
        reason, value, series, age = failures[0]
        if count > 1:
            reason += f" ({len(failures)} of {count} series, {series})"
        return False, reason, value, {"series": count, "failed": len(failures), "age_s": round(age, 3)}
    index = worst([p.value for p in points], condition)
    point = points[index]
    reason = verdicts[index][1] + (f" ({count} series)" if count > 1 else "")
    return True, reason, point.value, {"series": count, "age_s": round(now - point.at, 3)}


async def with_retries(call: Callable[[], Awaitable[T]], *, retry: CloudRetry,
                       transient: Callable[[BaseException], str | None],
                       sleep: Sleep = asyncio.sleep) -> T:
    """Run ``call`` up to ``retry.attempts`` times while ``transient(exc)`` names the error.

    ``transient`` returns a short name (``unavailable``, ``status 503``) for errors worth another
    try and None for the rest, which propagate at once. Raises :class:`RetriesExhausted`.
    """
    pause = retry.backoff
    for attempt in range(1, retry.attempts + 1):
        try:
            return await call()
        except Exception as exc:
            what = transient(exc)
            if what is None:
                raise
            if attempt == retry.attempts:
                raise RetriesExhausted(what, attempt) from exc
        await sleep(pause)
        pause = min(pause * 2, retry.max_backoff)
    raise AssertionError("unreachable")  # pragma: no cover


def short_message(message: object, limit: int = 160) -> str:
    """The first line of a server message, trimmed for a reason.

    Servers do not always send a string (Azure has answered ``"message": {"detail": ...}``): any
    value is shown through ``str()``, None as empty, so describing an error never raises itself.
    """
    text = "" if message is None else message if isinstance(message, str) else str(message)
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"

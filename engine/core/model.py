"""Shared value types that cross the engine/probes/actions boundary.

Everything here is immutable and pure; ``probes/`` and ``actions/`` may import this module (and
``engine.config``) but nothing else from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SignalKey:
    """Names one signal: a probe aimed at one thing. ``site`` is None for service-wide signals."""

    service: str
    site: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.service}/{self.site or '*'}/{self.name}"


@dataclass(frozen=True, slots=True)
class Observation:
    """One result of a signal. A probe returns one of these and never raises past its boundary.

    ``reason`` is a short human phrase (``connect refused``, ``timeout after 2.0s``,
    ``status 503 not in [200]``); for a success it may say what was seen (``200 in 12 ms``).
    ``value`` carries a measured number where the probe has one (lag seconds, a metric point).
    """

    ok: bool
    reason: str
    at: float
    latency_s: float = 0.0
    value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, reason: str, *, at: float, latency_s: float = 0.0, value: float | None = None,
                **details: Any) -> Observation:
        return cls(True, reason, at, latency_s, value, dict(details))

    @classmethod
    def failure(cls, reason: str, *, at: float, latency_s: float = 0.0, value: float | None = None,
                **details: Any) -> Observation:
        return cls(False, reason, at, latency_s, value, dict(details))

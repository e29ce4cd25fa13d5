"""The probe protocol and the guard that keeps every probe inside it.

A probe is anything with ``async observe() -> Observation`` and ``async aclose()``. Concrete
probes implement ``_check`` and let :class:`BaseProbe` turn timeouts and exceptions into failed
observations with human reasons, so a broken target can never kill the loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from engine.core.clock import Clock, SystemClock
from engine.core.model import Observation


class Probe(Protocol):
    """What the scheduler drives."""

    async def observe(self) -> Observation:
        """Run one check; never raises (except ``CancelledError`` on shutdown)."""
        ...

    async def aclose(self) -> None:
        """Release connections and clients."""
        ...


class BaseProbe:
    """Common guard: an overall timeout, latency measurement and exception-to-reason mapping."""

    def __init__(self, *, timeout: float, clock: Clock | None = None) -> None:
        self.timeout = timeout
        self.clock: Clock = clock or SystemClock()

    async def _check(self) -> tuple[bool, str, float | None, dict[str, object]]:
        """Do the work: return (ok, reason, value, details). May raise; the guard maps it."""
        raise NotImplementedError

    def describe_error(self, exc: BaseException) -> str:
        """Turn an exception from ``_check`` into a short human reason. Override per probe."""
        return describe_exception(exc)

    async def observe(self) -> Observation:
        at = self.clock.now()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                ok, reason, value, details = await self._check()
        except TimeoutError:
            ok, reason, value, details = False, f"timeout after {self.timeout:g}s", None, {}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe failure is an observation, never a crash
            ok, value, details = False, None, {}
            try:
                reason = self.describe_error(exc)
            except Exception:  # a bug in the description must not lose the observation
                reason = type(exc).__name__
        latency = time.perf_counter() - started
        return Observation(ok, reason, at, latency, value, dict(details))

    async def aclose(self) -> None:
        return None


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free reason for common network failures."""
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name

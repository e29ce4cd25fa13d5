"""The failover runbook's DNS step driven against any provider, for the provider tests.

:class:`FakeEngine` and :class:`FakeRuntime` are what :class:`engine.runtime.failover.FailoverSteps` uses of
the runtime context and a service runtime. :func:`shift_step` runs the real ``shift_dns`` step of an operation
moving ``source`` -> ``target`` at the epoch the zone holds now, with ``provider`` (built by the
test with its fake's credentials) in place of the one the daemon would build from config.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from engine.config.model import ServiceConfig
from engine.core.clock import SystemClock
from engine.core.operations import Operation, Outcome
from engine.runtime.failover import FailoverSteps


class FakeEngine:
    """What the steps use of an engine: a clock, a journal, records and notifications."""

    def __init__(self, journal: Any = None) -> None:
        self.clock = SystemClock()
        self.journal = journal
        self.events: list[str] = []

    def journal_or_fail(self) -> Any:
        return self.journal

    async def record(self, kind: str, message: str, **_: Any) -> int:
        self.events.append(f"{kind}: {message}")
        return 0

    async def notify(self, *_: Any) -> None:
        return None


class FakeRuntime:
    def __init__(self, config: ServiceConfig, name: str = "api") -> None:
        self.name = name
        self.config = config
        self.lease = None
        self.operation = None


class _StepsWith(FailoverSteps):
    """The failover steps with a given provider (not closed: the test owns it)."""

    def __init__(self, provider: Any, config: ServiceConfig, name: str) -> None:
        super().__init__(FakeEngine(), FakeRuntime(config, name), lambda _site, _wait: (0.0, [], None))  # type: ignore[arg-type]
        self._given = provider

    @contextlib.asynccontextmanager
    async def _provider(self) -> AsyncIterator[Any]:
        yield self._given


async def shift_step(provider: Any, dns: dict[str, Any], *, service: str, source: str, target: str,
                     epoch_from: int) -> Outcome:
    """The outcome of the failover runbook's ``shift_dns`` step for an operation from ``epoch_from``."""
    config = ServiceConfig.model_validate({"active": source, "sites": {source: {"probes": []},
                                                                        target: {"probes": []}}, "dns": dns})
    op = Operation("op-under-test", service, "failover", source, target, epoch_from, epoch_from + 1, "auto")
    return await _StepsWith(provider, config, service).shift_dns(op)

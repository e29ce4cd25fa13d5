"""Scripted health for weighted moves on a manual clock (the executor's ``health`` and ``sleep``)."""

from __future__ import annotations

from typing import Any

from engine.core.clock import ManualClock


class Script:
    """Health answers from a list; a sleep that moves the manual clock; a hook per check."""

    def __init__(self, answers: list[bool], hook: Any = None, *, clock: ManualClock | None = None,
                 failure: str = "HTTP 503 from /healthz") -> None:
        self.clock, self.answers, self.hook, self.calls = clock or ManualClock(), answers, hook, 0
        self.failure = failure

    async def health(self) -> tuple[bool, str]:
        self.calls += 1
        if self.hook is not None:
            self.hook(self.calls)
        ok = self.answers.pop(0) if self.answers else True
        return ok, "ok" if ok else self.failure

    async def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)

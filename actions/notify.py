"""Notifications: webhooks (generic JSON or Slack-compatible) for decisions, runbook steps and alerts.

:meth:`Notifier.send` only enqueues, so the decision loop never waits on a webhook. A background
worker posts each notification to every webhook that wants its kind, with a timeout and retries
(exponential backoff). The queue is bounded: when webhooks are down for long, the oldest
notifications are dropped and counted, never memory without end. Webhook URLs are secrets and are
never logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from typing import Any

import aiohttp
import structlog

from engine.config.model import NotificationsConfig, WebhookConfig

log = structlog.get_logger("actions.notify")


def render(hook: WebhookConfig, note: dict[str, Any]) -> dict[str, Any]:
    """The body for one webhook."""
    if hook.format == "slack":
        where = f"[{note['service']}] " if note.get("service") else ""
        icon = {"alert": ":rotating_light:", "page": ":pager:", "rpo": ":warning:"}.get(note["kind"], ":gear:")
        return {"text": f"{icon} failover-engine {note['instance']}: {where}{note['message']}"}
    return note


class Notifier:
    def __init__(self, config: NotificationsConfig) -> None:
        self.config = config
        self._queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=config.queue)
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def send(self, kind: str, message: str, *, service: str | None, instance: str, at: float,
             data: dict[str, Any] | None = None) -> None:
        if not any(kind in hook.kinds for hook in self.config.webhooks):
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append({"kind": kind, "message": message, "service": service, "instance": instance,
                            "at": at, "data": data or {}})
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="notifier")
        self._wake.set()

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession(trust_env=False)
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            note = self._queue.popleft()
            await asyncio.gather(*(self._deliver(hook, note) for hook in self.config.webhooks
                                   if note["kind"] in hook.kinds))

    async def _deliver(self, hook: WebhookConfig, note: dict[str, Any]) -> None:
        assert self._session is not None
        body = json.dumps(render(hook, note), default=str).encode()
        error = ""
        for attempt in range(hook.attempts):
            try:
                async with asyncio.timeout(hook.timeout), self._session.post(
                        hook.url.get_secret_value(), data=body,
                        headers={"Content-Type": "application/json"}) as resp:
                    if resp.status < 300:
                        self.sent += 1
                        return
                    error = f"status {resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break
            except TimeoutError:
                error = f"timeout after {hook.timeout:g}s"
            except (aiohttp.ClientError, OSError) as exc:
                error = type(exc).__name__
            if attempt + 1 < hook.attempts:
                await asyncio.sleep(hook.backoff * 2**attempt)
        self.failed += 1
        log.warning("webhook delivery failed", kind=note["kind"], format=hook.format, error=error,
                    attempts=hook.attempts)

    async def close(self, drain: float = 2.0) -> None:
        """Give queued notifications a short chance to go out, then stop."""
        if self._worker is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain):
                while self._queue:  # noqa: ASYNC110 - a short bounded drain at shutdown
                    await asyncio.sleep(0.05)
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

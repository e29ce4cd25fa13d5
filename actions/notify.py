"""Notifications: webhooks (generic JSON or Slack-compatible) for decisions, runbook steps and alerts.

:meth:`Notifier.send` only enqueues, so the decision loop never waits on a webhook. A background
worker posts each notification to every webhook that wants its kind, with a timeout and retries
(exponential backoff). Each webhook has its own bounded queue and worker, so one dead
hook never delays another; when a hook is down for long its oldest notifications are dropped, counted
and logged, never memory without end. Webhook URLs are secrets and are
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


class _Hook:
    """One webhook with its own queue and worker: a dead hook's retries never delay the others."""

    def __init__(self, config: WebhookConfig, size: int) -> None:
        self.config = config
        self.queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self.wake = asyncio.Event()
        self.worker: asyncio.Task[None] | None = None


class Notifier:
    def __init__(self, config: NotificationsConfig) -> None:
        self.config = config
        self._hooks = [_Hook(hook, config.queue) for hook in config.webhooks]
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def send(self, kind: str, message: str, *, service: str | None, instance: str, at: float,
             data: dict[str, Any] | None = None) -> None:
        note = {"kind": kind, "message": message, "service": service, "instance": instance, "at": at,
                "data": data or {}}
        for hook in self._hooks:
            if kind not in hook.config.kinds:
                continue
            if len(hook.queue) == hook.queue.maxlen:
                self.dropped += 1
                log.warning("notification queue full: dropping the oldest", format=hook.config.format)
            hook.queue.append(note)
            if hook.worker is None:
                hook.worker = asyncio.create_task(self._run(hook), name="notifier")
            hook.wake.set()

    async def _run(self, hook: _Hook) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        while True:
            if not hook.queue:
                hook.wake.clear()
                await hook.wake.wait()
                continue
            await self._deliver(hook.config, hook.queue.popleft())

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
        workers = [hook.worker for hook in self._hooks if hook.worker is not None]
        if not workers:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain):
                while any(hook.queue for hook in self._hooks):  # noqa: ASYNC110 - a bounded drain at shutdown
                    await asyncio.sleep(0.05)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

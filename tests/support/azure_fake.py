"""A local Azure Monitor server speaking the real REST wire protocol of both query endpoints.

- ``POST /subscriptions/{sub}/metrics:getBatch`` (azure-monitor-querymetrics ``MetricsClient``):
  answers one ``values[]`` entry per requested resource id, with the scripted :class:`MetricSeries`.
- ``POST /v1/workspaces/{ws}/query`` (azure-monitor-query ``LogsQueryClient``): answers a
  scripted :class:`Table`, or a partial result.

Replies are queued per endpoint (``metrics.reply(...)``, ``logs.reply(...)``) with a ``default``
after the queue: data, :class:`HttpFail` (a status with Azure's ``{"error": {code, message}}``
body) or :class:`Slow`. Times are ages relative to the request's end time, so a manual clock
works. Every request is recorded (path, query, JSON body, headers) in ``calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class MetricSeries:
    """One series of one resource: ``points`` are ``(age_s, value)``; value None is an empty grain."""

    resource_id: str
    points: list[tuple[float, float | None]]
    dimensions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ago:
    """A logs cell holding the request end time minus ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Table:
    """A logs result: ``columns`` are ``(name, type)``; cells may be :class:`Ago`."""

    columns: list[tuple[str, str]]
    rows: list[list[Any]]
    partial_error: tuple[Any, Any] | None = None  # (code, message): answer as a partial result


@dataclass(frozen=True)
class HttpFail:
    """Answer with an HTTP error status and Azure's error body; ``message`` may be any JSON value
    (a server answering ``{"message": {"detail": ...}}`` instead of a string)."""

    status: int
    code: Any = "ServiceUnavailable"
    message: Any = "scripted failure"


@dataclass(frozen=True)
class Slow:
    """Wait ``delay`` seconds, then answer with ``then``."""

    delay: float
    then: Any = ()


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


class Script:
    """Queued replies for one endpoint, then ``default``."""

    def __init__(self, default: Any) -> None:
        self.default = default
        self._queue: deque[Any] = deque()

    def reply(self, *replies: Any) -> None:
        self._queue.extend(replies)

    def next(self) -> Any:
        return self._queue.popleft() if self._queue else self.default


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _error(fail: HttpFail) -> web.Response:
    return web.json_response({"error": {"code": fail.code, "message": fail.message}}, status=fail.status)


class AzureMonitorFake:
    """The scripted metrics and logs server (see the module docstring)."""

    def __init__(self) -> None:
        self.calls: list[ReceivedRequest] = []
        self.metrics = Script(default=[])
        self.logs = Script(default=Table([("value", "real")], []))
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.base_url = ""

    async def _record(self, request: web.Request) -> Any:
        body = await request.json() if request.can_read_body else None
        self.calls.append(ReceivedRequest(request.path, dict(request.query), body, dict(request.headers)))
        return body

    async def _resolve(self, reply: Any) -> Any:
        while isinstance(reply, Slow):
            with contextlib.suppress(TimeoutError):  # stop() cuts the delay short
                await asyncio.wait_for(self._stopping.wait(), reply.delay)
            reply = reply.then
        return reply

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        reply = await self._resolve(self.metrics.next())
        if isinstance(reply, HttpFail):
            return _error(reply)
        query = request.query
        end = _parse(query["endtime"])
        name = query["metricnames"]
        aggregation = query.get("aggregation", "average")
        values = []
        for rid in body["resourceids"]:
            series = [{"metadatavalues": [{"name": {"value": k, "localizedValue": k}, "value": v}
                                          for k, v in s.dimensions.items()],
                       "data": [{"timeStamp": _iso(end - timedelta(seconds=age)),
                                 **({aggregation: value} if value is not None else {})}
                                for age, value in sorted(s.points, key=lambda p: -p[0])]}
                      for s in reply if s.resource_id.lower() == rid.lower()]
            values.append({
                "starttime": query["starttime"], "endtime": query["endtime"],
                "interval": query.get("interval", "PT1M"), "namespace": query["metricnamespace"],
                "resourceregion": "westeurope", "resourceid": rid,
                "value": [{"id": f"{rid}/providers/Microsoft.Insights/metrics/{name}",
                           "type": "Microsoft.Insights/metrics",
                           "name": {"value": name, "localizedValue": name}, "unit": "Percent",
                           "timeseries": series}]})
        return web.json_response({"values": values})

    async def _logs(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        reply = await self._resolve(self.logs.next())
        if isinstance(reply, HttpFail):
            return _error(reply)
        end = _parse(str(body["timespan"]).split("/")[1])
        rows = [[_iso(end - timedelta(seconds=c.seconds)) if isinstance(c, Ago) else c for c in row]
                for row in reply.rows]
        answer: dict[str, Any] = {"tables": [{"name": "PrimaryResult",
                                              "columns": [{"name": n, "type": t} for n, t in reply.columns],
                                              "rows": rows}]}
        if reply.partial_error is not None:
            code, message = reply.partial_error
            answer["error"] = {"code": code, "message": message}
        return web.json_response(answer)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/subscriptions/{sub}/metrics:getBatch", self._metrics)
        app.router.add_post("/v1/workspaces/{ws}/query", self._logs)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@asynccontextmanager
async def running_azure_fake() -> AsyncIterator[AzureMonitorFake]:
    """A started :class:`AzureMonitorFake`, stopped on exit."""
    fake = AzureMonitorFake()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


class FakeCredential:
    """An async token credential that hands out a fixed token and counts the scopes asked for."""

    def __init__(self, token: str = "fake-token", *, fail: str | None = None) -> None:
        from azure.core.credentials import AccessToken

        self._access = AccessToken
        self.token = token
        self.fail = fail  # raise ClientAuthenticationError(fail) instead of answering
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(self, *scopes: str, **_kwargs: Any) -> Any:
        import time

        self.scopes.append(scopes)
        if self.fail is not None:
            from azure.core.exceptions import ClientAuthenticationError

            raise ClientAuthenticationError(message=self.fail)
        return self._access(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

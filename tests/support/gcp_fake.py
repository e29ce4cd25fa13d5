"""A local Cloud Monitoring server speaking the real gRPC wire protocol, and a local token server.

:class:`GcpMonitoringFake` serves ``google.monitoring.v3.MetricService/ListTimeSeries`` with the
SDK's proto-plus serializers (the package ships no servicer; none is needed). It listens with gRPC
*local* credentials (loopback, no TLS) so the client's call credentials still travel and the
``authorization`` header can be checked. Replies are scripted: :class:`Series` (points aged
relative to the request's end time, so a manual clock works), :class:`Fail` (a gRPC status) and
:class:`Slow` (a delay, then another reply). Every request is recorded in ``calls``.

:class:`TokenFake` is an aiohttp server for Google's token endpoints: ``POST /token`` (a service
account's signed JWT) and ``POST /v1/token`` (STS token exchange for workload identity federation).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.api import metric_pb2, monitored_resource_pb2
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.types import metric_service

SERVICE = "google.monitoring.v3.MetricService"


@dataclass(frozen=True)
class Series:
    """One time series: ``points`` are ``(age_s, value)`` with age relative to the request's end time."""

    points: list[tuple[float, float | int | bool]]
    labels: dict[str, str] = field(default_factory=dict)
    metric_type: str = "cloudsql.googleapis.com/database/replication/replica_lag"


@dataclass(frozen=True)
class Fail:
    """Abort the call with a gRPC status."""

    code: grpc.StatusCode
    message: str = "scripted failure"


@dataclass(frozen=True)
class Slow:
    """Wait ``delay`` seconds, then answer with ``then``."""

    delay: float
    then: Any = ()


@dataclass(frozen=True)
class ReceivedCall:
    """What the server saw: the request fields that matter and the call metadata."""

    name: str
    filter: str
    start: float
    end: float
    aggregation: Any
    metadata: dict[str, str]


class GcpMonitoringFake:
    """The scripted ListTimeSeries server (see the module docstring)."""

    def __init__(self) -> None:
        self.calls: list[ReceivedCall] = []
        self.default: Any = ()
        self._queue: deque[Any] = deque()
        self._server: grpc.aio.Server | None = None
        self.address = ""

    def reply(self, *replies: Any) -> None:
        """Queue replies for the next calls; after them the server answers with ``default``."""
        self._queue.extend(replies)

    async def _list_time_series(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        end = request.interval.end_time.timestamp()
        self.calls.append(ReceivedCall(
            name=request.name, filter=request.filter, start=request.interval.start_time.timestamp(),
            end=end, aggregation=request.aggregation,
            metadata={k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}))
        reply = self._queue.popleft() if self._queue else self.default
        while isinstance(reply, Slow):
            await asyncio.sleep(reply.delay)
            reply = reply.then
        if isinstance(reply, Fail):
            await context.abort(reply.code, reply.message)
        return metric_service.ListTimeSeriesResponse(time_series=[_series(s, end) for s in reply])

    async def start(self) -> None:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                self._list_time_series,
                request_deserializer=metric_service.ListTimeSeriesRequest.deserialize,
                response_serializer=metric_service.ListTimeSeriesResponse.serialize),
        })
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_secure_port(
            "127.0.0.1:0", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP))
        await self._server.start()
        self.address = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None


def _series(spec: Series, end: float) -> Any:
    points = []
    for age, value in sorted(spec.points, key=lambda p: p[0]):  # newest first, like the API
        at = end - age
        stamp = {"seconds": int(at), "nanos": int((at - int(at)) * 1e9)}
        if isinstance(value, bool):
            typed = monitoring_v3.TypedValue(bool_value=value)
        elif isinstance(value, int):
            typed = monitoring_v3.TypedValue(int64_value=value)
        else:
            typed = monitoring_v3.TypedValue(double_value=value)
        points.append(monitoring_v3.Point(interval=monitoring_v3.TimeInterval(end_time=stamp), value=typed))
    return monitoring_v3.TimeSeries(
        metric=metric_pb2.Metric(type=spec.metric_type),
        resource=monitored_resource_pb2.MonitoredResource(type="cloudsql_database", labels=spec.labels),
        points=points)


@asynccontextmanager
async def running_gcp_fake() -> AsyncIterator[GcpMonitoringFake]:
    """A started :class:`GcpMonitoringFake`, stopped on exit (before the loop closes)."""
    fake = GcpMonitoringFake()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


class TokenFake:
    """Google's token endpoints on loopback; records each form posted and issues numbered tokens."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.refuse = False  # answer 400 invalid_grant, as STS does for a rejected subject token
        self._counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append({"path": request.path, **form})
        if self.refuse:
            return web.json_response({"error": "invalid_grant",
                                      "error_description": "the subject token was rejected"}, status=400)
        number = next(self._counter)
        if request.path == "/v1/token":  # STS: RFC 8693 token exchange
            return web.json_response({"access_token": f"sts-token-{number}", "token_type": "Bearer",
                                      "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                                      "expires_in": 3600})
        return web.json_response({"access_token": f"sa-token-{number}", "token_type": "Bearer",
                                  "expires_in": 3600})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/token", self._token)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@asynccontextmanager
async def running_token_fake() -> AsyncIterator[TokenFake]:
    """A started :class:`TokenFake`, stopped on exit."""
    fake = TokenFake()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def service_account_file(directory: Path, token_url: str, project: str = "p1") -> Path:
    """A service-account key file (a fresh RSA key) whose ``token_uri`` is ``token_url``/token."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = directory / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": "k1", "private_key": pem,
        "client_email": f"engine@{project}.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": f"{token_url}/token"}))
    return path

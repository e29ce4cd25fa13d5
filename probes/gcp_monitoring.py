"""The GCP Cloud Monitoring probe: one ``ListTimeSeries`` query judged on each series' newest point.

The query covers ``[now - window, now]`` with the configured filter and aggregation. Every series
returned must have a point newer than ``staleness`` that meets the condition; no series at all is
``no data for 300s (stale)``, and more than :data:`MAX_SERIES` series fails rather than judging
only those read. The client's own retry (90 s on UNAVAILABLE) is always off: transient
errors get :func:`~probes.cloud_signal.with_retries` and the probe timeout bounds the whole check.

Tests inject ``client=`` or ``transport=`` (an insecure gRPC transport), or ``credentials=``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from engine.config.cloud import GcpMonitoringProbeConfig
from engine.core.clock import Clock
from probes.base import BaseProbe
from probes.cloud_credentials import gcp_credentials
from probes.cloud_signal import (
    CloudProbeError,
    Point,
    Sleep,
    judge_series,
    short_message,
    with_retries,
)

MAX_SERIES = 500  # a filter that matches more is a config mistake: the check fails, never judges part


class TooManySeries(CloudProbeError):
    """The filter matched more than :data:`MAX_SERIES` series; not retried (asking again won't shrink it)."""


class GcpMonitoringProbe(BaseProbe):
    """Reads a Cloud Monitoring metric and judges it (see the module docstring)."""

    def __init__(self, config: GcpMonitoringProbeConfig, *, clock: Clock | None = None,
                 client: Any = None, transport: Any = None, credentials: Any = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(timeout=config.timeout, clock=clock)
        self.config = config
        self._client = client
        self._transport = transport
        self._credentials = credentials
        self._sleep = sleep
        self._owns_transport = False  # only a transport the probe builds is closed by it

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        from google.cloud import monitoring_v3

        if self._transport is None:
            if self._credentials is None:
                self._credentials = await asyncio.to_thread(gcp_credentials, self.config.credentials)
            self._transport = build_transport(self.config, self._credentials)
            self._owns_transport = True
        self._client = monitoring_v3.MetricServiceAsyncClient(transport=self._transport)
        return self._client

    def build_request(self, now: float) -> Any:
        """The ``ListTimeSeriesRequest`` for a check at ``now``."""
        from google.cloud import monitoring_v3

        cfg = self.config
        interval = monitoring_v3.TimeInterval(start_time=_timestamp(now - cfg.window),
                                              end_time=_timestamp(now))
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{cfg.project}", filter=cfg.filter, interval=interval,
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL)
        if cfg.aligner is not None:
            fields: dict[str, Any] = {"per_series_aligner": cfg.aligner}
            if cfg.alignment_period is not None:
                fields["alignment_period"] = _timestamp(cfg.alignment_period)
            if cfg.reducer is not None:
                fields["cross_series_reducer"] = cfg.reducer
                fields["group_by_fields"] = list(cfg.group_by)
            request.aggregation = monitoring_v3.Aggregation(**fields)
        return request

    async def _check(self) -> tuple[bool, str, float | None, dict[str, object]]:
        client = await self._get_client()
        now = self.clock.now()
        request = self.build_request(now)

        async def query() -> list[Any]:
            pager = await client.list_time_series(request=request, retry=None, timeout=self.timeout)
            series: list[Any] = []
            async for item in pager:
                if len(series) == MAX_SERIES:  # judging only part of the answer could claim health
                    raise TooManySeries(f"more than {MAX_SERIES} series; narrow the filter or group_by")
                series.append(item)
            return series

        series = await with_retries(query, retry=self.config.retry, transient=transient_gcp_error,
                                    sleep=self._sleep)
        points = [p for p in (newest_point(ts) for ts in series) if p is not None]
        if series and not points:
            raise CloudProbeError(f"{len(series)} series without a numeric point")
        return judge_series(points, now=now, label=self.config.value_label,
                            condition=self.config.condition, stale_after=self.config.stale_after,
                            window=self.config.window)

    def describe_error(self, exc: BaseException) -> str:
        return describe_gcp_error(exc)

    async def aclose(self) -> None:
        if self._owns_transport and self._transport is not None:
            transport, self._transport, self._client = self._transport, None, None
            self._owns_transport = False
            await transport.close()


def build_transport(config: GcpMonitoringProbeConfig, credentials: Any) -> Any:
    """The gRPC transport: TLS to ``endpoint`` (default monitoring.googleapis.com), or, only with
    ``insecure_endpoint_for_tests``, gRPC local credentials (no TLS, loopback) so call credentials
    (the bearer token) still travel and can be checked by a local server."""
    import grpc
    from google.cloud.monitoring_v3.services.metric_service import transports

    kwargs: dict[str, Any] = {"credentials": credentials}
    if config.endpoint:
        kwargs["host"] = config.endpoint
    if config.insecure_endpoint_for_tests:
        kwargs["ssl_channel_credentials"] = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    return transports.MetricServiceGrpcAsyncIOTransport(**kwargs)


def _timestamp(seconds: float) -> dict[str, int]:
    whole = int(seconds)
    return {"seconds": whole, "nanos": round((seconds - whole) * 1e9)}


def _series_name(ts: Any) -> str:
    labels = {**dict(ts.resource.labels), **dict(ts.metric.labels)}
    if not labels:
        return ts.metric.type or "series"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def typed_value(value: Any) -> float | None:
    """A TypedValue as a float: double, int64, bool (1/0), or a distribution's mean; else None."""
    kind = type(value).pb(value).WhichOneof("value")
    if kind == "double_value":
        return float(value.double_value)
    if kind == "int64_value":
        return float(value.int64_value)
    if kind == "bool_value":
        return 1.0 if value.bool_value else 0.0
    if kind == "distribution_value":
        return float(value.distribution_value.mean) if value.distribution_value.count else None
    return None


def newest_point(ts: Any) -> Point | None:
    """The newest numeric point of a TimeSeries, or None."""
    best: Point | None = None
    for point in ts.points:
        number = typed_value(point.value)
        if number is None:
            continue
        at = point.interval.end_time.timestamp()
        if best is None or at > best.at:
            best = Point(number, at, _series_name(ts))
    return best


def transient_gcp_error(exc: BaseException) -> str | None:
    """The short name of a retryable API error, or None."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.ServiceUnavailable):
        return None if _plugin_failure(exc) else "unavailable"
    if isinstance(exc, gexc.TooManyRequests):  # RESOURCE_EXHAUSTED
        return "quota exhausted"
    if isinstance(exc, gexc.InternalServerError | gexc.Aborted):
        return f"{type(exc).__name__}"
    return None


_PLUGIN_FAILED = "Getting metadata from plugin failed with error: "


def _plugin_failure(exc: BaseException) -> str | None:
    """gRPC reports a failed token refresh (call credentials) as UNAVAILABLE with this prefix."""
    message = str(getattr(exc, "message", "") or "")
    if not message.startswith(_PLUGIN_FAILED):
        return None
    detail = message[len(_PLUGIN_FAILED):]
    first = re.match(r"^\('([^']*)'", detail)  # RefreshError's args tuple: keep its first sentence
    return first.group(1) if first else detail


def describe_gcp_error(exc: BaseException) -> str:
    """A short reason for an error from the Monitoring API or google.auth."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as aexc

    if isinstance(exc, CloudProbeError):
        return str(exc)
    plugin = _plugin_failure(exc)
    if plugin is not None:
        # google.auth's refresh error: names the file or the token endpoint's error, never a key
        return f"credentials failed ({short_message(plugin, 120)})"
    if isinstance(exc, gexc.PermissionDenied):
        return f"permission denied (PermissionDenied: {short_message(exc.message or '')})"
    if isinstance(exc, gexc.Unauthenticated):
        return f"unauthenticated (Unauthenticated: {short_message(exc.message or '')})"
    if isinstance(exc, gexc.NotFound):
        return f"not found (NotFound: {short_message(exc.message or '')})"
    if isinstance(exc, gexc.InvalidArgument):
        return f"invalid query (InvalidArgument: {short_message(exc.message or '')})"
    if isinstance(exc, gexc.DeadlineExceeded):
        return "deadline exceeded"
    if isinstance(exc, gexc.GoogleAPICallError):
        return f"{type(exc).__name__}: {short_message(exc.message or '')}"
    if isinstance(exc, aexc.GoogleAuthError):
        # token endpoint errors carry its JSON error body, never our key; keep the first line short
        return f"credentials failed ({type(exc).__name__}: {short_message(str(exc), 120)})"
    if isinstance(exc, gexc.GoogleAPIError):
        return f"{type(exc).__name__}: {short_message(str(exc))}"
    from probes.base import describe_exception

    return describe_exception(exc)

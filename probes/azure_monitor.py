"""The Azure Monitor probes: metrics (``MetricsClient``, getBatch) and logs (``LogsQueryClient``, KQL).

:class:`AzureMetricsProbe` asks for one metric of every configured resource over ``[now - window,
now]`` and judges each resource's newest point that has the configured aggregation; a resource
with no such point is stale. :class:`AzureLogsProbe` runs a KQL query and judges the first row's
value (and, with ``time_column``, its age). azure-core's retry is off (``retry_total=0``): transient
errors get :func:`~probes.cloud_signal.with_retries`, and the probe timeout bounds the check.

Tests inject ``client=`` and/or ``credential=``; plain http needs ``insecure_endpoint_for_tests``,
which the config allows only for a loopback endpoint.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from engine.config.cloud import AzureLogsProbeConfig, AzureMetricsProbeConfig
from engine.core.clock import Clock
from probes.azure_errors import TokenReporter, describe_azure_error, transient_azure_error
from probes.base import BaseProbe
from probes.cloud_credentials import azure_credential
from probes.cloud_signal import CloudProbeError, Point, Sleep, judge_series, short_message, with_retries

_METRIC_SUFFIX = "/providers/microsoft.insights/metrics/"


class _AzureProbe(BaseProbe):
    """Client and credential lifecycle shared by both Azure probes."""

    config: AzureMetricsProbeConfig | AzureLogsProbeConfig

    def __init__(self, config: AzureMetricsProbeConfig | AzureLogsProbeConfig, *, clock: Clock | None = None,
                 client: Any = None, credential: Any = None, sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(timeout=config.timeout, clock=clock)
        self.config = config
        self._client = client
        self._credential = credential
        self._owns_client = False  # only what the probe builds is closed by it
        self._owns_credential = False
        self._sleep = sleep

    def _client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"retry_total": 0}
        if self.config.audience:
            options["audience"] = self.config.audience
        return options

    def _make_client(self, credential: Any) -> Any:
        raise NotImplementedError

    def _get_client(self) -> Any:
        if self._client is None:
            if self._credential is None:
                self._credential = azure_credential(self.config.credentials)
                self._owns_credential = True
            self._client = self._make_client(TokenReporter(self._credential))
            self._owns_client = True
        return self._client

    def call_options(self) -> dict[str, Any]:
        """Per-call keywords: socket deadlines, and the explicit plain-http opt-out for tests."""
        options: dict[str, Any] = {"connection_timeout": self.timeout, "read_timeout": self.timeout}
        if self.config.insecure_endpoint_for_tests:
            options["enforce_https"] = False
        return options

    def _window(self, now: float) -> tuple[datetime, datetime]:
        end = datetime.fromtimestamp(now, UTC)
        return end - timedelta(seconds=self.config.window), end

    def describe_error(self, exc: BaseException) -> str:
        return describe_azure_error(exc)

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client, self._owns_client = self._client, None, False
            await client.close()
        if self._owns_credential and self._credential is not None:
            credential, self._credential, self._owns_credential = self._credential, None, False
            await credential.close()


class AzureMetricsProbe(_AzureProbe):
    """Judges one Azure Monitor metric across the configured resources."""

    config: AzureMetricsProbeConfig

    def _make_client(self, credential: Any) -> Any:
        from azure.monitor.querymetrics.aio import MetricsClient

        assert self.config.endpoint is not None  # the config requires it
        return MetricsClient(self.config.endpoint, credential, **self._client_options())

    async def _check(self) -> tuple[bool, str, float | None, dict[str, object]]:
        cfg = self.config
        client = self._get_client()
        now = self.clock.now()
        options = self.call_options()

        async def query() -> Any:
            return await client.query_resources(
                resource_ids=cfg.resource_ids, metric_namespace=cfg.namespace, metric_names=[cfg.metric],
                timespan=self._window(now), granularity=timedelta(seconds=cfg.granularity),
                aggregations=[cfg.aggregation], filter=cfg.filter, **options)

        results = await with_retries(query, retry=cfg.retry, transient=transient_azure_error,
                                     sleep=self._sleep)
        points: list[Point] = []
        seen: set[str] = set()
        for result in results:
            grain = result.granularity or timedelta(seconds=cfg.granularity)
            for metric in result.metrics:
                resource = resource_of(metric.id or "")
                for series in metric.timeseries:
                    point = newest_value(series, cfg.aggregation, grain, _series_name(resource, series))
                    if point is not None:
                        points.append(point)
                        seen.add(resource.lower())
        missing = [short_resource(r) for r in cfg.resource_ids if r.lower() not in seen]
        return judge_series(points, now=now, label=cfg.value_label, condition=cfg.condition,
                            stale_after=cfg.stale_after, window=cfg.window, missing=missing)


class AzureLogsProbe(_AzureProbe):
    """Judges the first value of a Log Analytics query."""

    config: AzureLogsProbeConfig

    def _make_client(self, credential: Any) -> Any:
        from azure.monitor.query.aio import LogsQueryClient

        options = self._client_options()
        if self.config.endpoint:
            options["endpoint"] = self.config.endpoint
        return LogsQueryClient(credential, **options)

    async def _check(self) -> tuple[bool, str, float | None, dict[str, object]]:
        from azure.monitor.query import LogsQueryStatus

        cfg = self.config
        client = self._get_client()
        now = self.clock.now()
        options = self.call_options()

        async def query() -> Any:
            return await client.query_workspace(
                cfg.workspace_id, cfg.query, timespan=self._window(now),
                server_timeout=max(1, math.ceil(self.timeout)), **options)

        response = await with_retries(query, retry=cfg.retry, transient=transient_azure_error,
                                      sleep=self._sleep)
        if response.status == LogsQueryStatus.PARTIAL:
            error = response.partial_error
            # the SDK passes the service's JSON through: code and message need not be strings
            code = short_message(getattr(error, "code", None), 60) or "PartialError"
            message = short_message(getattr(error, "message", None))
            raise CloudProbeError(f"partial result ({code}: {message})")
        tables = list(response.tables)
        if not tables or not tables[0].rows:
            return judge_series([], now=now, label=cfg.value_label, condition=cfg.condition,
                                stale_after=cfg.stale_after, window=cfg.window)
        table = tables[0]
        columns = list(table.columns)
        row = table.rows[0]
        raw = row[_column_index(columns, cfg.column)]
        if raw is None:
            return judge_series([], now=now, label=cfg.value_label, condition=cfg.condition,
                                stale_after=cfg.stale_after, window=cfg.window)
        value = as_number(raw, cfg.column or columns[0])
        at = now  # no row time: the query's timespan (window) bounds freshness; config keeps staleness == window
        if cfg.time_column is not None:
            stamp = row[_column_index(columns, cfg.time_column)]
            if not isinstance(stamp, datetime):
                raise CloudProbeError(
                    f"column {cfg.time_column!r} is not a datetime ({type(stamp).__name__})")
            at = stamp.timestamp()
        return judge_series([Point(value, at, cfg.workspace_id)], now=now, label=cfg.value_label,
                            condition=cfg.condition, stale_after=cfg.stale_after, window=cfg.window)


def _column_index(columns: list[str], name: str | None) -> int:
    if name is None:
        return 0
    if name not in columns:
        raise CloudProbeError(f"column {name!r} not in the result ({', '.join(columns)})")
    return columns.index(name)


def as_number(raw: Any, column: str) -> float:
    """A cell as a float (int, float, bool, Decimal, or a numeric string), or a CloudProbeError."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float | Decimal):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            pass
    raise CloudProbeError(f"{column} is {short_message(repr(raw), 40)}, not a number")


def resource_of(metric_id: str) -> str:
    """The resource id a metric id belongs to (``<resource>/providers/Microsoft.Insights/metrics/<m>``)."""
    cut = metric_id.lower().rfind(_METRIC_SUFFIX)
    return metric_id[:cut] if cut >= 0 else metric_id


def short_resource(resource_id: str) -> str:
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


def _series_name(resource: str, series: Any) -> str:
    dims = getattr(series, "metadata_values", None) or {}
    name = short_resource(resource)
    if dims:
        name += " " + ",".join(f"{k}={v}" for k, v in sorted(dims.items()))
    return name


def newest_value(series: Any, aggregation: str, grain: timedelta, name: str) -> Point | None:
    """The newest point with a value for ``aggregation`` (Azure pads empty grains with nulls)."""
    best: Point | None = None
    for item in series.data:
        number = getattr(item, aggregation, None)
        if number is None or item.timestamp is None:
            continue
        at = (item.timestamp + grain).timestamp()  # a point covers [timestamp, timestamp + grain)
        if best is None or at > best.at:
            best = Point(float(number), at, name)
    return best

"""Cloud metric probe configs: GCP Cloud Monitoring, Azure Monitor metrics and Azure Monitor logs.

Each probe reads one number from a cloud monitoring API and judges it with a :class:`Condition`
(``healthy when value <op> threshold``); a newest point older than ``staleness`` is a failure.
Credentials are chosen per probe (:data:`GcpCredentials`, :data:`AzureCredentials`); secrets are
:data:`~engine.config.base.Secret` values and never serialized.

A probe whose SDK (the ``gcp`` or ``azure`` extra) is not installed fails validation with the pip
command that fixes it; :func:`module_available` is the seam tests replace to prove that.

Plain-text transport carries bearer tokens in clear, so it is allowed only to loopback hosts
(:func:`is_loopback_host`): ``insecure_endpoint_for_tests`` and an ``http://`` STS ``token_url``.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from engine.config.base import DAY, MINUTE, Duration, Model, Secret, Span, format_duration, positive, rule_error
from engine.config.probe_common import ProbeCommon

Comparison = Literal["<", "<=", ">", ">=", "==", "!="]


def module_available(module: str) -> bool:
    """True when ``module`` can be imported (its distribution is installed)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package raises instead of returning None
        return False


def _require_extra(extra: str, modules: tuple[str, ...]) -> None:
    missing = [m for m in modules if not module_available(m)]
    if missing:
        raise rule_error("type", f"needs the {extra} extra ({missing[0]} is not installed): "
                                 f"pip install 'failover-engine[{extra}]'")


def _existing_file(field: str, path: str) -> None:
    if not Path(path).expanduser().is_file():
        raise rule_error(field, f"no such file: {path}")


LOOPBACK_HOSTS = "127.0.0.0/8, ::1, localhost"


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for None or a name."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_host(endpoint: str) -> str | None:
    """The host of a URL (``http://h:1/x``) or of a gRPC ``host:port`` target; None when unparsable."""
    try:
        return urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname
    except ValueError:  # e.g. an unclosed "[" or a bad port
        return None


def plain_http_url_error(url: str) -> str | None:
    """Why ``url`` may not carry a token: not http(s), or plain http to a host that is not loopback."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "https":
        return None
    if scheme == "http" and is_loopback_host(endpoint_host(url)):
        return None
    return f"must be https:// (plain http only to a loopback host: {LOOPBACK_HOSTS})"


class Condition(Model):
    """Healthy when ``value <op> threshold``; e.g. ``{op: "<=", threshold: 30}`` for a lag in seconds."""

    op: Comparison
    threshold: float


class CloudRetry(Model):
    """Bounded retries of transient errors (unavailable, 429, 5xx); the probe timeout still bounds it all."""

    attempts: int = Field(3, ge=1, le=10, description="tries in one check, including the first")
    backoff: Annotated[Duration, Span(0, MINUTE)] = Field(
        0.2, description="pause after the first failure; doubles each time")
    max_backoff: Annotated[Duration, Span(0, 10 * MINUTE)] = Field(2.0, description="longest pause between two tries")


class _CloudSignal(ProbeCommon):
    """What every cloud metric probe shares: the condition, the windows, retries and the endpoint."""

    condition: Condition
    label: str | None = Field(None, description="what the value is, in reasons (default: the probe name)")
    window: Annotated[Duration, positive(7 * DAY)] = Field(300.0, description="how far back the query looks")
    staleness: Annotated[Duration, positive(7 * DAY)] | None = Field(
        None, description="a newest point older than this fails (default: window)")
    retry: CloudRetry = Field(default_factory=CloudRetry)
    endpoint: str | None = Field(None, description="override the API endpoint (sovereign clouds, tests)")
    insecure_endpoint_for_tests: bool = Field(
        False, description=("INSECURE: talk to `endpoint` without TLS; only for local test servers, so the "
                            f"endpoint's host must be loopback ({LOOPBACK_HOSTS})"))

    @model_validator(mode="after")
    def _windows(self) -> Self:
        if self.window <= 0:
            raise rule_error("window", "must be > 0")
        if self.staleness is not None and not 0 < self.staleness <= self.window:
            raise rule_error("staleness", f"must be > 0 and <= window ({format_duration(self.window)})")
        if self.insecure_endpoint_for_tests:
            if not self.endpoint:
                raise rule_error("insecure_endpoint_for_tests", "needs an endpoint (a local test server)")
            host = endpoint_host(self.endpoint)
            if not is_loopback_host(host):
                raise rule_error(
                    "insecure_endpoint_for_tests",
                    f"plain-text endpoints are allowed only on loopback ({LOOPBACK_HOSTS}), not "
                    f"{host or self.endpoint}: a bearer token would cross the network in clear")
        return self

    @property
    def stale_after(self) -> float:
        return self.staleness if self.staleness is not None else self.window

    @property
    def value_label(self) -> str:
        return self.label or self.signal_name


# --- GCP -----------------------------------------------------------------------------------------

class GcpAdc(Model):
    """Application Default Credentials (metadata server, ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud)."""

    type: Literal["adc"]


class GcpServiceAccountFile(Model):
    """A service-account key file (a long-lived key: prefer ADC or workload identity federation)."""

    type: Literal["service_account_file"]
    path: str = Field(min_length=1)

    @model_validator(mode="after")
    def _exists(self) -> Self:
        _existing_file("path", self.path)
        return self


class GcpExternalAccount(Model):
    """Workload identity federation: an Azure-issued token exchanged at Google STS, no key stored.

    Either ``config_file`` (the JSON that ``gcloud iam workload-identity-pools create-cred-config``
    writes) or ``audience`` + ``token_file`` (+ ``service_account`` to impersonate).
    """

    type: Literal["external_account"]
    config_file: str | None = None
    audience: str | None = Field(None, description=(
        "//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R"))
    token_file: str | None = Field(
        None, description="the Azure-issued token, e.g. /var/run/secrets/azure/tokens/azure-identity-token")
    service_account: str | None = Field(None, description="e-mail of the service account to impersonate")
    token_url: str = Field("https://sts.googleapis.com/v1/token", description=(
        f"the STS endpoint; https://, or http:// only to a loopback host ({LOOPBACK_HOSTS})"))

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.config_file is not None:
            if self.audience or self.token_file or self.service_account:
                raise rule_error("config_file", "give either config_file or audience + token_file, not both")
            _existing_file("config_file", self.config_file)
            return self
        if not self.audience:
            raise rule_error("audience", "required without config_file")
        if not self.token_file:
            raise rule_error("token_file", "required without config_file")
        problem = plain_http_url_error(self.token_url)  # the Azure-issued subject token goes there
        if problem is not None:
            raise rule_error("token_url", problem)
        return self


GcpCredentials = Annotated[GcpAdc | GcpServiceAccountFile | GcpExternalAccount, Field(discriminator="type")]

GCP_ALIGNERS = ("ALIGN_NONE", "ALIGN_DELTA", "ALIGN_RATE", "ALIGN_INTERPOLATE", "ALIGN_NEXT_OLDER",
                "ALIGN_MIN", "ALIGN_MAX", "ALIGN_MEAN", "ALIGN_COUNT", "ALIGN_SUM", "ALIGN_STDDEV",
                "ALIGN_COUNT_TRUE", "ALIGN_COUNT_FALSE", "ALIGN_FRACTION_TRUE", "ALIGN_PERCENTILE_99",
                "ALIGN_PERCENTILE_95", "ALIGN_PERCENTILE_50", "ALIGN_PERCENTILE_05", "ALIGN_PERCENT_CHANGE")
GCP_REDUCERS = ("REDUCE_NONE", "REDUCE_MEAN", "REDUCE_MIN", "REDUCE_MAX", "REDUCE_SUM", "REDUCE_STDDEV",
                "REDUCE_COUNT", "REDUCE_COUNT_TRUE", "REDUCE_COUNT_FALSE", "REDUCE_FRACTION_TRUE",
                "REDUCE_PERCENTILE_99", "REDUCE_PERCENTILE_95", "REDUCE_PERCENTILE_50",
                "REDUCE_PERCENTILE_05")
GCP_MODULES = ("google.cloud.monitoring_v3", "google.auth")


class GcpMonitoringProbeConfig(_CloudSignal):
    """A Cloud Monitoring time-series filter, optionally aligned and reduced; every series' newest point
    must meet the condition (reduce across series with ``reducer`` to judge one number)."""

    type: Literal["gcp_monitoring"]
    project: str = Field(pattern=r"^[a-z0-9][a-z0-9.:-]{0,62}$", description="project id or number")
    filter: str = Field(min_length=1, description='e.g. metric.type = "cloudsql.googleapis.com/..."')
    aligner: str | None = Field(None, description="per-series aligner, e.g. ALIGN_MAX")
    alignment_period: Annotated[Duration, positive(DAY)] | None = None
    reducer: str | None = Field(None, description="cross-series reducer, e.g. REDUCE_MAX")
    group_by: list[str] = Field(default_factory=list)
    credentials: GcpCredentials = Field(default_factory=lambda: GcpAdc(type="adc"))

    @field_validator("filter")
    @classmethod
    def _names_metric(cls, value: str) -> str:
        if "metric.type" not in value:
            raise ValueError('must select a metric, e.g. metric.type = "cloudsql.googleapis.com/..."')
        return value

    @model_validator(mode="after")
    def _aggregation(self) -> Self:
        if self.aligner is not None and self.aligner not in GCP_ALIGNERS:
            raise rule_error("aligner", f"unknown aligner; one of {', '.join(GCP_ALIGNERS)}")
        if self.reducer is not None and self.reducer not in GCP_REDUCERS:
            raise rule_error("reducer", f"unknown reducer; one of {', '.join(GCP_REDUCERS)}")
        aligned = self.aligner not in (None, "ALIGN_NONE")
        if aligned and self.alignment_period is None:
            raise rule_error("alignment_period", f"required with aligner {self.aligner}")
        if self.alignment_period is not None:
            if not aligned:
                raise rule_error("alignment_period", "only applies with an aligner")
            if not 0 < self.alignment_period <= self.window:
                raise rule_error("alignment_period",
                                 f"must be > 0 and <= window ({format_duration(self.window)})")
        if self.reducer not in (None, "REDUCE_NONE") and not aligned:
            raise rule_error("reducer", "needs an aligner (Cloud Monitoring reduces aligned series only)")
        if self.group_by and self.reducer in (None, "REDUCE_NONE"):
            raise rule_error("group_by", "only applies with a reducer")
        _require_extra("gcp", GCP_MODULES)
        return self


# --- Azure ---------------------------------------------------------------------------------------

class AzureDefault(Model):
    """``DefaultAzureCredential``: environment, workload identity, managed identity, Azure CLI."""

    type: Literal["default"]


class AzureWorkloadIdentity(Model):
    """``WorkloadIdentityCredential``; fields left out come from ``AZURE_TENANT_ID`` and friends."""

    type: Literal["workload_identity"]
    tenant_id: str | None = None
    client_id: str | None = None
    token_file: str | None = Field(None, description="default: $AZURE_FEDERATED_TOKEN_FILE")


class AzureClientSecret(Model):
    """An app registration's client secret (give it as ``${ENV}`` or ``file:/path``)."""

    type: Literal["client_secret"]
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    secret: Secret
    authority: str | None = Field(None, description="e.g. login.microsoftonline.us for sovereign clouds")


AzureCredentials = Annotated[AzureDefault | AzureWorkloadIdentity | AzureClientSecret,
                             Field(discriminator="type")]

_RESOURCE_ID = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/[^/]+/providers/.+", re.IGNORECASE)
AZURE_METRICS_MODULES = ("azure.monitor.querymetrics", "azure.identity")
AZURE_LOGS_MODULES = ("azure.monitor.query", "azure.identity")


class _AzureSignal(_CloudSignal):
    credentials: AzureCredentials = Field(default_factory=lambda: AzureDefault(type="default"))
    audience: str | None = Field(None, description="token audience for sovereign clouds")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must start with https://")
        return value

    @model_validator(mode="after")
    def _plain_http(self) -> Self:
        if self.endpoint and self.endpoint.startswith("http://") and not self.insecure_endpoint_for_tests:
            raise rule_error("endpoint",
                             "must be https:// (plain http only with insecure_endpoint_for_tests)")
        return self


class AzureMetricsProbeConfig(_AzureSignal):
    """Azure Monitor metrics (``metrics:getBatch``): every resource's newest point must meet the condition."""

    type: Literal["azure_metrics"]
    endpoint: str | None = Field(None, description="regional endpoint, https://<region>.metrics.monitor.azure.com")
    resource_ids: list[str] = Field(min_length=1, max_length=50)
    namespace: str = Field(min_length=1, description="e.g. Microsoft.Sql/servers/databases")
    metric: str = Field(min_length=1, description="e.g. cpu_percent")
    aggregation: Literal["average", "minimum", "maximum", "total", "count"] = "average"
    granularity: Annotated[Duration, positive(DAY)] = Field(60.0, description="time grain of the points")
    filter: str | None = Field(None, description="dimension filter, e.g. \"Role eq 'primary'\"")

    @field_validator("resource_ids")
    @classmethod
    def _resource_ids(cls, value: list[str]) -> list[str]:
        subscriptions = set()
        for index, rid in enumerate(value):
            match = _RESOURCE_ID.match(rid)
            if match is None:
                raise ValueError(
                    f"[{index}] is not a resource id (/subscriptions/…/resourceGroups/…/providers/…)")
            subscriptions.add(match.group(1).lower())
        if len(subscriptions) > 1:
            raise ValueError("all resources must be in one subscription (one getBatch call)")
        return value

    @model_validator(mode="after")
    def _metrics_rules(self) -> Self:
        if not self.endpoint:
            raise rule_error("endpoint", "required: https://<region>.metrics.monitor.azure.com")
        if not 0 < self.granularity <= self.window:
            raise rule_error("granularity", f"must be > 0 and <= window ({format_duration(self.window)})")
        _require_extra("azure", AZURE_METRICS_MODULES)
        return self


class AzureLogsProbeConfig(_AzureSignal):
    """A Log Analytics KQL query; the first row's value (``column`` or the first) meets the condition.

    Freshness: with ``time_column`` the row's time must be within ``staleness``. Without it the only
    bound is the query's timespan (``window``): any row the query returns counts as fresh, so a
    ``staleness`` other than ``window`` is refused rather than silently ignored.
    """

    type: Literal["azure_logs"]
    workspace_id: str = Field(min_length=1)
    query: str = Field(min_length=1, description="KQL, e.g. AzureMetrics | summarize max(Maximum)")
    column: str | None = Field(None, description="column holding the value (default: the first)")
    time_column: str | None = Field(None, description=(
        "column holding the row's time; its age is checked against staleness. Without it the query "
        "window is the only freshness bound (rows older than window are not queried)"))
    staleness: Annotated[Duration, positive(7 * DAY)] | None = Field(None, description=(
        "a row whose time_column is older than this fails (default: window); needs time_column "
        "unless equal to window"))

    @model_validator(mode="after")
    def _logs_rules(self) -> Self:
        if self.time_column is None and self.staleness is not None and self.staleness != self.window:
            raise rule_error("staleness", "needs time_column (without a row time only window bounds freshness: "
                                          f"set window to {format_duration(self.staleness)} or add time_column)")
        _require_extra("azure", AZURE_LOGS_MODULES)
        return self

"""Probe configs: the ``type:`` of each entry under ``services.<name>.sites.<site>.probes``.

HTTP and TCP live here; cloud metric probes live in :mod:`engine.config.cloud`. The union is
discriminated by ``type`` so an error names the fields of the probe kind that was meant.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from engine.config.base import MINUTE, Duration, Model, format_duration, positive, rule_error
from engine.config.cloud import AzureLogsProbeConfig, AzureMetricsProbeConfig, GcpMonitoringProbeConfig
from engine.config.probe_common import ProbeCommon
from engine.config.provider_health import ProviderHealthProbeConfig


class JsonCondition(Model):
    """A condition on one field of a JSON body: ``path`` is dotted (``checks.db.status``)."""

    path: str = Field(min_length=1)
    equals: Any = None
    not_equals: Any = None
    less_than: float | None = None  # finite: the model refuses NaN and infinity everywhere
    greater_than: float | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> Self:
        given = [k for k in ("equals", "not_equals", "less_than", "greater_than")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise rule_error("path", "give exactly one of equals, not_equals, less_than, greater_than")
        return self


class HttpProbeConfig(ProbeCommon):
    """An HTTP check, by default on a new connection each time like real health checkers."""

    type: Literal["http"]
    url: str = Field(description="http:// or https:// URL")
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = Field(None, description="request body for POST")
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=lambda: [200], min_length=1)
    body_contains: str | None = None
    json_condition: JsonCondition | None = Field(None, alias="json")
    max_latency: Annotated[Duration, positive(10 * MINUTE)] | None = Field(
        None, description="a slower answer counts as a failure")
    max_body_bytes: int = Field(1_048_576, ge=1, le=64 * 1_048_576,
                                description="read at most this much of the body")
    tls_verify: bool = True
    ca_file: str | None = None
    new_connection: bool = Field(True, description="open a fresh connection for every check")

    model_config = Model.model_config | {"populate_by_name": True}

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        bad = [s for s in value if not 100 <= s <= 599]
        if bad:
            raise ValueError(f"not HTTP status codes: {bad}")
        return value

    @model_validator(mode="after")
    def _latency_below_timeout(self) -> Self:
        if self.max_latency is not None and self.max_latency >= self.timeout:
            raise rule_error("max_latency", f"must be < timeout ({format_duration(self.timeout)})")
        if self.ca_file is not None and not self.url.startswith("https://"):
            raise rule_error("ca_file", "only applies to https:// URLs")
        return self


class TcpProbeConfig(ProbeCommon):
    """A TCP connect check."""

    type: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


ProbeConfig = Annotated[
    HttpProbeConfig | TcpProbeConfig | GcpMonitoringProbeConfig | AzureMetricsProbeConfig
    | AzureLogsProbeConfig | ProviderHealthProbeConfig,
    Field(discriminator="type"),
]

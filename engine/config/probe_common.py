"""Fields every probe kind shares, and the rules on them (timeout below interval)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from engine.config.base import HOUR, MINUTE, Duration, Model, Span, format_duration, positive, rule_error


class ProbeCommon(Model):
    """Fields every probe shares: its name, cadence and optional threshold overrides."""

    name: str | None = Field(None, description="unique within the site; defaults to the probe type")
    interval: Annotated[Duration, Span(0.05, HOUR)] = Field(10.0, description="time between two checks")
    timeout: Annotated[Duration, positive(10 * MINUTE)] = Field(5.0, description="a check slower than this fails")
    failure_threshold: int | None = Field(None, ge=1, le=100, description="overrides the service policy")
    success_threshold: int | None = Field(None, ge=1, le=100, description="overrides the service policy")

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> Self:
        if self.timeout >= self.interval:
            raise rule_error("timeout", f"must be < interval ({format_duration(self.interval)})")
        return self

    @property
    def signal_name(self) -> str:
        return self.name or str(getattr(self, "type", "probe"))

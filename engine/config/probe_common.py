"""Fields every probe kind shares, and the rules on them (timeout below interval)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from engine.config.base import Duration, Model, format_duration, rule_error


class ProbeCommon(Model):
    """Fields every probe shares: its name, cadence and optional threshold overrides."""

    name: str | None = Field(None, description="unique within the site; defaults to the probe type")
    interval: Duration = Field(10.0, description="time between two checks")
    timeout: Duration = Field(5.0, description="a check slower than this fails")
    failure_threshold: int | None = Field(None, ge=1, le=100, description="overrides the service policy")
    success_threshold: int | None = Field(None, ge=1, le=100, description="overrides the service policy")

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> Self:
        if self.interval <= 0:
            raise rule_error("interval", "must be > 0")
        if self.timeout <= 0:
            raise rule_error("timeout", "must be > 0")
        if self.timeout >= self.interval:
            raise rule_error("timeout", f"must be < interval ({format_duration(self.interval)})")
        return self

    @property
    def signal_name(self) -> str:
        return self.name or str(getattr(self, "type", "probe"))

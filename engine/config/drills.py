"""The ``drills:`` section of a service: when shadow and full drills run, what they check, their SLOs.

Cron expressions are five fields in UTC (``minute hour day-of-month month day-of-week``). A
scheduled drill may start from its cron time until ``window`` later (a drill that could not start
in its window is overdue); a full drill must fit its hold inside that window.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from croniter import croniter
from pydantic import Field, field_validator, model_validator

from engine.config.base import DAY, HOUR, MINUTE, Duration, Model, Span, format_duration, positive, rule_error


def _cron(value: str) -> str:
    text = " ".join(value.split())
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ValueError(f"'{value}' is not a five-field cron expression (minute hour day month weekday, UTC)")
    return text


class DrillScheduleConfig(Model):
    enabled: bool = True
    schedule: str = Field(description="cron, five fields, UTC")
    window: Annotated[Duration, positive(7 * DAY)] = Field(
        4 * 3600.0, description="how long after its cron time a drill may still start")

    _schedule = field_validator("schedule")(classmethod(lambda cls, v: _cron(v)))


class ShadowDrillConfig(DrillScheduleConfig):
    """The non-disruptive test: nothing changes."""

    schedule: str = Field("0 3 1 * *", description="cron, UTC; default monthly (03:00 on the 1st)")


class FullDrillConfig(DrillScheduleConfig):
    """A real failover to the standby, held while validated, then failed back. Disruptive, so a
    schedule runs it only when ``enabled`` (opt in); a manual drill runs either way."""

    enabled: bool = Field(False, description="run on the schedule (manual drills run regardless)")
    schedule: str = Field("0 3 1 1,4,7,10 *", description="cron, UTC; default quarterly (03:00 on the 1st)")
    hold: Annotated[Duration, positive(7 * DAY)] = Field(
        15 * 60.0, description="how long the standby serves before failing back")
    validate_every: Annotated[Duration, positive(HOUR)] = Field(
        10.0, description="how often the hold re-validates the standby")
    catch_up: Annotated[Duration, positive(DAY)] = Field(
        120.0, description="how long failback waits for reverse replication")

    @model_validator(mode="after")
    def _hold_fits(self) -> Self:
        if self.hold >= self.window:
            raise rule_error("hold", f"hold {format_duration(self.hold)} is not shorter than the window "
                             f"{format_duration(self.window)}: the drill could not finish inside it")
        return self


class DrillSloConfig(Model):
    """What each phase of a full drill should take at most."""

    decision: Annotated[Duration, positive(DAY)] = Field(
        5.0, description="drill start to runbook start (gates evaluated)")
    dns_shift: Annotated[Duration, positive(DAY)] = Field(15.0, description="runbook start to DNS changed")
    dns_verified: Annotated[Duration, positive(DAY)] = Field(
        60.0, description="DNS changed to every authoritative server answering")
    consistency: Annotated[Duration, positive(DAY)] = Field(60.0, description="the data-loss check after the move")
    rto: Annotated[Duration, positive(7 * DAY)] = Field(
        300.0, description="drill start to the standby serving, checked")
    failback: Annotated[Duration, positive(7 * DAY)] = Field(900.0, description="failback start to home serving again")


class SyntheticRequestConfig(Model):
    method: Literal["GET", "HEAD"] = "GET"
    path: str = Field("/", pattern=r"^/", description="appended to each site's base URL")
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=lambda: [200], min_length=1)


class SyntheticConfig(Model):
    """Requests replayed against every site, compared: the standby must answer like the primary."""

    sites: dict[str, str] = Field(description="base URL per site, e.g. gcp: https://gcp.shop.example.com")
    requests: list[SyntheticRequestConfig] = Field(min_length=1)
    repeat: int = Field(20, ge=1, le=10_000, description="how many times each request is sent per site")
    timeout: Annotated[Duration, positive(5 * MINUTE)] = 5.0
    max_error_rate_increase: float = Field(0.01, ge=0, le=1, description="standby errors minus primary errors")
    max_p95_ratio: float = Field(3.0, ge=1, le=1000, description="standby p95 at most this times the primary's")
    p95_floor: Annotated[Duration, Span(0, MINUTE)] = Field(
        0.05, description="p95 below this is fast enough whatever the ratio")

    @field_validator("sites")
    @classmethod
    def _urls(cls, value: dict[str, str]) -> dict[str, str]:
        for site, url in value.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{site}: '{url}' must start with http:// or https://")
        return {site: url.rstrip("/") for site, url in value.items()}


class DrillsConfig(Model):
    shadow: ShadowDrillConfig = Field(default_factory=ShadowDrillConfig)
    full: FullDrillConfig = Field(default_factory=FullDrillConfig)
    slo: DrillSloConfig = Field(default_factory=DrillSloConfig)
    synthetic: SyntheticConfig | None = None

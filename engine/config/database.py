"""Database config of a service: the PostgreSQL pair, replication, heartbeat, fencing, reconciliation.

Owned by the PostgreSQL work (issue 4). Shape::

    database:
      sites:                      # exactly the two sites of the service
        gcp:   {host: 10.0.0.5, port: 5432, dbname: app, user: failover, password: ${PG_PASSWORD}}
        azure: {host: app.postgres.database.azure.com, dbname: app, user: failover, sslmode: require}
      publication: failover_pub   # on the primary; the standby subscribes with `subscription`
      subscription: failover_sub
      heartbeat: {table: failover_heartbeat, interval: 5s}
      lag_probe: {interval: 30s, timeout: 10s, max_lag: 30s}
      fencing: {enabled: true, timeout: 10s}
      promotion: {sequence_margin: 1000, timeout: 60s}
      reconcile:
        schedule: 5m
        tables: [{name: orders, updated_at: updated_at}]
        metrics: [{name: order_total, query: "SELECT sum(amount) FROM orders WHERE ...", tolerance: 0.01}]
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from engine.config.base import DAY, HOUR, MINUTE, Duration, Model, Secret, Span, format_duration, positive, rule_error

IDENT = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"
QUALIFIED = r"^([A-Za-z_][A-Za-z0-9_$]{0,62}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}$"


class PgConnection(Model):
    """How the engine reaches one site's PostgreSQL server."""

    host: str = Field(min_length=1, description="host name, IP address or unix socket directory")
    port: int = Field(5432, ge=1, le=65535)
    dbname: str = Field(min_length=1)
    user: str = Field(min_length=1)
    password: Secret | None = Field(None, description="${ENV} or file:/path; never logged")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    connect_timeout: Annotated[Duration, positive(5 * MINUTE)] = Field(5.0, description="bound on opening a connection")
    replication_host: str | None = Field(
        None, description="host the OTHER server uses to reach this one for replication (default: host)")
    replication_port: int | None = Field(None, ge=1, le=65535)
    replication_passfile: str | None = Field(
        None, min_length=1,
        description="libpq password file on the OTHER server's host, used by a subscription to this server "
                    "instead of embedding the password (which would be stored in pg_subscription.subconninfo)")

    @model_validator(mode="after")
    def _positive_timeout(self) -> Self:
        if self.connect_timeout <= 0:
            raise rule_error("connect_timeout", "must be > 0")
        return self


class HeartbeatConfig(Model):
    """The row the engine writes on the primary and reads on the standby to measure lag in seconds."""

    table: str = Field("failover_heartbeat", pattern=QUALIFIED)
    interval: Annotated[Duration, positive(HOUR)] = Field(
        5.0, description="how often the engine writes its heartbeat on the primary")

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if self.interval <= 0:
            raise rule_error("interval", "must be > 0")
        return self


class LagProbeConfig(Model):
    """The replication signal: slot lag, apply worker and heartbeat lag."""

    interval: Annotated[Duration, positive(HOUR)] = 30.0
    timeout: Annotated[Duration, positive(10 * MINUTE)] = 10.0
    statement_timeout: Annotated[Duration, positive(10 * MINUTE)] = Field(
        5.0, description="bound on every query the probe runs")
    max_lag: Annotated[Duration, positive(DAY)] = Field(
        30.0, description="heartbeat lag above this makes the signal fail")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.interval <= 0:
            raise rule_error("interval", "must be > 0")
        if self.timeout <= 0:
            raise rule_error("timeout", "must be > 0")
        if self.timeout >= self.interval:
            raise rule_error("timeout", f"must be < interval ({format_duration(self.interval)})")
        if not 0 < self.statement_timeout <= self.timeout:
            raise rule_error("statement_timeout", f"must be > 0 and <= timeout ({format_duration(self.timeout)})")
        if self.max_lag <= 0:
            raise rule_error("max_lag", "must be > 0")
        return self


class FencingConfig(Model):
    """Making the old primary refuse writes: best effort, bounded."""

    enabled: bool = True
    timeout: Annotated[Duration, positive(10 * MINUTE)] = Field(10.0, description="the whole fence gives up after this")
    terminate_sessions: bool = Field(True, description="end client sessions (never replication ones)")

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if self.timeout <= 0:
            raise rule_error("timeout", "must be > 0")
        return self


class PromotionConfig(Model):
    """Making the standby the primary."""

    sequence_margin: int = Field(1000, ge=0, le=10**12, description="sequences are set to max(column) + this")
    timeout: Annotated[Duration, positive(HOUR)] = Field(60.0, description="the whole promotion gives up after this")
    statement_timeout: Annotated[Duration, positive(HOUR)] = 30.0

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if self.timeout <= 0:
            raise rule_error("timeout", "must be > 0")
        if not 0 < self.statement_timeout <= self.timeout:
            raise rule_error("statement_timeout", f"must be > 0 and <= timeout ({format_duration(self.timeout)})")
        return self


class ReconcileTable(Model):
    """One table to compare between the two sites."""

    name: str = Field(pattern=QUALIFIED)
    key: str | None = Field(None, pattern=IDENT, description="integer primary key column (default: the PK)")
    updated_at: str | None = Field(
        None, pattern=IDENT, description="timestamp column: rows newer than the lag watermark are in flight")
    chunk_rows: int = Field(100_000, ge=100, le=100_000_000, description="keys compared per paced chunk")


class BusinessMetric(Model):
    """A query returning one number, run on both sites and compared with a tolerance."""

    name: str = Field(pattern=IDENT)
    query: str = Field(min_length=1, description="SELECT returning one numeric value")
    tolerance: float = Field(0.0, ge=0, le=1e18, description="largest absolute difference that is still ok")


class ReconcileConfig(Model):
    """Scheduled comparison of the two databases."""

    enabled: bool = True
    schedule: Annotated[Duration, positive(30 * DAY)] = Field(300.0, description="time between two scheduled runs")
    statement_timeout: Annotated[Duration, positive(DAY)] = Field(
        30.0, description="bound on every reconciliation query")
    chunk_budget: Annotated[Duration, positive(HOUR)] = Field(
        2.0, description="target time per chunk; chunks shrink when slower")
    pause: Annotated[Duration, Span(0, HOUR)] = Field(
        0.0, description="rest between chunks so production does not feel the scan")
    in_flight_margin: Annotated[Duration, Span(0, HOUR)] = Field(
        5.0, description="without a heartbeat, rows newer than standby now() minus this are in flight")
    max_reported_rows: int = Field(100, ge=1, le=100_000, description="differing rows listed per table")
    hash: Literal["auto", "native", "portable"] = Field(
        "auto", description="native row hashes need equal major versions; portable = md5 of canonical text")
    tables: list[ReconcileTable] = Field(default_factory=list)
    metrics: list[BusinessMetric] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.schedule <= 0:
            raise rule_error("schedule", "must be > 0")
        if not 0 < self.statement_timeout < self.schedule:
            raise rule_error("statement_timeout", f"must be > 0 and < schedule ({format_duration(self.schedule)})")
        if self.chunk_budget <= 0:
            raise rule_error("chunk_budget", "must be > 0")
        for kind, names in (("tables", [t.name for t in self.tables]), ("metrics", [m.name for m in self.metrics])):
            for index, name in enumerate(names):
                if names.index(name) != index:
                    raise rule_error(f"{kind}[{index}].name", f"'{name}' is listed twice")
        return self


class DatabaseConfig(Model):
    """The primary/standby PostgreSQL pair of a service."""

    sites: dict[str, PgConnection] = Field(description="one connection per site of the service")
    publication: str = Field("failover_pub", pattern=IDENT)
    subscription: str = Field("failover_sub", pattern=IDENT)
    slot: str | None = Field(None, pattern=IDENT, description="replication slot (default: subscription name)")
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)
    lag_probe: LagProbeConfig = Field(default_factory=LagProbeConfig)
    fencing: FencingConfig = Field(default_factory=FencingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)

    @field_validator("sites")
    @classmethod
    def _two_sites(cls, value: dict[str, PgConnection]) -> dict[str, PgConnection]:
        if len(value) != 2:
            raise ValueError(f"needs exactly two sites (primary and standby), got {len(value)}")
        return value

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.heartbeat.interval >= self.lag_probe.max_lag:
            raise rule_error("heartbeat.interval",
                             f"must be < lag_probe.max_lag ({format_duration(self.lag_probe.max_lag)})")
        return self

    @property
    def slot_name(self) -> str:
        return self.slot or self.subscription

    def other_site(self, site: str) -> str:
        """The site that is not ``site``."""
        if site not in self.sites:
            raise KeyError(f"'{site}' is not a database site ({sorted(self.sites)})")
        return next(name for name in self.sites if name != site)

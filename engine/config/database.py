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
      slot_retained_alert: 1GiB   # alert when a slot keeps more WAL than this on the primary
      promotion: {sequence_margin: 1000, timeout: 60s}
      synchronous: on             # off | on | strict (see docs/synchronous.md)
      synchronous_degrade: {after: 10s, commit_wait_limit: 1s, restore_lag: 1048576, check_interval: 1s}
      reconcile:
        schedule: 5m
        tables:
          - {name: orders, updated_at: updated_at, exclude: [updated_at]}
          - {name: line_items, key: [order_id, line_no], conflict: keep_both}
          - {name: profiles, key: user_id, updated_at: changed_at, conflict: last_writer_wins}
        metrics: [{name: order_total, query: "SELECT sum(amount) FROM orders WHERE ...", tolerance: 0.01}]
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, StringConstraints, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

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


# -- stray-primary watch (issue 17, item 4) -----------------------------------------------------------------
class StrayWatchConfig(Model):
    """Fencing a database that takes writes while its site is not the active one (engine.core.stray)."""

    enabled: bool = Field(True, description="look at every reachable site's database and fence a stray primary")
    interval: Duration = Field(5.0, description="how often each site's database is looked at (a fresh session)")
    max_backoff: Duration = Field(60.0, description="longest wait between two attempts to fence it when they fail")

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if self.interval <= 0:
            raise rule_error("interval", "must be > 0")
        if self.max_backoff < self.interval:
            raise rule_error("max_backoff", f"must be >= interval ({format_duration(self.interval)})")
        return self
# -- end of the stray-primary watch block --------------------------------------------------------------------


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


# -- reconciliation tables (issue 20): key, columns, conflict policy ------------------------------
Ident = Annotated[str, StringConstraints(pattern=IDENT)]


class ReconcileTable(Model):
    """One table to compare between the two sites: its key, the compared columns, the failback policy."""

    name: str = Field(pattern=QUALIFIED)
    key: Ident | list[Ident] | None = Field(
        None, description="key column(s): the primary key or a unique index on NOT NULL columns "
                          "(default: the primary key read from the catalog)")
    columns: list[Ident] | None = Field(None, min_length=1, description="compare only these columns (and the key)")
    exclude: list[Ident] = Field(default_factory=list, description="columns not compared, e.g. updated_at")
    updated_at: str | None = Field(
        None, pattern=IDENT, description="timestamp column (timestamp, timestamptz or date) that every write sets: "
                                         "rows newer than the lag watermark are in flight; last_writer_wins orders "
                                         "the two versions of a row by it")
    chunk_rows: int = Field(100_000, ge=100, le=100_000_000, description="rows compared per paced chunk")
    conflict: Literal["keep_new", "keep_both", "last_writer_wins"] = Field(
        "keep_new", description="at failback, a row the new primary wrote after promotion that differs on the old "
                                "one: the new version wins (keep_new), the old one is also kept in the quarantine "
                                "(keep_both), or the version with the later updated_at wins and an old version "
                                "that is newer, or a write lost at failover, is written back onto the new "
                                "primary (last_writer_wins, quarantined too); rows lost at failover are "
                                "quarantined either way")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        keys = [self.key] if isinstance(self.key, str) else self.key or []
        if isinstance(self.key, list) and not self.key:
            raise rule_error("key", "must name at least one column")
        for label, names in (("key", keys), ("columns", self.columns or []), ("exclude", self.exclude)):
            for index, name in enumerate(names):
                if names.index(name) != index:
                    raise rule_error(label, f"'{name}' is listed twice")
        clash = sorted(set(keys) & set(self.exclude))
        if clash:
            raise rule_error("exclude", f"key column {', '.join(clash)} cannot be excluded")
        both = sorted(set(self.columns or []) & set(self.exclude))
        if both:
            raise rule_error("exclude", f"{', '.join(both)} is both chosen and excluded")
        if self.conflict == "last_writer_wins" and not self.updated_at:
            raise rule_error("updated_at", "conflict last_writer_wins needs the timestamp column that every write "
                                           "sets (which version of a row is the last write)")
        return self

    @property
    def key_columns(self) -> list[str] | None:
        """The configured key as a list, or None (read from the catalog)."""
        return [self.key] if isinstance(self.key, str) else self.key


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
    scan: Literal["auto", "keys"] = Field(
        "auto", description="auto: heaps that lay rows out alike (a logical replica's first copy) are compared "
                            "block by block, others by key; keys: always by key")
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


# -- synchronous replication (issue 24) -------------------------------------------------------------
class SyncDegradeConfig(Model):
    """When ``synchronous: on`` gives up on the standby (degrades to asynchronous) and when it restores."""

    after: Duration = Field(10.0, description="standby missing, not sync or behind this long: degrade "
                                              "(``on`` only; ``strict`` never degrades)")
    commit_wait_limit: Duration = Field(1.0, description="a commit waiting longer than this counts as the "
                                                         "standby being behind")
    restore_lag: int = Field(1_048_576, ge=0, le=1 << 34, description="restore synchronous commit once the "
                             "streaming standby is within this many bytes of WAL")
    check_interval: Duration = Field(1.0, description="how often the engine reads the primary's replication state")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if not 0.5 <= self.after <= 3600:
            raise rule_error("after", "must be between 500ms and 1h")
        if not 0.1 <= self.check_interval <= 60:
            raise rule_error("check_interval", "must be between 100ms and 1m")
        if self.check_interval * 2 > self.after:
            raise rule_error("check_interval", f"must be <= half of after ({format_duration(self.after)})")
        if not 0 < self.commit_wait_limit < self.after:
            raise rule_error("commit_wait_limit", f"must be > 0 and < after ({format_duration(self.after)})")
        return self


SyncMode = Literal["off", "on", "strict"]


def _yaml_switch(value: object) -> object:
    """YAML 1.1 reads a bare ``on``/``off`` as a boolean: take it as the mode of that name."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value


# -- replication slot retention (issue 17 item 7) ---------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$")
_UNITS = {None: 1, "B": 1, "kB": 1000, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3,
          "GiB": 1024**3, "TB": 1000**4, "TiB": 1024**4}
MIN_SLOT_ALERT, MAX_SLOT_ALERT = 1024, 1024**5  # 1 KiB .. 1 PiB


def parse_size(value: Any) -> int:
    """``1GiB``, ``512MB``, ``64KiB`` or a whole number of bytes → bytes (finite, whole)."""
    if isinstance(value, bool):
        raise PydanticCustomError("size", "expected a size such as 1GiB, 512MB or a number of bytes")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value != int(value):
            raise PydanticCustomError("size", "must be a whole, finite number of bytes")
        return int(value)
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise PydanticCustomError("size", "expected a size such as 1GiB, 512MB or a number of bytes")
    number = float(match.group(1)) * _UNITS[match.group(2)]
    return int(number)


ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?$"},
                              {"type": "integer", "minimum": MIN_SLOT_ALERT, "maximum": MAX_SLOT_ALERT}],
                    "description": "a size: 1GiB, 512MB, 64KiB, or bytes as a number"}),
]


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
    # synchronous replication (issue 24)
    synchronous: SyncMode = Field("off", description="off | on (degrades to asynchronous when the standby is "
                                  "lost) | strict (writes wait for the standby, never degrades)")
    synchronous_degrade: SyncDegradeConfig = Field(default_factory=SyncDegradeConfig)
    _synchronous_switch = field_validator("synchronous", mode="before")(_yaml_switch)
    stray_watch: StrayWatchConfig = Field(default_factory=StrayWatchConfig)  # issue 17 item 4
    # -- replication slot retention (issue 17 item 7)
    slot_retained_alert: ByteSize = Field(
        1024**3, ge=MIN_SLOT_ALERT, le=MAX_SLOT_ALERT,
        description="alert when a replication slot keeps more WAL than this on the current primary (e.g. 1GiB)")

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

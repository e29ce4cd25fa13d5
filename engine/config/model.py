"""The config of one instance: who it is, its peers, its journal and the services it watches.

Rules that span fields live in validators next to the fields they judge and raise
:func:`~engine.config.base.rule_error`, so every message carries the exact path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from engine.config.base import DAY, HOUR, MINUTE, Duration, Model, Secret, Span, positive, rule_error
from engine.config.coordination import CoordinationConfig, holder_budget_problem
from engine.config.database import DatabaseConfig
from engine.config.dns import DnsConfig
from engine.config.drills import DrillsConfig
from engine.config.lease import DEFAULT_LENGTH, DEFAULT_SLACK, Lease, default_length, lease_for, problem
from engine.config.probes import ProbeConfig
from engine.config.runbook import StepBudgets

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
    return value


def _readable(path: str) -> str:
    if not Path(path).expanduser().is_file():
        raise ValueError(f"no such file: {path}")
    return path


ReadableFile = Annotated[str, AfterValidator(_readable)]


class ListenerTlsConfig(Model):
    """HTTPS for the API. With ``client_ca_file``, client certificates signed by it are verified
    (and peers can be required to present one: ``peering.tls.require_client_cert``)."""

    cert_file: ReadableFile
    key_file: ReadableFile
    client_ca_file: ReadableFile | None = None


class PeerTlsConfig(Model):
    """mTLS between voters, on top of the HMAC: verify peers' servers, present our certificate, and
    optionally refuse verdicts not sent with a client certificate whose CN is the sender's id."""

    ca_file: ReadableFile | None = Field(None, description="CA that signed the peers' certificates")
    cert_file: ReadableFile | None = Field(None, description="our client certificate (CN = instance id)")
    key_file: ReadableFile | None = None
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise rule_error("key_file", "cert_file and key_file go together")
        return self


class InstanceConfig(Model):
    """This process: its id, the site it runs in, its role and where its API listens."""

    id: str = Field(pattern=NAME_PATTERN)
    site: str = Field(pattern=NAME_PATTERN, description="the site this instance runs in (witness: any label)")
    role: Literal["engine", "witness"] = "engine"
    listen: str = Field("127.0.0.1:8080", description="host:port of the HTTP API")
    tick: Annotated[Duration, Span(0.05, MINUTE)] = Field(1.0, description="how often the decision loop runs")
    tls: ListenerTlsConfig | None = Field(None, description="serve the API over HTTPS")
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="auto: uvloop when installed (faster API and probing), else the standard loop")

    _listen = field_validator("listen")(classmethod(lambda cls, v: _host_port(v)))


class PeerConfig(Model):
    """Another voter: an engine in another site, or the witness."""

    id: str = Field(pattern=NAME_PATTERN)
    url: str = Field(description="base URL of the peer's API, e.g. https://engine.azure.example:8080")
    site: str = Field(pattern=NAME_PATTERN)
    role: Literal["engine", "witness"] = "engine"
    key: Secret | None = Field(None, description=(
        "the HMAC key this instance and that peer alone share (16+ characters, ${ENV} or file:/path): verdicts "
        "between the two are signed with it, so no third voter can sign as either (see docs/security.md)"))

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class PeeringConfig(Model):
    """How instances authenticate each other's verdicts: each link its own key (``peers[].key``), a replay
    window, and optionally mTLS."""

    replay_window: Annotated[Duration, Span(1, HOUR)] = Field(
        30.0, description="reject messages older or newer than this")
    tls: PeerTlsConfig | None = Field(None, description="mTLS between voters (optional, on top of HMAC)")

    @model_validator(mode="before")
    @classmethod
    def _no_shared_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "hmac_key" in data:
            raise rule_error("hmac_key", "one key shared by every voter let any of them sign as another: give "
                             "each peer its own key in peers[].key instead (see docs/security.md)")
        return data


class PolicyConfig(Model):
    """When a service may move."""

    failure_threshold: int = Field(3, ge=1, le=100, description="consecutive failures before DOWN")
    success_threshold: int = Field(2, ge=1, le=100, description="consecutive successes before UP")
    rpo: Annotated[Duration, Span(0, DAY)] = Field(60.0, description="most data-loss window a failover may accept")
    rto_slo: Annotated[Duration, positive(7 * DAY)] = Field(
        300.0, description="target time from outage to traffic moved")
    cooldown: Annotated[Duration, Span(0, 30 * DAY)] = Field(
        1800.0, description="no automatic move within this time after the last one")
    auto_failover: bool = Field(True, description="false: detect and page, never move by itself")
    failback_healthy_for: Annotated[Duration, Span(0, 7 * DAY)] = Field(300.0, description=(
        "failback needs the home site up for at least this long"))
    executors: list[str] = Field(default_factory=list, description=(
        "instance ids in the order they should act; default: the engines of the target site first"))
    lease: Annotated[Duration, positive(HOUR)] | None = Field(None, description=(
        "the self-fencing lease: renewed every tick by the voters' echoes, measured on the holder's own clock. "
        "The engine in the active site fences its own database fencing.timeout + 0.5s before it runs out; the "
        "majority promotes a standby whose old primary it could not fence after lease + 0.5s of certified "
        f"silence. Must exceed fencing.timeout + 0.5s + 2 ticks. Default: {DEFAULT_LENGTH:g}s, or that minimum + "
        f"{DEFAULT_SLACK:g}s when longer; null: no lease (it needs 3 or more voters and a database with "
        "fencing); docs/lease.md"))
    runbook_deadline: Annotated[Duration, positive(DAY)] = Field(
        900.0, description="a runbook still running after this halts and pages")
    max_auto_failovers: int = Field(1, ge=1, le=100, description=(
        "circuit breaker: automatic failovers of this service per breaker_window; one more is refused and "
        "disarms automatic action until an operator re-arms it"))
    breaker_window: Annotated[Duration, positive(30 * DAY)] = Field(3600.0, description="the circuit breaker's window")
    switchover_ttl: Annotated[Duration, Span(1, DAY)] = Field(5.0, description=(
        "a switchover lowers the records' TTL to this ahead of the move and waits out the old TTL"))
    switchover_max_lag: Annotated[Duration, Span(0, HOUR)] = Field(
        5.0, description="a switchover needs the standby at most this far behind")
    switchover_drain: Annotated[Duration, positive(HOUR)] = Field(30.0, description=(
        "how long a switchover waits, writes fenced, for the standby to apply the last of them"))
    # issue 19: the failover steps' budgets, read by engine.core.steps (runner and worst-case RTO alike)
    steps: StepBudgets = Field(default_factory=StepBudgets, description=(
        "timeouts and attempts of the failover steps traffic waits for (precheck, promote, shift_dns)"))


class SiteConfig(Model):
    """One place a service can be active, and the probes that judge it."""

    probes: list[ProbeConfig] = Field(default_factory=list)
    description: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: dict[str, int] = {}
        for index, probe in enumerate(self.probes):
            name = probe.signal_name
            if name in seen:
                raise rule_error(f"probes[{index}].name",
                                 f"'{name}' is already used by probes[{seen[name]}]; give each probe a name")
            seen[name] = index
        return self


class DependencyConfig(Model):
    """An upstream the service needs. ``shared``: both sites use it, so when it is down a failover
    would fail there too (the move is refused). ``site``: only ``site`` uses it, so it counts
    against that site like its own probes."""

    name: str = Field(pattern=NAME_PATTERN)
    scope: Literal["shared", "site"]
    site: str | None = Field(None, description="the site that uses it (scope: site)")
    probe: ProbeConfig

    @model_validator(mode="after")
    def _site_when_scoped(self) -> Self:
        if self.scope == "site" and self.site is None:
            raise rule_error("site", "required when scope is site")
        if self.scope == "shared" and self.site is not None:
            raise rule_error("site", "only for scope: site")
        return self


class ServiceConfig(Model):
    """What fails over as a unit."""

    active: str = Field(description=(
        "the home site: active at first start (later the journal knows); automatic failover only moves "
        "away from it, failback is a human decision"))
    sites: dict[str, SiteConfig] = Field(min_length=2)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    dns: DnsConfig | None = None
    database: DatabaseConfig | None = None
    dependencies: list[DependencyConfig] = Field(default_factory=list)
    drills: DrillsConfig = Field(default_factory=DrillsConfig, description="shadow and full drills, their SLOs")

    @field_validator("sites")
    @classmethod
    def _site_names(cls, value: dict[str, SiteConfig]) -> dict[str, SiteConfig]:
        bad = [name for name in value if not re.match(NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"site names must match {NAME_PATTERN}: {bad}")
        return value

    @model_validator(mode="after")
    def _active_is_a_site(self) -> Self:
        if self.active not in self.sites:
            raise rule_error("active", f"'{self.active}' is not one of the sites {sorted(self.sites)}")
        if self.dns is not None:
            for field, message in self.dns.site_problems(list(self.sites)):
                raise rule_error(f"dns.{field}", message)
        names: set[str] = set()
        for index, dep in enumerate(self.dependencies):
            if dep.site is not None and dep.site not in self.sites:
                raise rule_error(f"dependencies[{index}].site", f"'{dep.site}' is not one of the sites")
            if dep.name in names:
                raise rule_error(f"dependencies[{index}].name", f"'{dep.name}' is used twice")
            names.add(dep.name)
        synthetic = self.drills.synthetic
        if synthetic is not None:
            for site in synthetic.sites:
                if site not in self.sites:
                    raise rule_error(f"drills.synthetic.sites.{site}", f"'{site}' is not one of the sites")
            missing = sorted(set(self.sites) - set(synthetic.sites))
            if missing:
                raise rule_error("drills.synthetic.sites", f"no base URL for {', '.join(missing)}: every site "
                                 "is compared")
        return self


class JournalConfig(Model):
    """Where the SQLite journal lives."""

    path: str = Field("failover-engine.db", description="SQLite file; WAL mode, fsync on every step")


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field("auto", description="auto: JSON unless on a TTY")


class MetricsConfig(Model):
    enabled: bool = True
    requires_token: bool = Field(False, description="/metrics needs a viewer token (when tokens are configured)")


class ApiTokenConfig(Model):
    """A bearer token, stored hashed: ``sha256`` of the token (``failover-engine hash-token``)."""

    name: str = Field(pattern=NAME_PATTERN, description="who: recorded as the actor of every mutation")
    role: Literal["viewer", "operator"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token")


class ApiConfig(Model):
    """Who may read and act through the API. Without tokens reads are open and mutations refused."""

    tokens: list[ApiTokenConfig] = Field(default_factory=list)
    mutations_per_minute: int = Field(30, ge=1, le=10_000, description="per token, for POST endpoints")

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for index, token in enumerate(self.tokens):
            if token.name in seen:
                raise rule_error(f"tokens[{index}].name", f"'{token.name}' is used twice")
            seen.add(token.name)
        return self


NotificationKind = Literal["decision", "runbook", "alert", "page", "quorum", "rpo", "state", "drill"]
DEFAULT_NOTIFICATION_KINDS: tuple[NotificationKind, ...] = ("decision", "runbook", "alert", "page", "quorum", "rpo")


class WebhookConfig(Model):
    """Where notifications go. The URL is a secret: chat webhooks carry their credential in it."""

    url: Secret
    format: Literal["json", "slack"] = Field("json", description="generic JSON, or Slack-compatible text")
    kinds: list[NotificationKind] = Field(
        default_factory=lambda: list(DEFAULT_NOTIFICATION_KINDS))
    timeout: Annotated[Duration, positive(5 * MINUTE)] = 5.0
    attempts: int = Field(4, ge=1, le=20)
    backoff: Annotated[Duration, Span(0, 10 * MINUTE)] = Field(1.0, description="first retry delay; doubles each time")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class NotificationsConfig(Model):
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    queue: int = Field(1000, ge=10, le=100_000, description="notifications kept while webhooks are slow")


class BrakesConfig(Model):
    """Limits across every service of this engine."""

    max_auto_failovers: int = Field(3, ge=1, le=1000, description=(
        "automatic failovers of all services together per window; beyond it every service is disarmed"))
    window: Annotated[Duration, positive(30 * DAY)] = Field(3600.0)


class EngineConfig(Model):
    """The whole file."""

    instance: InstanceConfig
    peers: list[PeerConfig] = Field(default_factory=list)
    peering: PeeringConfig = Field(default_factory=PeeringConfig)
    journal: JournalConfig = Field(default_factory=JournalConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    brakes: BrakesConfig = Field(default_factory=BrakesConfig)
    coordination: CoordinationConfig = Field(default_factory=CoordinationConfig)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        bad = [name for name in value if not re.match(NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"service names must match {NAME_PATTERN}: {bad}")
        return value

    @model_validator(mode="after")
    def _peers_unique(self) -> Self:
        ids = [self.instance.id] + [p.id for p in self.peers]
        for index, peer in enumerate(self.peers):
            if ids.count(peer.id) > 1:
                raise rule_error(f"peers[{index}].id", f"'{peer.id}' is used twice (instance or peers)")
        ptls = self.peering.tls
        if ptls is not None and ptls.require_client_cert and (
                self.instance.tls is None or self.instance.tls.client_ca_file is None):
            raise rule_error("peering.tls.require_client_cert", "needs instance.tls.client_ca_file to verify peers")
        for index, peer in enumerate(self.peers):
            if peer.key is None:
                raise rule_error(f"peers[{index}].key", "required: verdicts between two voters are signed with the "
                                 "key they alone share (e.g. openssl rand -base64 32, the same on both)")
            if len(peer.key.get_secret_value()) < 16:
                raise rule_error(f"peers[{index}].key", "at least 16 characters (e.g. openssl rand -base64 32)")
        engines = {self.instance.id} | {p.id for p in self.peers if p.role == "engine"}
        if self.instance.role != "engine":
            engines.discard(self.instance.id)
        for name, svc in self.services.items():
            for index, executor in enumerate(svc.policy.executors):
                if executor not in engines:
                    raise rule_error(f"services.{name}.policy.executors[{index}]",
                                     f"'{executor}' is not an engine instance (known: {sorted(engines)})")
        if self.instance.role == "engine":
            for name, svc in self.services.items():
                if self.instance.site not in svc.sites:
                    raise rule_error(
                        f"services.{name}.sites",
                        f"this instance's site '{self.instance.site}' is not a site of the service")
        for name in self.services:
            lease = self.lease(name)
            refused = None if lease is None else problem(lease)
            if refused is not None:
                raise rule_error(f"services.{name}.policy.lease", refused)
        self._etcd_holder_budget()
        return self

    def _etcd_holder_budget(self) -> None:
        """etcd mode: the write lease must leave its holder time to fence each service's database."""
        coord = self.coordination
        if coord.type != "etcd":
            return
        for name, svc in self.services.items():
            if svc.database is None or not svc.database.fencing.enabled:
                continue
            trouble = holder_budget_problem(coord.lease_ttl, coord.keepalive, coord.deadline, coord.request_timeout,
                                            svc.database.fencing.timeout)
            if trouble is not None:
                raise rule_error("coordination.lease_ttl", f"for services.{name}.database.fencing.timeout: {trouble}")

    def lease(self, service: str) -> Lease | None:
        """The self-fencing lease of ``service`` (see :mod:`engine.config.lease`), or None without one: no database,
        fencing off, ``lease: null``, or fewer than 3 voters (with two, neither side moves alone)."""
        if len(self.peers) < 2:
            return None
        svc = self.services[service]
        db = svc.database
        if db is None:
            return None
        length = svc.policy.lease
        if length is None and "lease" not in svc.policy.model_fields_set:
            length = default_length(self.instance.tick, db.fencing.timeout)
        return lease_for(self.instance.tick, length, db.fencing.enabled, db.fencing.timeout)

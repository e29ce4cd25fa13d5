"""DNS config of a service: provider, records, TTL, epoch record and verification.

Owned by the DNS work (issue 3). Shape::

    dns:
      provider:                       # rfc2136 (BIND, Knot, PowerDNS...), cloudflare, or a cloud provider
                                      # of engine.config.dns_providers: cloud_dns, azure_dns,
                                      # traffic_manager, route53, cloudflare_lb
        type: rfc2136
        servers: ["10.0.0.53"]        # the primary first; "host" or "host:port"
        zone: example.com
        tsig: {name: failover-key, algorithm: hmac-sha256, secret: "file:/etc/failover/tsig"}
      records:
        - {name: app, type: A, ttl: 60s, targets: {gcp: [203.0.113.10], azure: [198.51.100.10]}}
        - {name: www, type: CNAME, targets: {gcp: [app.gcp.example.net], azure: [app.azure.example.net]}}
      epoch_record: _failover-epoch.api   # default _failover-epoch.<service>
      verify: {nameservers: [], resolvers: [1.1.1.1], deadline: 2m, interval: 1s}
      check_interval: 15s             # drift check: records vs the expected state for the current epoch

Record values are stored canonically (IPv4/IPv6 normalised, CNAME targets absolute with a trailing
dot), so what a server answers can be compared with what the config says.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import ipaddress
import re
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from engine.config.base import DAY, HOUR, MINUTE, Duration, Model, Secret, Span, format_duration, positive, rule_error
from engine.config.dns_providers import (
    ROUTING_PROVIDERS,
    AzureDnsConfig,
    CloudDnsConfig,
    CloudflareLbConfig,
    Route53Config,
    TrafficManagerConfig,
)

RecordType = Literal["A", "AAAA", "CNAME"]
TsigAlgorithm = Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5"]
CLOUDFLARE_INSTALL = "pip install 'failover-engine[cloudflare]'"
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def _is_hostname(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and all(_LABEL.match(label) for label in labels)


def _server(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if sep and host and not host.endswith("]") and ":" in host:  # a bare IPv6 address
        return value
    if sep and (not port.isdigit() or not 0 < int(port) <= 65535):
        raise ValueError(f"'{value}' must be host or host:port")
    return value


def split_server(value: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address → (host, port)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port)
    return value, default_port


class TsigConfig(Model):
    """The TSIG key that signs every update (and read) sent to the primary."""

    name: str = Field(description="key name as the server knows it, e.g. failover-key")
    algorithm: TsigAlgorithm = "hmac-sha256"
    secret: Secret = Field(description="base64 key material: ${ENV} or file:/path")

    @model_validator(mode="after")
    def _base64(self) -> Self:
        try:
            base64.b64decode(self.secret.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise rule_error("secret", "is not valid base64 key material") from None
        return self


class Rfc2136Config(Model):
    """Dynamic updates (RFC 2136) over TCP, signed with TSIG."""

    type: Literal["rfc2136"]
    servers: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="where updates go, the primary first: host or host:port")
    port: int = Field(53, ge=1, le=65535, description="port for servers given without one")
    zone: str = Field(description="the zone that holds the records, e.g. example.com")
    tsig: TsigConfig
    timeout: Annotated[Duration, positive(5 * MINUTE)] = Field(2.0, description="deadline of one request")
    attempts: int = Field(3, ge=1, le=10, description="tries per request on timeout or lost connection")
    backoff: Annotated[Duration, Span(0, MINUTE)] = Field(
        0.2, description="wait before the second try; doubles, at most 2s")

    _servers = field_validator("servers")(classmethod(lambda cls, v: [_server(s) for s in v]))

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not _is_hostname(value):
            raise ValueError(f"'{value}' is not a zone name")
        return value.rstrip(".").lower()

    @model_validator(mode="after")
    def _timeout(self) -> Self:
        if self.timeout <= 0:
            raise rule_error("timeout", "must be more than 0s")
        return self


class CloudflareConfig(Model):
    """Cloudflare's v4 API through the official SDK (extra ``[cloudflare]``)."""

    type: Literal["cloudflare"]
    zone: str = Field(description="zone name, e.g. example.com (its id is looked up)")
    api_token: Secret = Field(description="API token with DNS edit rights: ${ENV} or file:/path")
    base_url: str | None = Field(None, description="API base including /client/v4 (tests only)")
    timeout: Annotated[Duration, positive(5 * MINUTE)] = Field(10.0, description="deadline of one request")
    attempts: int = Field(3, ge=1, le=10, description="tries per request on 429, 5xx or lost connection")

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not _is_hostname(value):
            raise ValueError(f"'{value}' is not a zone name")
        return value.rstrip(".").lower()

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _sdk_installed(self) -> Self:
        if importlib.util.find_spec("cloudflare") is None:
            raise rule_error("type", f"the cloudflare provider needs its SDK: {CLOUDFLARE_INSTALL}")
        return self


ProviderConfig = Annotated[
    Rfc2136Config | CloudflareConfig | CloudDnsConfig | AzureDnsConfig | TrafficManagerConfig | Route53Config
    | CloudflareLbConfig,
    Field(discriminator="type")]


def canonical_value(rdtype: str, value: str) -> str:
    """The one spelling of a record value used for comparisons; raises ValueError when invalid."""
    if rdtype == "A":
        return str(ipaddress.IPv4Address(value.strip()))
    if rdtype == "AAAA":
        return str(ipaddress.IPv6Address(value.strip()))
    text = value.strip().lower()
    if not _is_hostname(text):
        raise ValueError(f"'{value}' is not a host name")
    return text if text.endswith(".") else text + "."


class RecordConfig(Model):
    """One name whose values move between sites."""

    name: str = Field(description="relative to the zone (app, @ for the apex) or absolute (app.example.com.)")
    type: RecordType = "A"
    ttl: Annotated[Duration, Span(1, DAY)] = Field(
        60.0, description="60s advised for public records, 30s for internal ones")
    targets: dict[str, list[str]] = Field(description="values per site, e.g. {gcp: [...], azure: [...]}")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value != "@" and not _is_hostname(value):
            raise ValueError(f"'{value}' is not a record name")
        return value.lower()

    @field_validator("targets")
    @classmethod
    def _targets(cls, targets: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        rdtype = info.data.get("type")
        if rdtype is None:  # the type itself is wrong; that error is enough
            return targets
        if len(targets) < 2:
            raise ValueError("needs the values of at least two sites")
        canonical: dict[str, list[str]] = {}
        seen: dict[tuple[str, ...], str] = {}
        for site, values in targets.items():
            if not values:
                raise rule_error(site, "needs at least one value")
            if rdtype == "CNAME" and len(values) != 1:
                raise rule_error(site, "a CNAME has exactly one value")
            try:
                canonical[site] = sorted({canonical_value(rdtype, v) for v in values})
            except ValueError as exc:
                kind = {"A": "an IPv4 address", "AAAA": "an IPv6 address"}.get(rdtype, "a host name")
                raise rule_error(site, f"{exc}; a {rdtype} value must be {kind}") from None
            key = tuple(canonical[site])
            if key in seen:
                raise rule_error(site, f"same values as site '{seen[key]}': the sites must differ")
            seen[key] = site
        return canonical

    @model_validator(mode="after")
    def _ttl(self) -> Self:
        if self.ttl != int(self.ttl) or not 1 <= self.ttl <= 86400:
            raise rule_error("ttl", "must be whole seconds between 1s and 1d")
        return self


class VerifyConfig(Model):
    """After a shift: ask every authoritative server (and optional resolvers) until all agree."""

    nameservers: list[str] = Field(
        default_factory=list, description="host or host:port; empty: discover the zone's NS records")
    port: int = Field(53, ge=1, le=65535, description=(
        "port for configured nameservers written without one; discovered nameservers use the primary's "
        "port when inside the zone, 53 when outside (see actions.dns.verify)"))
    resolvers: list[str] = Field(default_factory=list, description="recursive resolvers to watch as well")
    deadline: Annotated[Duration, positive(HOUR)] = Field(120.0, description="give up (and report who lags) after this")
    interval: Annotated[Duration, positive(5 * MINUTE)] = Field(1.0, description="pause between rounds of queries")
    query_timeout: Annotated[Duration, positive(5 * MINUTE)] = Field(2.0, description="deadline of one query")

    _servers = field_validator("nameservers", "resolvers")(
        classmethod(lambda cls, v: [_server(s) for s in v]))

    @model_validator(mode="after")
    def _times(self) -> Self:
        if self.deadline <= 0:
            raise rule_error("deadline", "must be more than 0s")
        if self.interval <= 0 or self.interval >= self.deadline:
            raise rule_error("interval", f"must be more than 0s and less than deadline "
                                         f"({format_duration(self.deadline)})")
        if self.query_timeout <= 0 or self.query_timeout > self.deadline:
            raise rule_error("query_timeout", f"must be more than 0s and at most deadline "
                                              f"({format_duration(self.deadline)})")
        return self


WEIGHTED_PROVIDERS = ("cloud_dns", "traffic_manager", "route53", "cloudflare_lb")


class WeightedFailbackConfig(Model):
    """Failback in weighted steps (issue 21): the home site gets ``steps`` percent of the traffic in turn,
    each held ``hold`` with ``checks`` healthy checks of home, rolled back to the standby at the first failure;
    the shift_dns step then makes the epoch compare-and-set (see docs/providers.md, "Weighted failback")."""

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100], min_length=1, max_length=10,
        description="percent of the traffic to home at each step, growing strictly, ending at 100")
    hold: Annotated[Duration, positive(DAY)] = Field(30.0, description="how long each step is held")
    checks: int = Field(3, ge=1, le=100, description="healthy checks of home needed during each hold")
    check_interval: Annotated[Duration, positive(HOUR)] = Field(10.0, description="time between two checks")
    canary: bool = Field(False, description="a shadow drill also sends canary_percent of the traffic to the "
                                            "standby for one hold and reports its errors (then all back)")
    canary_percent: int = Field(1, ge=1, le=50, description="share a canary drill sends to the standby")

    @model_validator(mode="after")
    def _steps(self) -> Self:
        if self.steps != sorted(set(self.steps)):
            raise rule_error("steps", f"must grow strictly ({self.steps})")
        if self.steps[-1] != 100:
            raise rule_error("steps", f"a failback ends at 100 (last step {self.steps[-1]})")
        return self


class DnsConfig(Model):
    """Where a service's records live and how a shift is made and verified."""

    provider: ProviderConfig
    records: list[RecordConfig] = Field(min_length=1)
    epoch_record: str | None = Field(
        None, description="TXT record beside the records holding 'epoch=N site=S'; "
                          "default _failover-epoch.<service>")
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    # -- drift (issue 17 item 5): how often the records are compared with the expected state
    check_interval: Duration = Field(
        15.0, description="every this long (and right after every move) the records are read and compared with "
                          "what the current epoch says they should be; a difference is a dns_drift")
    # -- weighted failback (issue 21): opt-in, providers with weights only
    weighted_failback: WeightedFailbackConfig | None = Field(
        None, description="fail back in weighted steps (cloud_dns, traffic_manager, route53, cloudflare_lb)")

    @field_validator("check_interval")
    @classmethod
    def _check_interval(cls, value: float) -> float:
        if not 1.0 <= value <= 3600.0:
            raise ValueError("must be between 1s and 1h")
        return value

    @field_validator("epoch_record")
    @classmethod
    def _epoch_name(cls, value: str | None) -> str | None:
        if value is not None and not _is_hostname(value):
            raise ValueError(f"'{value}' is not a record name")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _rules(self) -> Self:
        zone = self.provider.zone
        seen: dict[str, int] = {}
        sites = set(self.records[0].targets)
        for index, record in enumerate(self.records):
            if record.name.endswith(".") and not (
                    record.name.rstrip(".") == zone or record.name.rstrip(".").endswith("." + zone)):
                raise rule_error(f"records[{index}].name", f"'{record.name}' is not inside zone {zone}")
            fqdn = self.fqdn(record.name)
            if fqdn in seen:
                raise rule_error(f"records[{index}].name",
                                 f"'{record.name}' is already records[{seen[fqdn]}]; one entry per name")
            seen[fqdn] = index
            if set(record.targets) != sites:
                raise rule_error(f"records[{index}].targets",
                                 f"sites {sorted(record.targets)} differ from records[0]'s {sorted(sites)}")
            if self.provider.type == "cloudflare" and record.ttl != 1 and record.ttl < 30:
                raise rule_error(f"records[{index}].ttl", "Cloudflare accepts 1 (automatic) or 30s and more")
        if self.epoch_record is not None and self.fqdn(self.epoch_record) in seen:
            raise rule_error("epoch_record", "must not be one of the records")
        self._routing_rules(sites)
        if self.weighted_failback is not None and self.provider.type not in WEIGHTED_PROVIDERS:
            raise rule_error("weighted_failback", f"provider type {self.provider.type} has no weights: a weighted "
                                                  f"failback needs one of {', '.join(WEIGHTED_PROVIDERS)}")
        return self

    def _routing_rules(self, sites: set[str]) -> None:
        """Traffic Manager and Cloudflare LB route one name, by endpoint or pool per site."""
        provider = self.provider
        if provider.type not in ROUTING_PROVIDERS:
            return
        if len(self.records) != 1:
            raise rule_error("records", f"{provider.type} routes one name: give exactly one record")
        if isinstance(provider, TrafficManagerConfig) and self.records[0].type != "CNAME":
            raise rule_error("records[0].type", "a Traffic Manager profile answers a CNAME to the endpoint")
        if self.epoch_record is not None:
            where = "profile (a tag)" if provider.type == "traffic_manager" else "load balancer (its description)"
            raise rule_error("epoch_record", f"{provider.type} keeps the epoch on the {where}")
        by_site = provider.endpoints if isinstance(provider, TrafficManagerConfig) else (
            provider.pools if isinstance(provider, CloudflareLbConfig) else {})
        if set(by_site) != sites:
            field = "endpoints" if isinstance(provider, TrafficManagerConfig) else "pools"
            raise rule_error(f"provider.{field}", f"sites {sorted(by_site)} differ from the records' {sorted(sites)}")

    def fqdn(self, name: str) -> str:
        """An absolute, lower-case name with a trailing dot for ``name`` in this zone."""
        zone = self.provider.zone
        if name == "@":
            return zone + "."
        if name.endswith("."):
            return name.lower()
        return f"{name}.{zone}.".lower()

    def epoch_fqdn(self, service: str) -> str:
        return self.fqdn(self.epoch_record or f"_failover-epoch.{service}")

    def sites(self) -> list[str]:
        return sorted(self.records[0].targets)

    def site_problems(self, service_sites: list[str]) -> list[tuple[str, str]]:
        """(field, message) for record targets that name sites the service does not have, or miss one."""
        problems = []
        for index, record in enumerate(self.records):
            unknown = sorted(set(record.targets) - set(service_sites))
            missing = sorted(set(service_sites) - set(record.targets))
            if unknown:
                problems.append((f"records[{index}].targets", f"{unknown} are not sites of the service "
                                                              f"({sorted(service_sites)})"))
            elif missing:
                problems.append((f"records[{index}].targets", f"no values for site(s) {missing}"))
        return problems

"""Which coordination store the engine sits on: ``peer`` (embedded, the default) or ``etcd``.

``peer``: signed verdicts between the voters and a majority (``peers``/``peering``); nothing here
applies. ``etcd``: the epoch, the write lease, the votes and the operator state live in an etcd
cluster reached through ``endpoints`` (see docs/coordination.md for the key layout and how to run it).
Secrets (the etcd password) come from ``${ENV}`` or ``file:/path``; TLS material from files.

Every number is finite and ranged; rules that span fields name the field they judge.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from engine.config.base import Duration, Model, Secret, rule_error

HOLDER_MARGIN = 1.0  # seconds: what the lease holder keeps in hand for clock-rate differences and scheduling


def _readable(path: str) -> str:
    if not Path(path).expanduser().is_file():
        raise ValueError(f"no such file: {path}")
    return path


ReadableFile = Annotated[str, AfterValidator(_readable)]


class EtcdTlsConfig(Model):
    """TLS to the etcd members: the CA that signed their certificates, and ours for client-cert auth."""

    ca_file: ReadableFile | None = Field(None, description="CA of the etcd members' certificates (default: system)")
    cert_file: ReadableFile | None = Field(None, description="client certificate (etcd --client-cert-auth)")
    key_file: ReadableFile | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise rule_error("key_file", "cert_file and key_file go together")
        return self


class EtcdAuthConfig(Model):
    """etcd's own user and password (etcd --auth); the password as ``${ENV}`` or ``file:/path``."""

    user: str = Field(min_length=1, max_length=128)
    password: Secret


class CoordinationConfig(Model):
    """``coordination: {type: peer|etcd, endpoints: [...], prefix, lease_ttl, timeouts, tls, auth}``."""

    type: Literal["peer", "etcd"] = Field("peer", description=(
        "peer: signed verdicts and a majority of the voters (embedded); etcd: an etcd cluster of 3 or more members"))
    endpoints: list[str] = Field(default_factory=list, max_length=16, description=(
        "etcd client URLs, e.g. https://etcd-gcp.example:2379; one per member, each tried in turn"))
    prefix: str = Field("/failover-engine", pattern=r"^/[A-Za-z0-9._/-]{0,200}[A-Za-z0-9._-]$", description=(
        "every key of this engine cluster lives under it (several engine clusters can share one etcd)"))
    lease_ttl: Duration = Field(20.0, ge=2.0, le=300.0, description=(
        "TTL of the write lease: a holder cut off from etcd fences its database before it runs out, and "
        "another site can take the lease only after it"))
    keepalive_interval: Duration | None = Field(None, ge=0.1, le=100.0, description=(
        "how often the holder renews the lease (default: a quarter of lease_ttl)"))
    vote_ttl: Duration = Field(10.0, ge=2.0, le=300.0, description=(
        "a voter's vote vanishes this long after it last published one"))
    request_timeout: Duration = Field(0.5, ge=0.05, le=30.0, description="one attempt at one endpoint")
    deadline: Duration = Field(2.0, ge=0.1, le=60.0, description=(
        "one request with its failover to other endpoints; then it is 'unavailable'"))
    watch_idle: Duration = Field(10.0, ge=1.0, le=600.0, description=(
        "a watch stream silent this long is reopened on another endpoint"))
    tls: EtcdTlsConfig | None = Field(None, description="needs https:// endpoints")
    auth: EtcdAuthConfig | None = Field(None, description="etcd user and password")

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for index, url in enumerate(value):
            scheme, sep, rest = url.partition("://")
            host, colon, port = rest.rstrip("/").rpartition(":")
            if scheme not in ("http", "https") or not sep or not colon or not host or not port.isdigit() \
                    or not 0 < int(port) <= 65535:
                raise ValueError(f"[{index}] '{url}' must be http(s)://host:port, e.g. https://etcd-1.example:2379")
        if len(set(value)) != len(value):
            raise ValueError("an endpoint is listed twice")
        return [url.rstrip("/") for url in value]

    @property
    def keepalive(self) -> float:
        return self.keepalive_interval if self.keepalive_interval is not None else self.lease_ttl / 4

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.type == "peer":
            for name in ("endpoints", "tls", "auth"):
                if getattr(self, name):
                    raise rule_error(name, "only for type: etcd")
            return self
        if not self.endpoints:
            raise rule_error("endpoints", "required when type is etcd (one URL per etcd member)")
        if self.tls is not None:
            for index, url in enumerate(self.endpoints):
                if not url.startswith("https://"):
                    raise rule_error(f"endpoints[{index}]", "tls is set: use https://")
        if self.auth is not None and any(url.startswith("http://") for url in self.endpoints):
            raise rule_error("auth", "the password would cross the network in clear text: use https:// endpoints")
        if self.deadline < self.request_timeout:
            raise rule_error("deadline", f"shorter than request_timeout {self.request_timeout:g}s")
        if self.keepalive >= self.lease_ttl / 2:
            raise rule_error("keepalive_interval", f"{self.keepalive:g}s leaves no second renewal within "
                                                   f"lease_ttl {self.lease_ttl:g}s (at most half of it)")
        if self.lease_ttl != math.ceil(self.lease_ttl):
            raise rule_error("lease_ttl", "etcd counts leases in whole seconds")
        problem = holder_budget_problem(self.lease_ttl, self.keepalive, self.deadline, self.request_timeout, 0.0)
        if problem is not None:
            raise rule_error("lease_ttl", problem)
        return self


def holder_budget_problem(lease_ttl: float, keepalive: float, deadline: float, request_timeout: float,
                          fence_timeout: float) -> str | None:
    """Why a holder would fence a healthy database on one slow renewal, or None.

    The holder fences ``fence_timeout + HOLDER_MARGIN`` before its lease may expire (see
    :func:`engine.core.coordination.judge_holder`); a renewal is due every ``keepalive``, one that
    fails takes up to ``deadline``, and the retry right after it one ``request_timeout`` more. A single
    failed renewal must not reach the fencing point. The daemon (or EngineConfig) calls this per service
    with its database's fencing timeout.
    """
    budget = lease_ttl - fence_timeout - HOLDER_MARGIN
    needed = keepalive + deadline + request_timeout
    if needed >= budget:
        return (f"{lease_ttl:g}s is too short: a renewal every {keepalive:g}s that may fail after {deadline:g}s "
                f"and be retried within {request_timeout:g}s needs {needed:g}s, but fencing ({fence_timeout:g}s) "
                f"and the margin ({HOLDER_MARGIN:g}s) leave {budget:g}s; raise lease_ttl")
    return None


def etcd_lease_wait(coordination: CoordinationConfig, tick: float) -> float:
    """etcd mode: the longest the standby's runbook waits for an unfenced old site's write lease to go
    (its TTL, one request deadline, two ticks for the read that shows it gone)."""
    return round(coordination.lease_ttl + coordination.deadline + 2 * tick, 3)

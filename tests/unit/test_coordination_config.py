"""The ``coordination`` section: peer by default, etcd only with endpoints, every problem with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, parse_config
from engine.config.coordination import holder_budget_problem

BASE = """
instance: {id: gcp-1, site: gcp}
services:
  api:
    active: gcp
    sites:
      gcp: {probes: [{type: tcp, host: 127.0.0.1, port: 9}]}
      azure: {probes: [{type: tcp, host: 127.0.0.1, port: 9}]}
"""


def problems(section: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + section, env=env or {})
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_peer_is_the_default() -> None:
    """Without a coordination section the engine runs the embedded peer quorum."""
    assert parse_config(BASE, env={}).coordination.type == "peer"


def test_an_etcd_section_with_its_defaults() -> None:
    """etcd with three endpoints gets a 20 s lease renewed every 5 s and a 2 s deadline per request."""
    config = parse_config(BASE + """
coordination:
  type: etcd
  endpoints: ["http://10.0.0.1:2379", "http://10.1.0.1:2379/", "http://10.2.0.1:2379"]
""", env={}).coordination
    assert config.endpoints == ["http://10.0.0.1:2379", "http://10.1.0.1:2379", "http://10.2.0.1:2379"]
    assert (config.lease_ttl, config.keepalive, config.deadline, config.prefix) == (20.0, 5.0, 2.0, "/failover-engine")


def test_etcd_without_endpoints_is_refused_with_its_path() -> None:
    """check-config names coordination.endpoints when etcd has none."""
    assert any(p.startswith("coordination") and "endpoints: required when type is etcd" in p
               for p in problems("coordination: {type: etcd}\n"))


@pytest.mark.parametrize(("section", "path", "text"), [
    ("{type: peer, endpoints: ['http://a:2379']}", "coordination", "endpoints: only for type: etcd"),
    ("{type: etcd, endpoints: ['a:2379']}", "coordination.endpoints", "must be http(s)://host:port"),
    ("{type: etcd, endpoints: ['http://a:2379', 'http://a:2379']}", "coordination.endpoints", "listed twice"),
    ("{type: etcd, endpoints: ['http://a:2379'], lease_ttl: .inf}", "coordination.lease_ttl", "finite number"),
    ("{type: etcd, endpoints: ['http://a:2379'], lease_ttl: 1s}", "coordination.lease_ttl", "greater than or equal"),
    ("{type: etcd, endpoints: ['http://a:2379'], lease_ttl: 12.5s}", "coordination", "whole seconds"),
    ("{type: etcd, endpoints: ['http://a:2379'], lease_ttl: 4s}", "coordination", "lease_ttl: 4s is too short"),
    ("{type: etcd, endpoints: ['http://a:2379'], request_timeout: 3s}", "coordination", "deadline: shorter than"),
    ("{type: etcd, endpoints: ['http://a:2379'], keepalive_interval: 15s}", "coordination",
     "keepalive_interval: 15s leaves no second renewal"),
    ("{type: etcd, endpoints: ['http://a:2379'], auth: {user: engine, password: '${ETCD_PASSWORD}'}}",
     "coordination", "auth: the password would cross the network in clear text"),
    ("{type: etcd, endpoints: ['http://a:2379'], tls: {}}", "coordination", "endpoints[0]: tls is set: use https://"),
    ("{type: etcd, endpoints: ['https://a:2379'], tls: {ca_file: /nonexistent/ca.pem}}", "coordination.tls.ca_file",
     "no such file"),
    ("{type: etcd, endpoints: ['https://a:2379'], prefix: 'relative/'}", "coordination.prefix", "pattern"),
    ("{type: zookeeper}", "coordination.type", "'peer' or 'etcd'"),
])
def test_each_bad_coordination_setting_is_named(section: str, path: str, text: str) -> None:
    """Every wrong coordination setting gives one message at its own path."""
    found = problems(f"coordination: {section}\n", env={"ETCD_PASSWORD": "s3cret"})
    assert any(p.startswith(path) and text in p for p in found), found


def test_the_password_comes_from_a_file_and_never_shows(tmp_path: Path) -> None:
    """auth.password as file:/path is read and kept secret (its repr hides it)."""
    secret = tmp_path / "etcd-password"
    secret.write_text("hunter2-but-longer\n")
    config = parse_config(BASE + f"""
coordination:
  type: etcd
  endpoints: ["https://etcd-1.example:2379"]
  auth: {{user: engine, password: "file:{secret}"}}
""", env={}).coordination
    assert config.auth is not None and config.auth.password.get_secret_value() == "hunter2-but-longer"
    assert "hunter2" not in repr(config)


def test_the_holder_budget_counts_the_database_fence() -> None:
    """A 20 s lease leaves room for a 10 s fence with 5 s renewals; a 15 s lease does not."""
    assert holder_budget_problem(20, 5, 2, 0.5, 10) is None
    problem = holder_budget_problem(15, 3.75, 2, 0.5, 10)
    assert problem is not None and problem.startswith("15s is too short")


DATABASE = """
    database:
      sites:
        gcp: {host: 127.0.0.1, dbname: app, user: failover}
        azure: {host: 127.0.0.2, dbname: app, user: failover}
      fencing: {enabled: true, timeout: %s}
coordination: {type: etcd, endpoints: ['http://a:2379'], lease_ttl: 20s}
"""


def test_a_lease_ttl_that_leaves_no_time_to_fence_the_database_is_refused_at_its_path() -> None:
    """check-config refuses an etcd lease_ttl of 20 s for a database whose fence may take 15 s, naming
    coordination.lease_ttl and the service's fencing timeout; a 10 s fence passes."""
    found = problems(DATABASE % "15s")
    assert any(p.startswith("coordination.lease_ttl") and "services.api.database.fencing.timeout" in p
               and "20s is too short" in p for p in found), found
    assert parse_config(BASE + DATABASE % "10s", env={}).coordination.lease_ttl == 20.0

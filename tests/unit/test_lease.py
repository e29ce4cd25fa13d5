"""The self-fencing lease's configuration: its length, when a service has one, and check-config's refusal."""

from __future__ import annotations

import pytest

from engine.config import ConfigError, parse_config
from engine.config.lease import DEFAULT_LENGTH, DRIFT_MARGIN, HOLDER_MARGIN, Lease, problem

KEY = "k" * 24
BASE = f"""
instance: {{id: gcp-1, site: gcp, tick: 1s}}
peers:
  - {{id: azure-1, site: azure, role: engine, url: "http://127.0.0.1:9", key: "{KEY}-azure"}}
  - {{id: witness, site: witness, role: witness, url: "http://127.0.0.1:10", key: "{KEY}-witness"}}
services:
  shop:
    active: gcp
    policy: {{POLICY}}
    sites:
      gcp: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}
      azure: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}
    database:
      sites:
        gcp: {{host: 127.0.0.1, dbname: app, user: failover}}
        azure: {{host: 127.0.0.2, dbname: app, user: failover}}
      fencing: {{enabled: FENCING, timeout: 2s}}
"""


def config(policy: str = "", fencing: str = "true", peers: bool = True) -> str:
    text = BASE.replace("{POLICY}", "{" + policy + "}").replace("FENCING", fencing)
    if not peers:
        text = text.replace(text[text.index("peers:"):text.index("services:")], "")
    return text


def test_the_shipped_lease_adds_up() -> None:
    """6 s at a 1 s tick and a 2 s fence: the holder writes 3.5 s past its newest echo, the majority waits 6.5 s."""
    lease = parse_config(config(), env={}).lease("shop")
    assert lease == Lease(DEFAULT_LENGTH, 2.0, 1.0)
    assert lease.fence_lead == 2.0 + HOLDER_MARGIN == 2.5
    assert lease.hold == 3.5 and lease.wait == 6.0 + DRIFT_MARGIN == 6.5 and lease.slack == 1.5
    assert "waits for 6.5s of certified silence" in lease.explain()


def test_no_lease_without_a_reason_to_fence() -> None:
    """Fencing off, lease null, or fewer than three voters: no lease."""
    assert parse_config(config(fencing="false"), env={}).lease("shop") is None
    assert parse_config(config("lease: null"), env={}).lease("shop") is None
    assert parse_config(config(peers=False), env={}).lease("shop") is None


def test_check_config_refuses_a_lease_without_two_ticks_of_slack() -> None:
    """4.5 s with a 2 s fence at a 1 s tick leaves no slack: refused, one message at policy.lease."""
    with pytest.raises(ConfigError) as info:
        parse_config(config("lease: 4.5s"), env={})
    problems = [str(p) for p in info.value.problems]
    assert len(problems) == 1
    assert "services.shop.policy.lease" in problems[0] and "4.5s is too short" in problems[0]
    assert "= 4.5s" in problems[0]
    longer = parse_config(config("lease: 10s"), env={}).lease("shop")
    assert longer is not None and longer.wait == 10.5


def test_problem_is_none_exactly_above_the_minimum() -> None:
    """The refusal is exactly at fencing timeout + margin + 2 ticks."""
    assert problem(Lease(4.51, 2.0, 1.0)) is None
    assert problem(Lease(4.5, 2.0, 1.0)) is not None

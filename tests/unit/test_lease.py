"""The self-fencing lease: its bound, when a service has one, and check-config's refusal of a short wait."""

from __future__ import annotations

import pytest

from engine.config import ConfigError, parse_config
from engine.config.lease import LEASE_MARGIN, grant_loss_bound, required_wait

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
      fencing: {{enabled: FENCING, timeout: 10s}}
"""


def config(policy: str = "", fencing: str = "true", peers: bool = True) -> str:
    text = BASE.replace("{POLICY}", "{" + policy + "}").replace("FENCING", fencing)
    if not peers:
        text = text.replace(text[text.index("peers:"):text.index("services:")], "")
    return text


def test_the_bound_adds_up() -> None:
    """5 ticks + 2 s skew to lose the grants, then self_fence_after, the fence, and the margin."""
    assert grant_loss_bound(1.0) == 7.0
    assert required_wait(1.0, 15.0, 10.0) == 7.0 + 15.0 + 10.0 + LEASE_MARGIN == 34.0
    lease = parse_config(config(), env={}).lease("shop")  # the default self_fence_after: 2 s
    assert lease is not None and lease.wait == lease.minimum == 7.0 + 2.0 + 10.0 + LEASE_MARGIN == 21.0
    assert "= 21s" in lease.explain()


def test_no_lease_without_a_reason_to_fence() -> None:
    """Fencing off, self_fence_after null, or fewer than three voters: no lease."""
    assert parse_config(config(fencing="false"), env={}).lease("shop") is None
    assert parse_config(config("self_fence_after: null"), env={}).lease("shop") is None
    assert parse_config(config(peers=False), env={}).lease("shop") is None


def test_check_config_refuses_a_lease_shorter_than_the_worst_case() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config("lease_wait: 20s"), env={})
    text = "\n".join(str(p) for p in info.value.problems)
    assert "services.shop.policy.lease_wait" in text and "20s is too short" in text and "= 21s" in text
    longer = parse_config(config("lease_wait: 40s"), env={}).lease("shop")
    assert longer is not None and longer.wait == 40.0


def test_skew_allowance_matches_the_peering() -> None:
    from engine.config.lease import SKEW_ALLOWANCE
    from engine.runtime.peering import SKEW_ALLOWANCE as peering

    assert peering == SKEW_ALLOWANCE

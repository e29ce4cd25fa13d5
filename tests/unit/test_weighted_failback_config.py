"""``dns.weighted_failback`` is opt-in, ranged, ends at 100 % and is refused for providers without weights;
the switchover table bounds its step by the configured steps, hold and checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine.config.dns import DnsConfig
from engine.config.model import ServiceConfig
from engine.core.steps import switchover_plan

RECORDS = [{"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}}]
RFC2136 = {"type": "rfc2136", "zone": "example.com", "servers": ["127.0.0.1"],
           "tsig": {"name": "k", "secret": "c2VjcmV0c2VjcmV0"}}
CF_LB = {"type": "cloudflare_lb", "zone": "example.com", "account_id": "a" * 32, "api_token": "t",
         "pools": {"gcp": "p1", "azure": "p2"}}


def dns(provider: dict[str, Any], weighted: Any) -> dict[str, Any]:
    return {"provider": provider, "records": RECORDS, "weighted_failback": weighted}


def test_a_provider_without_weights_is_refused_naming_its_type() -> None:
    """rfc2136 with weighted_failback is one clear error at dns.weighted_failback."""
    with pytest.raises(ValidationError, match="provider type rfc2136 has no weights"):
        DnsConfig.model_validate(dns(RFC2136, {}))


@pytest.mark.parametrize(("weighted", "words"), [
    ({"steps": [10, 50]}, "ends at 100"),
    ({"steps": [50, 10, 100]}, "grow strictly"),
    ({"steps": [0, 100]}, "greater than or equal to 1"),
    ({"hold": "-1s"}, "hold"),
    ({"checks": 0}, "checks"),
    ({"canary_percent": 80}, "canary_percent"),
])
def test_bad_weighted_failback_settings_are_refused(weighted: dict[str, Any], words: str) -> None:
    """Every out-of-range or disordered setting is refused with its name."""
    with pytest.raises(ValidationError, match=words):
        DnsConfig.model_validate(dns(CF_LB, weighted))


def test_the_step_is_bounded_by_the_configured_steps_and_skipped_without_them() -> None:
    """Three steps held 30s and checked 3 x 10s: the step's worst case covers each; no config: skipped."""
    sites = {"gcp": {"probes": []}, "azure": {"probes": []}}
    with_it = ServiceConfig.model_validate({"active": "gcp", "sites": sites, "dns": dns(CF_LB, {})})
    spec = next(s for s in switchover_plan(with_it) if s.name == "weighted_failback")
    assert spec.skipped is None and spec.worst_s == 3 * (30 + 10 + 60)
    without = ServiceConfig.model_validate({"active": "gcp", "sites": sites,
                                            "dns": {"provider": CF_LB, "records": RECORDS}})
    assert next(s for s in switchover_plan(without) if s.name == "weighted_failback").skipped

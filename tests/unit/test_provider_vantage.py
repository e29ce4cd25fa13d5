"""The provider's own health checks as a vantage: ``counts_as: info`` is shown and compared, never part of a
site's health; ``counts_as: vote`` counts like any probe; status says where provider and engine disagree."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from engine.cli.render import _brake_lines
from engine.core.decide import ServiceState
from engine.core.health import Health, HealthMachine
from engine.core.model import SignalKey
from engine.runtime.service import ServiceRuntime, SignalRuntime


def signal(site: str, name: str, ok: bool, *, provider: str | None = None, counts: bool = True) -> SignalRuntime:
    machine = HealthMachine(1, 1)
    machine.observe(ok, 1.0, "ok" if ok else "HTTP 503")
    return SignalRuntime(SignalKey("shop", site, name), 10.0, machine, counts=counts, provider=provider)


def runtime(gcp: list[SignalRuntime], azure: list[SignalRuntime]) -> ServiceRuntime:
    config: Any = SimpleNamespace(active="gcp")
    rt = ServiceRuntime("shop", config, ServiceState(active="gcp"))
    rt.signals = {"gcp": gcp, "azure": azure}
    return rt


def test_an_info_vantage_that_sees_the_site_down_leaves_the_site_up() -> None:
    """A provider_health signal with counts_as info, DOWN, does not make its site DOWN; home stays up."""
    rt = runtime([signal("gcp", "http", True), signal("gcp", "route53", False, provider="route53", counts=False)],
                 [signal("azure", "http", True)])
    snap = rt.snapshot(10.0)
    assert snap.sites["gcp"].health is Health.UP
    assert snap.sites["gcp"].up == 1 and not snap.sites["gcp"].signals
    assert rt.home_up_for(10.0) is not None


def test_a_voting_vantage_counts_like_any_probe() -> None:
    """A provider_health signal with counts_as vote, DOWN, makes its site DOWN."""
    rt = runtime([signal("gcp", "http", True), signal("gcp", "route53", False, provider="route53")],
                 [signal("azure", "http", True)])
    assert rt.snapshot(10.0).sites["gcp"].health is Health.DOWN
    assert rt.home_up_for(10.0) is None


def test_the_vantage_says_where_provider_and_engine_disagree() -> None:
    """Status's vantage line compares the provider's view with the site's health from the engine's own signals."""
    rt = runtime([signal("gcp", "http", True), signal("gcp", "route53", False, provider="route53", counts=False)],
                 [signal("azure", "http", False), signal("azure", "tm", False, provider="traffic_manager")])
    by_site = {v["site"]: v for v in rt.vantage()}
    assert by_site["gcp"]["disagreement"] == "route53 sees gcp unhealthy while the engine sees it UP"
    assert by_site["gcp"]["counts_as"] == "info" and by_site["gcp"]["engine_health"] == "up"
    assert by_site["azure"]["disagreement"] is None and by_site["azure"]["counts_as"] == "vote"
    shown = rt.signals["gcp"][1].to_dict()
    assert shown["counts_as"] == "info" and shown["provider"] == "route53"


def test_the_cli_status_names_a_disagreement() -> None:
    """`failover-engine status` prints one line per disagreement between provider and engine."""
    lines = _brake_lines({"provider_vantage": [
        {"site": "gcp", "counts_as": "info", "disagreement": "route53 sees gcp unhealthy while the engine sees it UP"},
        {"site": "azure", "counts_as": "vote", "disagreement": None}]})
    assert lines == ["PROVIDER DISAGREES (info): route53 sees gcp unhealthy while the engine sees it UP"]

"""Cloud DNS provider through google-cloud-dns against a local v1 JSON server: one change with exact
deletions as the compare-and-set, the change polled until done, a service-account token from a local
token endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actions.dns.cloud_dns import CloudDnsProvider
from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsUnavailable
from actions.dns.provider import build_provider
from engine.config.dns import DnsConfig
from tests.support.cloud_dns_fake import CloudDnsFake, Fault
from tests.support.cloud_dns_fake import wrr as fake_wrr
from tests.support.dns_steps import shift_step
from tests.support.gcp_fake import TokenFake, running_token_fake, service_account_file

ZONE, MANAGED = "example.com", "shop-zone"
APP, WWW, EPOCH = "app.example.com.", "www.example.com.", "_failover-epoch.app.example.com."


async def no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
async def tokens() -> AsyncIterator[TokenFake]:
    async with running_token_fake() as fake:
        yield fake


@pytest.fixture
async def fake() -> AsyncIterator[CloudDnsFake]:
    """A zone with two gcp records, the epoch record at 1 and an unrelated record."""
    server = CloudDnsFake()
    server.add_zone(MANAGED, ZONE + ".")
    server.put(MANAGED, APP, "A", ["192.0.2.10"])
    server.put(MANAGED, WWW, "CNAME", ["gcp.example.net."], ttl=300)
    server.put(MANAGED, EPOCH, "TXT", ['"epoch=1 site=gcp op=seed"'])
    server.put(MANAGED, "other.example.com.", "A", ["203.0.113.1"])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def dns_section(fake: CloudDnsFake, key: Path, **provider: Any) -> dict[str, Any]:
    return {
        "provider": {"type": "cloud_dns", "project": fake.project, "managed_zone": MANAGED, "zone": ZONE,
                     "api_endpoint": fake.base_url, "timeout": "2s", "attempts": 1, "poll_interval": "10ms",
                     "credentials": {"type": "service_account_file", "path": str(key)}, **provider},
        "records": [
            {"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}},
            {"name": "www", "type": "CNAME", "ttl": "5m",
             "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}},
        ],
        "epoch_record": "_failover-epoch.app",
    }


@pytest.fixture
async def make(fake: CloudDnsFake, tokens: TokenFake, tmp_path: Path) -> AsyncIterator[Any]:
    """Builds providers (closed at teardown) from the zone's config with overrides."""
    key = service_account_file(tmp_path, tokens.base_url, fake.project)
    made: list[CloudDnsProvider] = []

    def build(**provider: Any) -> CloudDnsProvider:
        made.append(CloudDnsProvider(DnsConfig.model_validate(dns_section(fake, key, **provider)), "app",
                                     sleep=no_sleep))
        return made[-1]

    build.section = lambda: dns_section(fake, key)  # type: ignore[attr-defined]
    yield build
    for provider in made:
        await provider.aclose()


async def test_read_filters_by_name_and_sends_the_token(fake: CloudDnsFake, make: Any) -> None:
    """A read lists each name with the name filter and carries the service account's bearer token."""
    state = await make().read()
    assert [(r.name, r.rtype, r.values, r.ttl) for r in state.records] == [
        (APP, "A", ("192.0.2.10",), 60), (WWW, "CNAME", ("gcp.example.net.",), 300)]
    assert (state.epoch.number, state.epoch.site, state.site) == (1, "gcp", "gcp")
    assert {q["name"] for _m, _p, q in fake.requests("GET", "/rrsets")} == {APP, WWW, EPOCH}
    assert fake.auth and all(a.startswith("Bearer sa-token-") for a in fake.auth)


async def test_shift_is_one_change_with_exact_deletions_polled_until_done(fake: CloudDnsFake, make: Any) -> None:
    """A shift posts one change (exact old sets deleted, new sets and epoch 2 added) and polls it to done."""
    provider = make()
    after = await provider.shift(await provider.read(), "azure", 2)
    assert len(fake.requests("POST", "/changes")) == 1
    (change,) = fake.changes.values()
    assert change["status"] == "done" and len(fake.requests("GET", "/changes/")) == fake.pending_polls
    assert {(d["name"], tuple(d["rrdatas"])) for d in change["deletions"]} == {
        (APP, ("192.0.2.10",)), (WWW, ("gcp.example.net.",)), (EPOCH, ('"epoch=1 site=gcp op=seed"',))}
    assert fake.get(MANAGED, APP, "A")["rrdatas"] == ["198.51.100.10"]  # type: ignore[index]
    assert fake.get(MANAGED, EPOCH, "TXT")["rrdatas"] == [f'"epoch=2 site=azure op={after.epoch.op}"']  # type: ignore[index]
    assert after.site == "azure" and await provider.read() == after
    assert (await provider.shift(after, "gcp", 3)).site == "gcp"


async def test_foreign_change_after_the_read_fails_the_change_whole(fake: CloudDnsFake, make: Any) -> None:
    """A record edited by hand between read and change: 412 conditionNotMet, DnsConflict, nothing changed."""
    provider = make()
    state = await provider.read()
    fake.before_change.append(lambda: fake.put(MANAGED, WWW, "CNAME", ["elsewhere.example.net."], ttl=300))
    with pytest.raises(DnsConflict) as info:
        await provider.shift(state, "azure", 2)
    assert info.value.site == "mixed" and info.value.epoch == 1
    assert fake.get(MANAGED, APP, "A")["rrdatas"] == ["192.0.2.10"]  # type: ignore[index]
    assert fake.changes == {}


async def test_the_runbook_step_stands_down_on_a_concurrent_change(fake: CloudDnsFake, make: Any) -> None:
    """The failover runbook's shift step loses to a rival executor's change and stands down cleanly."""
    rival = make()

    async def rival_moves() -> None:
        await rival.shift(await rival.read(), "azure", 2, op="rival")

    fired: list[bool] = []
    fake.before_change.append(lambda: fired.append(True))
    provider = make()
    state = await provider.read()
    await rival_moves()
    fake.before_change.clear()
    before = fake.snapshot(MANAGED)
    outcome = await shift_step(provider, make.section(), service="app", source="gcp", target="azure",
                               epoch_from=state.epoch.number)
    assert outcome.stand_down and "epoch moved to 2" in outcome.summary
    assert fake.snapshot(MANAGED) == before


async def test_the_runbook_step_stands_down_when_the_change_is_refused(fake: CloudDnsFake, make: Any) -> None:
    """A rival's change lands between the step's read and its change: 412, the step stands down, no partial change."""
    provider = make()
    fake.before_change.append(lambda: (fake.before_change.clear(), fake.put(
        MANAGED, EPOCH, "TXT", ['"epoch=2 site=azure op=rival"']), fake.put(MANAGED, APP, "A", ["198.51.100.10"])))
    outcome = await shift_step(provider, make.section(), service="app", source="gcp", target="azure",
                               epoch_from=1)
    assert outcome.stand_down and "lost the race" in outcome.summary
    assert fake.get(MANAGED, WWW, "CNAME")["rrdatas"] == ["gcp.example.net."]  # type: ignore[index]
    assert fake.changes == {}


async def test_first_epoch_record_created_by_a_rival_is_a_conflict(fake: CloudDnsFake, make: Any) -> None:
    """Without an epoch record the change only adds it; a rival's creation first makes it 409: DnsConflict."""
    del fake.rrsets[MANAGED][(EPOCH, "TXT")]
    provider = make()
    state = await provider.read()
    assert state.epoch.number == 0
    fake.before_change.append(lambda: fake.put(MANAGED, EPOCH, "TXT", ['"epoch=1 site=gcp op=rival"']))
    with pytest.raises(DnsConflict):
        await provider.shift(state, "azure", 1)
    assert fake.get(MANAGED, APP, "A")["rrdatas"] == ["192.0.2.10"]  # type: ignore[index]


async def test_a_change_that_never_completes_is_unavailable(fake: CloudDnsFake, make: Any) -> None:
    """A change still pending after change_timeout: DnsUnavailable naming the change."""
    fake.pending_polls = 10_000
    provider = make(change_timeout="50ms")
    with pytest.raises(DnsUnavailable, match="still pending"):
        await provider.shift(await provider.read(), "azure", 2)


async def test_errors_map_onto_the_dns_tree(fake: CloudDnsFake, make: Any) -> None:
    """403 is an auth error, an unknown managed zone a config error, 503 unavailable after the tries."""
    with pytest.raises(DnsAuthError):
        await make(project="someone-else").read()
    with pytest.raises(DnsConfigError, match="unknown managed zone"):
        await make(managed_zone="nope").read()
    fake.faults.append(Fault(503, times=50))
    with pytest.raises(DnsUnavailable, match="after 2 tries"):
        await make(attempts=2).read()


async def test_retime_and_validate(fake: CloudDnsFake, make: Any) -> None:
    """A TTL change keeps values and epoch; validation reads the zone and changes nothing."""
    provider = make()
    state = await provider.read()
    assert "nothing changed" in await provider.validate(state, "azure", 2)
    after = await provider.retime(state, {APP: 30, WWW: 30})
    assert [r.ttl for r in after.records] == [30, 30] and after.epoch == state.epoch
    with pytest.raises(DnsConflict):
        await provider.validate(state, "azure", 2)


async def test_build_provider_picks_cloud_dns(fake: CloudDnsFake, make: Any) -> None:
    """A cloud_dns provider config builds a CloudDnsProvider."""
    provider = build_provider(DnsConfig.model_validate(make.section()), "app")
    try:
        assert isinstance(provider, CloudDnsProvider) and (await provider.read()).site == "gcp"
    finally:
        await provider.aclose()


def wrr(azure: float, gcp: float, values: tuple[str, str] = ("198.51.100.10", "192.0.2.10")) -> dict[str, Any]:
    """A weighted round robin policy: azure's and gcp's values with these weights."""
    return fake_wrr({"azure": (azure, [values[0]]), "gcp": (gcp, [values[1]])})


async def test_weighted_round_robin_moves_in_one_conditional_change(fake: CloudDnsFake, make: Any) -> None:
    """WRR record sets are read as shares (and by read() as the site they answer) and rewritten by one change
    (exact deletion + addition); a concurrent change of the policy makes it 412: DnsConflict, the rival's weights
    stay; a geo policy is refused by name."""
    fake.put(MANAGED, APP, "A", [], routing_policy=wrr(100.0, 0.0))
    fake.put(MANAGED, WWW, "CNAME", [], ttl=300, routing_policy=wrr(100, 0, ("azure.example.net.", "gcp.example.net.")))
    provider = make()
    state = await provider.read()
    assert state.site == "azure" and [r.values for r in state.records] == [("198.51.100.10",), ("azure.example.net.",)]
    before = await provider.read_weights()
    assert before.as_dict() == {"gcp": 0, "azure": 100} and before.epoch == 1
    after = await provider.set_weights(before, {"gcp": 10, "azure": 90})
    assert after.as_dict() == {"gcp": 10, "azure": 90}
    assert fake.get(MANAGED, WWW, "CNAME")["ttl"] == 300  # the TTL as read, not the config's
    fake.before_change.append(lambda: (fake.before_change.clear(),
                                       fake.put(MANAGED, APP, "A", [], routing_policy=wrr(30.0, 70.0))))
    with pytest.raises(DnsConflict):
        await provider.set_weights(after, {"gcp": 50, "azure": 50})
    with pytest.raises(DnsConfigError, match="disagree"):  # app was edited alone: the records disagree
        await provider.read_weights()
    assert fake.get(MANAGED, WWW, "CNAME")["routingPolicy"]["wrr"]["items"][1]["weight"] == 10.0
    fake.put(MANAGED, APP, "A", [], routing_policy={"geo": {"items": [{"location": "us-east1",
                                                                       "rrdatas": ["192.0.2.10"]}]}})
    with pytest.raises(DnsConfigError, match="geo policy"):
        await provider.read()

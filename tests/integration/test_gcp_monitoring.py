"""The GCP Cloud Monitoring probe against a local ListTimeSeries gRPC server, through the real SDK."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import google.oauth2.credentials
import grpc
import pytest

from engine.config.cloud import GcpMonitoringProbeConfig
from engine.core.clock import ManualClock
from probes.gcp_monitoring import GcpMonitoringProbe
from tests.support.gcp_fake import (
    Fail,
    GcpMonitoringFake,
    Series,
    Slow,
    TokenFake,
    running_gcp_fake,
    running_token_fake,
)

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

FILTER = ('metric.type = "cloudsql.googleapis.com/database/replication/replica_lag" '
          'AND resource.labels.database_id = "p1:db-replica"')


@pytest.fixture
async def fake() -> AsyncIterator[GcpMonitoringFake]:
    async with running_gcp_fake() as server:
        yield server


@pytest.fixture
async def tokens() -> AsyncIterator[TokenFake]:
    async with running_token_fake() as server:
        yield server


def config(address: str, **overrides: Any) -> GcpMonitoringProbeConfig:
    data: dict[str, Any] = {
        "type": "gcp_monitoring", "name": "replica-lag", "label": "cloudsql replica lag",
        "project": "p1", "filter": FILTER, "condition": {"op": "<=", "threshold": 30},
        "window": "5m", "timeout": "2s", "interval": "10s",
        "retry": {"attempts": 3, "backoff": "100ms", "max_backoff": "1s"},
        "endpoint": address, "insecure_endpoint_for_tests": True,
    }
    data.update(overrides)
    return GcpMonitoringProbeConfig.model_validate(data)


class Pauses:
    """A sleep that records the pauses asked for instead of waiting."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.fixture
def token() -> Any:
    return google.oauth2.credentials.Credentials(token="test-token")  # type: ignore[no-untyped-call]


async def observe(cfg: GcpMonitoringProbeConfig, **kwargs: Any) -> Any:
    probe = GcpMonitoringProbe(cfg, **kwargs)
    try:
        return await probe.observe()
    finally:
        await probe.aclose()


async def test_healthy_value_passes_and_the_request_carries_filter_window_and_token(
        fake: GcpMonitoringFake, token: Any) -> None:
    """A fresh point meeting the condition passes; the server saw filter, window and bearer token."""
    fake.reply([Series([(30, 12.0), (90, 50.0)], labels={"database_id": "p1:db-replica"})])
    clock = ManualClock(1_800_000_000.0)
    obs = await observe(config(fake.address), clock=clock, credentials=token)
    assert obs.ok, obs.reason
    assert obs.reason == "cloudsql replica lag 12.0 <= 30"
    assert obs.value == 12.0
    assert obs.at == 1_800_000_000.0
    (call,) = fake.calls
    assert call.name == "projects/p1"
    assert call.filter == FILTER
    assert call.end == 1_800_000_000.0
    assert call.end - call.start == 300.0
    assert call.metadata["authorization"] == "Bearer test-token"
    assert call.metadata["x-goog-request-params"] == "name=projects/p1"


async def test_unhealthy_value_fails_with_the_comparison_that_broke(
        fake: GcpMonitoringFake, token: Any) -> None:
    """A fresh point breaking the condition fails with a reason like ``lag 42.0 > 30``."""
    fake.reply([Series([(10, 42.0)])])
    obs = await observe(config(fake.address), credentials=token)
    assert not obs.ok
    assert obs.reason == "cloudsql replica lag 42.0 > 30"
    assert obs.value == 42.0


async def test_integer_and_boolean_points_are_read_as_numbers(fake: GcpMonitoringFake, token: Any) -> None:
    """An int64 point and a bool point (uptime check passed) are judged as numbers."""
    fake.reply([Series([(5, 7)])], [Series([(5, True)])])
    cfg = config(fake.address, condition={"op": ">=", "threshold": 1}, label="check passed")
    assert (await observe(cfg, credentials=token)).reason == "check passed 7.0 >= 1"
    assert (await observe(cfg, credentials=token)).reason == "check passed 1.0 >= 1"


async def test_stale_point_fails_with_its_age(fake: GcpMonitoringFake, token: Any) -> None:
    """A newest point older than the staleness window fails as stale, even if its value is fine."""
    fake.reply([Series([(200, 1.0)])])
    obs = await observe(config(fake.address, staleness="2m"), credentials=token)
    assert not obs.ok
    assert obs.reason == "no data for 200s (stale)"


async def test_no_series_is_stale_for_the_whole_window(fake: GcpMonitoringFake, token: Any) -> None:
    """A filter matching no data in the window fails as ``no data for 300s (stale)``."""
    obs = await observe(config(fake.address), credentials=token)
    assert not obs.ok
    assert obs.reason == "no data for 300s (stale)"


async def test_one_failing_series_among_several_fails_and_names_it(
        fake: GcpMonitoringFake, token: Any) -> None:
    """With several series every one must pass; the reason names the failing series and counts them."""
    fake.reply([Series([(10, 3.0)], labels={"database_id": "p1:db-1"}),
                Series([(10, 45.5)], labels={"database_id": "p1:db-2"})])
    obs = await observe(config(fake.address), credentials=token)
    assert not obs.ok
    assert obs.reason == "cloudsql replica lag 45.5 > 30 (1 of 2 series, database_id=p1:db-2)"
    assert obs.details["series"] == 2


async def test_aggregation_is_sent_as_configured(fake: GcpMonitoringFake, token: Any) -> None:
    """Aligner, alignment period, reducer and group-by fields reach the server."""
    fake.reply([Series([(60, 5.0)])])
    cfg = config(fake.address, aligner="ALIGN_MAX", alignment_period="60s", reducer="REDUCE_MAX",
                 group_by=["resource.labels.database_id"])
    assert (await observe(cfg, credentials=token)).ok
    agg = fake.calls[0].aggregation
    assert agg.alignment_period.total_seconds() == 60
    assert agg.per_series_aligner.name == "ALIGN_MAX"
    assert agg.cross_series_reducer.name == "REDUCE_MAX"
    assert list(agg.group_by_fields) == ["resource.labels.database_id"]


async def test_more_series_than_the_cap_fails_instead_of_judging_part(
        fake: GcpMonitoringFake, token: Any) -> None:
    """501 healthy series: the probe does not judge the first 500 and call it healthy, it fails."""
    from probes.gcp_monitoring import MAX_SERIES

    fake.reply([Series([(10, 1.0)], labels={"database_id": f"p1:db-{i}"}) for i in range(MAX_SERIES + 1)])
    obs = await observe(config(fake.address), credentials=token)
    assert not obs.ok
    assert obs.reason == f"more than {MAX_SERIES} series; narrow the filter or group_by"
    assert len(fake.calls) == 1  # not retried: the answer will not shrink by asking again


async def test_exactly_the_cap_of_series_is_judged(fake: GcpMonitoringFake, token: Any) -> None:
    """500 series are all read and judged."""
    from probes.gcp_monitoring import MAX_SERIES

    fake.reply([Series([(10, 1.0)], labels={"database_id": f"p1:db-{i}"}) for i in range(MAX_SERIES)])
    obs = await observe(config(fake.address), credentials=token)
    assert obs.ok, obs.reason
    assert obs.details["series"] == MAX_SERIES


async def test_permission_denied_fails_at_once_without_retry(fake: GcpMonitoringFake, token: Any) -> None:
    """PERMISSION_DENIED is not retried and the reason says so with the server's message."""
    fake.default = Fail(grpc.StatusCode.PERMISSION_DENIED, "caller lacks monitoring.timeSeries.list")
    obs = await observe(config(fake.address), credentials=token)
    assert not obs.ok
    assert obs.reason == "permission denied (PermissionDenied: caller lacks monitoring.timeSeries.list)"
    assert len(fake.calls) == 1


async def test_unavailable_is_retried_a_bounded_number_of_times(fake: GcpMonitoringFake, token: Any) -> None:
    """UNAVAILABLE on every attempt gives ``unavailable after 3 attempts`` with doubling pauses."""
    fake.default = Fail(grpc.StatusCode.UNAVAILABLE, "backend down")
    pauses = Pauses()
    obs = await observe(config(fake.address), credentials=token, sleep=pauses)
    assert not obs.ok
    assert obs.reason == "unavailable after 3 attempts"
    assert len(fake.calls) == 3
    assert pauses.pauses == [0.1, 0.2]


async def test_unavailable_then_healthy_recovers_within_one_check(
        fake: GcpMonitoringFake, token: Any) -> None:
    """One UNAVAILABLE followed by a good answer is a success in the same check."""
    fake.reply(Fail(grpc.StatusCode.UNAVAILABLE), [Series([(10, 1.0)])])
    obs = await observe(config(fake.address), credentials=token, sleep=Pauses())
    assert obs.ok, obs.reason
    assert len(fake.calls) == 2


async def test_slow_answer_hits_the_probe_timeout(fake: GcpMonitoringFake, token: Any) -> None:
    """An answer slower than the probe timeout fails as a timeout instead of hanging."""
    fake.reply(Slow(5.0, [Series([(10, 1.0)])]))
    obs = await observe(config(fake.address, timeout="300ms"), credentials=token)
    assert not obs.ok
    assert obs.reason == "timeout after 0.3s"
    assert obs.latency_s < 2.0


async def test_server_down_gives_unavailable_not_a_90s_retry(token: Any) -> None:
    """A closed port fails quickly as unavailable: the client's default long retry is never used."""
    from tests.support import free_port

    cfg = config(f"127.0.0.1:{free_port()}", retry={"attempts": 2, "backoff": "10ms"})
    obs = await observe(cfg, credentials=token, sleep=Pauses())
    assert not obs.ok
    assert obs.reason == "unavailable after 2 attempts"
    assert obs.latency_s < 2.0


async def test_service_account_file_fetches_a_token_and_sends_it(
        fake: GcpMonitoringFake, tokens: TokenFake, tmp_path: Path) -> None:
    """A service-account key file signs a JWT for the token endpoint and the token reaches the server."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": "p1", "private_key_id": "k1", "private_key": pem,
        "client_email": "probe@p1.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": f"{tokens.base_url}/token"}))
    fake.reply([Series([(10, 2.0)])])
    cfg = config(fake.address, credentials={"type": "service_account_file", "path": str(key_file)})
    obs = await observe(cfg)
    assert obs.ok, obs.reason
    assert fake.calls[0].metadata["authorization"] == "Bearer sa-token-1"
    (grant,) = tokens.requests
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"


async def test_service_account_token_refusal_is_reported_without_key_or_assertion(
        fake: GcpMonitoringFake, tokens: TokenFake, tmp_path: Path) -> None:
    """A token endpoint refusing the key's signed JWT fails as credentials failed; neither the key nor
    the assertion it signed shows in the observation, and nothing reaches the Monitoring API."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": "p1", "private_key_id": "k1", "private_key": pem,
        "client_email": "probe@p1.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": f"{tokens.base_url}/token"}))
    tokens.refuse = True
    cfg = config(fake.address, credentials={"type": "service_account_file", "path": str(key_file)})
    obs = await observe(cfg, sleep=Pauses())
    assert not obs.ok
    assert obs.reason == "credentials failed (invalid_grant: the subject token was rejected)"
    (grant,) = tokens.requests
    key_body = pem.splitlines()[1]  # a line of the key itself, not the BEGIN marker
    for secret in (key_body, grant["assertion"]):
        assert secret not in repr(obs)
    assert fake.calls == []


async def test_workload_identity_federation_exchanges_the_azure_token(
        fake: GcpMonitoringFake, tokens: TokenFake, tmp_path: Path) -> None:
    """An external_account exchanges the Azure-issued token file at STS and sends the federated token."""
    azure_token = tmp_path / "azure-identity-token"
    azure_token.write_text("eyJhbGciOi.azure-issued.jwt")
    audience = ("//iam.googleapis.com/projects/123/locations/global/"
                "workloadIdentityPools/azure/providers/entra")
    fake.reply([Series([(10, 2.0)])])
    cfg = config(fake.address, credentials={
        "type": "external_account", "audience": audience, "token_file": str(azure_token),
        "token_url": f"{tokens.base_url}/v1/token"})
    obs = await observe(cfg)
    assert obs.ok, obs.reason
    assert fake.calls[0].metadata["authorization"] == "Bearer sts-token-1"
    (exchange,) = tokens.requests
    assert exchange["path"] == "/v1/token"
    assert exchange["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert exchange["subject_token"] == "eyJhbGciOi.azure-issued.jwt"
    assert exchange["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert exchange["audience"] == audience


async def test_injected_client_is_used_and_left_open(fake: GcpMonitoringFake, token: Any) -> None:
    """A client passed in is used as is and not closed by the probe (its owner closes it)."""
    from google.cloud import monitoring_v3

    from probes.gcp_monitoring import build_transport

    transport = build_transport(config(fake.address), token)
    client = monitoring_v3.MetricServiceAsyncClient(transport=transport)
    fake.reply([Series([(10, 2.0)])], [Series([(10, 3.0)])])
    probe = GcpMonitoringProbe(config(fake.address), client=client)
    assert (await probe.observe()).value == 2.0
    await probe.aclose()
    assert (await GcpMonitoringProbe(config(fake.address), client=client).observe()).value == 3.0
    await transport.close()


async def test_failed_token_refresh_is_a_credentials_failure_not_unavailable(
        fake: GcpMonitoringFake, tmp_path: Path) -> None:
    """A federation token file that is missing fails at once as a credentials failure, never sent."""
    missing = tmp_path / "no-token-here"
    cfg = config(fake.address, credentials={
        "type": "external_account", "audience": "//iam.googleapis.com/x", "token_file": str(missing),
        "token_url": "http://127.0.0.1:9/v1/token"})
    obs = await observe(cfg, sleep=Pauses())
    assert not obs.ok
    assert obs.reason == f"credentials failed (File '{missing}' was not found.)"
    assert fake.calls == []


async def test_token_endpoint_refusal_is_reported_without_the_subject_token(
        fake: GcpMonitoringFake, tokens: TokenFake, tmp_path: Path) -> None:
    """STS answering 400 invalid_grant fails as credentials failed; the Azure token stays out of it."""
    azure_token = tmp_path / "azure-identity-token"
    azure_token.write_text("subject-token-must-not-leak")
    tokens.refuse = True
    cfg = config(fake.address, credentials={
        "type": "external_account", "audience": "//iam.googleapis.com/x", "token_file": str(azure_token),
        "token_url": f"{tokens.base_url}/v1/token"})
    obs = await observe(cfg, sleep=Pauses())
    assert not obs.ok
    assert obs.reason == "credentials failed (Error code invalid_grant: the subject token was rejected)"
    assert "subject-token-must-not-leak" not in repr(obs)
    assert fake.calls == []


async def test_probe_from_a_config_file_through_the_registry(
        fake: GcpMonitoringFake, tokens: TokenFake, tmp_path: Path) -> None:
    """A YAML config parsed as in production builds, through the registry, a probe that checks the metric."""
    from engine.config import parse_config
    from probes.registry import build_probe

    azure_token = tmp_path / "azure-identity-token"
    azure_token.write_text("azure-jwt")
    text = f"""
instance: {{id: gcp-1, site: gcp}}
services:
  api:
    active: gcp
    sites:
      gcp:
        probes:
          - type: gcp_monitoring
            name: replica-lag
            label: cloudsql replica lag
            project: p1
            filter: '{FILTER}'
            aligner: ALIGN_MAX
            alignment_period: 1m
            condition: {{op: "<=", threshold: 30}}
            timeout: 2s
            credentials:
              type: external_account
              audience: //iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/a/providers/b
              token_file: {azure_token}
              token_url: ${{STS_URL}}
            endpoint: {fake.address}
            insecure_endpoint_for_tests: true
      azure:
        probes:
          - {{type: tcp, host: 127.0.0.1, port: 9}}
"""
    probe_config = parse_config(text, env={"STS_URL": f"{tokens.base_url}/v1/token"}) \
        .services["api"].sites["gcp"].probes[0]
    fake.reply([Series([(60, 31.0)])])
    probe = build_probe(probe_config, clock=ManualClock())
    try:
        obs = await probe.observe()
    finally:
        await probe.aclose()
    assert obs.reason == "cloudsql replica lag 31.0 > 30"
    assert fake.calls[0].metadata["authorization"] == "Bearer sts-token-1"
    assert tokens.requests[0]["subject_token"] == "azure-jwt"

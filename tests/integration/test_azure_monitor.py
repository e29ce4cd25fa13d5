"""The Azure Monitor metrics and logs probes against a local REST server, through the real SDKs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.config.cloud import AzureLogsProbeConfig, AzureMetricsProbeConfig
from engine.core.clock import ManualClock
from probes.azure_monitor import AzureLogsProbe, AzureMetricsProbe
from tests.support.azure_fake import (
    Ago,
    AzureMonitorFake,
    FakeCredential,
    HttpFail,
    MetricSeries,
    Slow,
    Table,
    running_azure_fake,
)

SUB = "0000aaaa-1111-2222-3333-444455556666"
DB1 = f"/subscriptions/{SUB}/resourceGroups/rg-db/providers/Microsoft.Sql/servers/sql-a/databases/orders"
DB2 = f"/subscriptions/{SUB}/resourceGroups/rg-db/providers/Microsoft.Sql/servers/sql-a/databases/billing"


@pytest.fixture
async def fake() -> AsyncIterator[AzureMonitorFake]:
    async with running_azure_fake() as server:
        yield server


class Pauses:
    """A sleep that records the pauses asked for instead of waiting."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def metrics_config(base_url: str, **overrides: Any) -> AzureMetricsProbeConfig:
    data: dict[str, Any] = {
        "type": "azure_metrics", "name": "sql-cpu", "label": "sql cpu",
        "resource_ids": [DB1], "namespace": "Microsoft.Sql/servers/databases", "metric": "cpu_percent",
        "aggregation": "average", "granularity": "1m", "window": "10m", "staleness": "5m",
        "condition": {"op": "<", "threshold": 90}, "timeout": "2s",
        "retry": {"attempts": 3, "backoff": "100ms"},
        "endpoint": base_url, "insecure_endpoint_for_tests": True,
    }
    data.update(overrides)
    return AzureMetricsProbeConfig.model_validate(data)


def logs_config(base_url: str, **overrides: Any) -> AzureLogsProbeConfig:
    data: dict[str, Any] = {
        "type": "azure_logs", "name": "heartbeat-lag", "label": "heartbeat lag",
        "workspace_id": "ws-1",
        "query": "Heartbeat | summarize lag = max(LagSeconds), at = max(TimeGenerated)",
        "column": "lag", "condition": {"op": "<=", "threshold": 60}, "window": "15m", "timeout": "2s",
        "retry": {"attempts": 2, "backoff": "50ms"},
        "endpoint": base_url, "insecure_endpoint_for_tests": True,
    }
    data.update(overrides)
    return AzureLogsProbeConfig.model_validate(data)


async def observe(probe: Any) -> Any:
    try:
        return await probe.observe()
    finally:
        await probe.aclose()


async def test_metrics_healthy_value_and_the_request_the_server_saw(fake: AzureMonitorFake) -> None:
    """A fresh average under the threshold passes; the server saw the batch call, resource ids and token."""
    fake.metrics.reply([MetricSeries(DB1, [(180, 40.0), (120, 12.5), (60, None)])])
    credential = FakeCredential()
    clock = ManualClock(1_800_000_000.0)
    obs = await observe(AzureMetricsProbe(metrics_config(fake.base_url), clock=clock, credential=credential))
    assert obs.ok, obs.reason
    assert obs.reason == "sql cpu 12.5 < 90"
    assert obs.value == 12.5
    (call,) = fake.calls
    assert call.path == f"/subscriptions/{SUB}/metrics:getBatch"
    assert call.body == {"resourceids": [DB1]}
    assert call.headers["Authorization"] == "Bearer fake-token"
    assert call.query["metricnamespace"] == "Microsoft.Sql/servers/databases"
    assert call.query["metricnames"] == "cpu_percent"
    assert call.query["aggregation"] == "average"
    assert call.query["interval"] == "PT1M"
    assert call.query["endtime"].startswith("2027-01-15T08:00:00")
    assert credential.scopes == [("https://metrics.monitor.azure.com/.default",)]
    assert not credential.closed  # an injected credential belongs to the caller


async def test_metrics_filter_reaches_the_request(fake: AzureMonitorFake) -> None:
    """The configured dimension filter is sent as the ``filter`` query parameter; without one none is sent."""
    fake.metrics.reply([MetricSeries(DB1, [(60, 5.0)], dimensions={"Role": "primary"})],
                       [MetricSeries(DB1, [(60, 5.0)])])
    cfg = metrics_config(fake.base_url, filter="Role eq 'primary'")
    assert (await observe(AzureMetricsProbe(cfg, credential=FakeCredential()))).ok
    assert (await observe(AzureMetricsProbe(metrics_config(fake.base_url), credential=FakeCredential()))).ok
    with_filter, without = fake.calls
    assert with_filter.query["filter"] == "Role eq 'primary'"
    assert "filter" not in without.query


async def test_metrics_unhealthy_value_fails_with_the_comparison(fake: AzureMonitorFake) -> None:
    """A fresh value breaking the condition fails with ``sql cpu 97.0 >= 90``."""
    fake.metrics.reply([MetricSeries(DB1, [(60, 97.0)])])
    obs = await observe(AzureMetricsProbe(metrics_config(fake.base_url), credential=FakeCredential()))
    assert not obs.ok
    assert obs.reason == "sql cpu 97.0 >= 90"
    assert obs.value == 97.0


async def test_metrics_maximum_aggregation_reads_that_field(fake: AzureMonitorFake) -> None:
    """The configured aggregation is requested and read from the points."""
    fake.metrics.reply([MetricSeries(DB1, [(60, 55.0)])])
    cfg = metrics_config(fake.base_url, aggregation="maximum")
    obs = await observe(AzureMetricsProbe(cfg, credential=FakeCredential()))
    assert obs.reason == "sql cpu 55.0 < 90"
    assert fake.calls[0].query["aggregation"] == "maximum"


async def test_metrics_only_old_points_are_stale(fake: AzureMonitorFake) -> None:
    """Points exist but the newest grain ended longer ago than the staleness window: stale."""
    fake.metrics.reply([MetricSeries(DB1, [(480, 10.0), (420, 11.0), (60, None)])])
    probe = AzureMetricsProbe(metrics_config(fake.base_url), clock=ManualClock(), credential=FakeCredential())
    obs = await observe(probe)
    assert not obs.ok
    assert obs.reason == "no data for 360s (stale)"


async def test_metrics_resource_without_data_fails_and_is_named(fake: AzureMonitorFake) -> None:
    """Of two resources, the one with no points in the window fails the check as stale and is named."""
    fake.metrics.reply([MetricSeries(DB1, [(60, 10.0)])])
    cfg = metrics_config(fake.base_url, resource_ids=[DB1, DB2])
    obs = await observe(AzureMetricsProbe(cfg, credential=FakeCredential()))
    assert not obs.ok
    assert obs.reason == "no data for 600s (stale) (1 of 2 series, billing)"
    assert fake.calls[0].body == {"resourceids": [DB1, DB2]}


async def test_metrics_permission_denied_is_not_retried(fake: AzureMonitorFake) -> None:
    """A 403 fails at once with Azure's error code and message."""
    fake.metrics.default = HttpFail(403, "AuthorizationFailed", "client 'x' lacks metrics/read")
    obs = await observe(AzureMetricsProbe(metrics_config(fake.base_url), credential=FakeCredential()))
    assert not obs.ok
    assert obs.reason == "permission denied (AuthorizationFailed: client 'x' lacks metrics/read)"
    assert len(fake.calls) == 1


async def test_metrics_unavailable_is_retried_a_bounded_number_of_times(fake: AzureMonitorFake) -> None:
    """503 on every attempt gives ``unavailable after 3 attempts``; the SDK adds no retries of its own."""
    fake.metrics.default = HttpFail(503)
    pauses = Pauses()
    probe = AzureMetricsProbe(metrics_config(fake.base_url), credential=FakeCredential(), sleep=pauses)
    obs = await observe(probe)
    assert obs.reason == "unavailable after 3 attempts"
    assert len(fake.calls) == 3
    assert pauses.pauses == [0.1, 0.2]


async def test_metrics_throttled_then_healthy_passes(fake: AzureMonitorFake) -> None:
    """A 429 followed by a good answer passes within the same check."""
    fake.metrics.reply(HttpFail(429, "TooManyRequests"), [MetricSeries(DB1, [(60, 1.0)])])
    probe = AzureMetricsProbe(metrics_config(fake.base_url), credential=FakeCredential(), sleep=Pauses())
    obs = await observe(probe)
    assert obs.ok, obs.reason
    assert len(fake.calls) == 2


async def test_metrics_slow_answer_hits_the_probe_timeout(fake: AzureMonitorFake) -> None:
    """An answer slower than the probe timeout fails as a timeout."""
    fake.metrics.reply(Slow(5.0, []))
    cfg = metrics_config(fake.base_url, timeout="300ms")
    obs = await observe(AzureMetricsProbe(cfg, credential=FakeCredential()))
    assert obs.reason == "timeout after 0.3s"
    assert obs.latency_s < 2.0


async def test_metrics_server_down_gives_cannot_connect(fake: AzureMonitorFake) -> None:
    """A closed port is a transient connection failure, retried then reported."""
    from tests.support import free_port

    cfg = metrics_config(f"http://127.0.0.1:{free_port()}", retry={"attempts": 2, "backoff": "10ms"})
    obs = await observe(AzureMetricsProbe(cfg, credential=FakeCredential(), sleep=Pauses()))
    assert obs.reason == "cannot connect after 2 attempts"


async def test_plain_http_without_the_insecure_flag_is_refused_by_azure_core(fake: AzureMonitorFake) -> None:
    """The SDK's https rule holds unless the test-only flag is set: no token travels over plain http."""
    cfg = metrics_config("https://127.0.0.1:1", insecure_endpoint_for_tests=False)
    probe = AzureMetricsProbe(cfg.model_copy(update={"endpoint": fake.base_url}), credential=FakeCredential())
    obs = await observe(probe)
    assert not obs.ok
    assert obs.reason == "refused to send a token over plain http (the endpoint must be https://)"
    assert fake.calls == []


async def test_logs_healthy_first_value_and_request_body(fake: AzureMonitorFake) -> None:
    """The named column of the first row is judged; the server got the KQL, the timespan and the token."""
    fake.logs.reply(Table([("lag", "real"), ("at", "datetime")], [[12.0, Ago(30)]]))
    credential = FakeCredential("logs-token")
    clock = ManualClock(1_800_000_000.0)
    cfg = logs_config(fake.base_url, time_column="at", staleness="5m")
    obs = await observe(AzureLogsProbe(cfg, clock=clock, credential=credential))
    assert obs.ok, obs.reason
    assert obs.reason == "heartbeat lag 12.0 <= 60"
    (call,) = fake.calls
    assert call.path == "/v1/workspaces/ws-1/query"
    assert call.body["query"] == cfg.query
    assert call.body["timespan"].endswith("2027-01-15T08:00:00.000Z")
    assert call.headers["Authorization"] == "Bearer logs-token"


async def test_logs_unhealthy_value_fails(fake: AzureMonitorFake) -> None:
    """A first value breaking the condition fails with the comparison."""
    fake.logs.reply(Table([("lag", "real")], [[75.5]]))
    obs = await observe(AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential()))
    assert obs.reason == "heartbeat lag 75.5 > 60"
    assert obs.value == 75.5


async def test_logs_no_rows_or_null_value_is_stale(fake: AzureMonitorFake) -> None:
    """No rows, or a null aggregate over no rows, fails as no data for the window."""
    fake.logs.reply(Table([("lag", "real")], []), Table([("lag", "real")], [[None]]))
    for _ in range(2):
        obs = await observe(AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential()))
        assert obs.reason == "no data for 900s (stale)"


async def test_logs_old_time_column_is_stale(fake: AzureMonitorFake) -> None:
    """With ``time_column`` the row's time must be within the staleness window."""
    fake.logs.reply(Table([("lag", "real"), ("at", "datetime")], [[1.0, Ago(400)]]))
    cfg = logs_config(fake.base_url, time_column="at", staleness="5m")
    obs = await observe(AzureLogsProbe(cfg, clock=ManualClock(), credential=FakeCredential()))
    assert obs.reason == "no data for 400s (stale)"


async def test_logs_partial_result_and_non_numbers_fail_with_reasons(fake: AzureMonitorFake) -> None:
    """A partial result and a text cell are failures that say why."""
    fake.logs.reply(Table([("lag", "real")], [[1.0]], partial_error=("PartialError", "query hit a limit")),
                    Table([("lag", "string")], [["high"]]))
    first = await observe(AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential()))
    second = await observe(AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential()))
    assert first.reason == "partial result (PartialError: query hit a limit)"
    assert second.reason == "lag is 'high', not a number"


async def test_error_body_with_a_non_string_message_is_described(fake: AzureMonitorFake) -> None:
    """An error whose ``message`` is nested JSON (or a number) still gives a reason with Azure's code."""
    fake.metrics.reply(HttpFail(403, "X", {"detail": "nested"}), HttpFail(404, "Y", 42))
    first = await observe(AzureMetricsProbe(metrics_config(fake.base_url), credential=FakeCredential()))
    second = await observe(AzureMetricsProbe(metrics_config(fake.base_url), credential=FakeCredential()))
    assert first.reason == "permission denied (X: {'detail': 'nested'})"
    assert second.reason == "not found (Y: 42)"
    assert len(fake.calls) == 2


async def test_partial_result_with_a_non_string_message_is_described(fake: AzureMonitorFake) -> None:
    """A partial result whose error message is nested JSON fails with that message shown, not a crash."""
    fake.logs.reply(Table([("lag", "real")], [[1.0]], partial_error=("PartialError", {"detail": "nested"})))
    obs = await observe(AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential()))
    assert not obs.ok
    assert obs.reason == "partial result (PartialError: {'detail': 'nested'})"


async def test_logs_missing_column_is_reported(fake: AzureMonitorFake) -> None:
    """A configured column absent from the result is a failure naming the columns there are."""
    fake.logs.reply(Table([("LagSeconds", "real")], [[1.0]]))
    obs = await observe(AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential()))
    assert obs.reason == "column 'lag' not in the result (LagSeconds)"


async def test_logs_permission_denied_and_unavailable(fake: AzureMonitorFake) -> None:
    """A 403 is reported at once; 503 twice gives ``unavailable after 2 attempts``."""
    fake.logs.reply(HttpFail(403, "InsufficientAccessError", "no read access to workspace"))
    denied = await observe(AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential()))
    assert denied.reason == "permission denied (InsufficientAccessError: no read access to workspace)"
    fake.logs.default = HttpFail(503)
    probe = AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential(), sleep=Pauses())
    assert (await observe(probe)).reason == "unavailable after 2 attempts"
    assert len(fake.calls) == 3


async def test_logs_slow_answer_hits_the_probe_timeout(fake: AzureMonitorFake) -> None:
    """A slow logs answer fails as a timeout."""
    fake.logs.reply(Slow(5.0, Table([("lag", "real")], [[1.0]])))
    probe = AzureLogsProbe(logs_config(fake.base_url, timeout="300ms"), credential=FakeCredential())
    obs = await observe(probe)
    assert obs.reason == "timeout after 0.3s"


async def test_client_secret_credential_is_built_from_config_and_closed(fake: AzureMonitorFake) -> None:
    """A probe builds its own client and credential from config and closes both, once, on aclose()."""
    cfg = logs_config(fake.base_url, credentials={
        "type": "client_secret", "tenant_id": "t-1", "client_id": "c-1", "secret": "s3cr3t-value"})
    probe = AzureLogsProbe(cfg)
    client = probe._get_client()
    credential = probe._credential
    assert type(credential).__name__ == "ClientSecretCredential"
    assert type(client).__name__ == "LogsQueryClient"
    assert client is probe._get_client()
    closed: list[str] = []
    for name, owned in (("client", client), ("credential", credential)):
        real_close = owned.close

        async def spy(name: str = name, real_close: Any = real_close) -> None:
            closed.append(name)
            await real_close()

        owned.close = spy  # instance attribute: shadows the method for this object only
    await probe.aclose()
    assert sorted(closed) == ["client", "credential"]
    await probe.aclose()  # a second aclose() closes nothing again
    assert sorted(closed) == ["client", "credential"]


async def test_injected_client_and_credential_are_left_open(fake: AzureMonitorFake) -> None:
    """What the caller passed in belongs to the caller: aclose() closes neither the client nor the credential."""
    from azure.monitor.query.aio import LogsQueryClient

    credential = FakeCredential()
    client = LogsQueryClient(credential, endpoint=fake.base_url, retry_total=0)
    closed: list[str] = []
    real_close = client.close

    async def spy() -> None:
        closed.append("client")
        await real_close()

    client.close = spy  # type: ignore[method-assign]
    fake.logs.reply(Table([("lag", "real")], [[1.0]]))
    probe = AzureLogsProbe(logs_config(fake.base_url), client=client, credential=credential)
    assert (await observe(probe)).ok
    assert closed == [] and not credential.closed
    await real_close()


async def test_token_failure_is_a_credentials_failure_and_nothing_is_sent(fake: AzureMonitorFake) -> None:
    """A credential that cannot get a token fails the check as a credentials failure, without a request."""
    credential = FakeCredential(fail="WorkloadIdentityCredential: AADSTS70021 no matching federated identity")
    probe = AzureMetricsProbe(metrics_config(fake.base_url), credential=credential, sleep=Pauses())
    obs = await observe(probe)
    assert obs.reason == ("credentials failed (ClientAuthenticationError: "
                          "WorkloadIdentityCredential: AADSTS70021 no matching federated identity)")
    assert fake.calls == []


async def test_unauthorized_and_bad_query_are_named(fake: AzureMonitorFake) -> None:
    """A 401 reads as unauthenticated and a 400 as an invalid query, each with Azure's error code."""
    fake.logs.reply(HttpFail(401, "InvalidAuthenticationToken", "token expired"),
                    HttpFail(400, "BadArgumentError", "syntax error near 'summarize'"))
    first = await observe(AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential()))
    second = await observe(AzureLogsProbe(logs_config(fake.base_url), credential=FakeCredential()))
    assert first.reason == "unauthenticated (InvalidAuthenticationToken: token expired)"
    assert second.reason == "invalid query (BadArgumentError: syntax error near 'summarize')"


async def test_unreachable_token_endpoint_is_a_credentials_failure(fake: AzureMonitorFake) -> None:
    """A client secret whose authority cannot be reached fails fast as credentials, not as the Monitor API."""
    from tests.support import free_port

    cfg = logs_config(fake.base_url, credentials={
        "type": "client_secret", "tenant_id": "t-1", "client_id": "c-1", "secret": "s3cr3t-value",
        "authority": f"127.0.0.1:{free_port()}"})
    obs = await observe(AzureLogsProbe(cfg, sleep=Pauses()))
    assert obs.reason.startswith("credentials failed (ServiceRequestError: Cannot connect to host 127.0.0.1:")
    assert "s3cr3t-value" not in repr(obs)
    assert obs.latency_s < 2.0
    assert fake.calls == []

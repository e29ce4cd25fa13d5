"""Cloud probe configs: defaults, rules reported at their exact path, missing extras, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, parse_config
from engine.config import cloud as cloud_config
from engine.config.cloud import (
    AzureClientSecret,
    AzureLogsProbeConfig,
    AzureMetricsProbeConfig,
    GcpAdc,
    GcpMonitoringProbeConfig,
)

RID = "/subscriptions/s-1/resourceGroups/rg/providers/Microsoft.Sql/servers/a/databases/orders"

TEMPLATE = """
instance: {{id: gcp-1, site: gcp}}
services:
  api:
    active: gcp
    sites:
      gcp:
        probes:
          - {probe}
      azure:
        probes:
          - {{type: tcp, host: 127.0.0.1, port: 9}}
""".lstrip()

GCP = ('{type: gcp_monitoring, project: p1, filter: \'metric.type = "x"\', '
       'condition: {op: "<=", threshold: 30}')
METRICS = (f'{{type: azure_metrics, endpoint: "https://westeurope.metrics.monitor.azure.com", '
           f'resource_ids: ["{RID}"], namespace: Microsoft.Sql/servers/databases, metric: cpu_percent, '
           f'condition: {{op: "<", threshold: 90}}')
LOGS = '{type: azure_logs, workspace_id: ws-1, query: "Heartbeat | count", condition: {op: ">", threshold: 0}'
PATH = "services.api.sites.gcp.probes[0]"


def probe_config(probe: str, *extra: str) -> str:
    return TEMPLATE.format(probe=probe + "".join(f", {e}" for e in extra) + "}")


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_gcp_defaults() -> None:
    """A minimal GCP probe uses ADC, a 5-minute window as staleness and three bounded attempts."""
    probe = parse_config(probe_config(GCP), env={}).services["api"].sites["gcp"].probes[0]
    assert isinstance(probe, GcpMonitoringProbeConfig)
    assert isinstance(probe.credentials, GcpAdc)
    assert (probe.window, probe.stale_after, probe.retry.attempts) == (300.0, 300.0, 3)
    assert probe.value_label == "gcp_monitoring"
    assert probe.insecure_endpoint_for_tests is False


def test_azure_kinds_parse() -> None:
    """Metrics and logs probes parse with the default Azure credential chain."""
    metrics = parse_config(probe_config(METRICS), env={}).services["api"].sites["gcp"].probes[0]
    logs = parse_config(probe_config(LOGS), env={}).services["api"].sites["gcp"].probes[0]
    assert isinstance(metrics, AzureMetricsProbeConfig) and metrics.aggregation == "average"
    assert isinstance(logs, AzureLogsProbeConfig) and logs.credentials.type == "default"


@pytest.mark.parametrize(("probe", "extra", "expected"), [
    (GCP, ["staleness: 10m"], f"{PATH}.staleness: must be > 0 and <= window (5m)"),
    (GCP, ["aligner: ALIGN_MAX"], f"{PATH}.alignment_period: required with aligner ALIGN_MAX"),
    (GCP, ["aligner: ALIGN_BEST, alignment_period: 1m"], f"{PATH}.aligner: unknown aligner; one of "),
    (GCP, ["reducer: REDUCE_MAX"], f"{PATH}.reducer: needs an aligner"),
    (GCP, ["aligner: ALIGN_MEAN, alignment_period: 1m, group_by: [resource.labels.zone]"],
     f"{PATH}.group_by: only applies with a reducer"),
    (GCP, ["alignment_period: 1m"], f"{PATH}.alignment_period: only applies with an aligner"),
    (GCP, ["credentials: {type: external_account, config_file: /x.json, audience: //a}"],
     f"{PATH}.credentials.config_file: give either config_file or audience + token_file, not both"),
    (GCP, ["insecure_endpoint_for_tests: true"], f"{PATH}.insecure_endpoint_for_tests: needs an endpoint"),
    (GCP, ["credentials: {type: service_account_file, path: /nonexistent/sa.json}"],
     f"{PATH}.credentials.path: no such file: /nonexistent/sa.json"),
    (GCP, ["credentials: {type: external_account, audience: //iam.googleapis.com/x}"],
     f"{PATH}.credentials.token_file: required without config_file"),
    (GCP, ["credentials: {type: magic}"], f"{PATH}.credentials"),
    (METRICS.replace('"https://westeurope.metrics.monitor.azure.com"', '"http://127.0.0.1:8080"'), [],
     f"{PATH}.endpoint: must be https:// (plain http only with insecure_endpoint_for_tests)"),
    (METRICS, ["granularity: 1h"], f"{PATH}.granularity: must be > 0 and <= window (5m)"),
    (LOGS, ["credentials: {type: client_secret, tenant_id: t, client_id: c}"],
     f"{PATH}.credentials.secret: required key is missing"),
])
def test_rules_name_the_field(probe: str, extra: list[str], expected: str) -> None:
    """Each cloud rule is reported at the path of the field it judges."""
    found = problems(probe_config(probe, *extra))
    assert any(p.startswith(expected) for p in found), found


def test_filter_without_metric_type_is_rejected() -> None:
    """A GCP filter must select a metric type, as Cloud Monitoring requires."""
    text = probe_config(GCP.replace("metric.type", "resource.type"))
    assert problems(text) == [
        f'{PATH}.filter: must select a metric, e.g. metric.type = "cloudsql.googleapis.com/..."']


def test_resource_ids_must_share_a_subscription() -> None:
    """Azure resource ids must be resource ids, all in one subscription (one getBatch call)."""
    other = RID.replace("s-1", "s-2")
    text = probe_config(METRICS.replace(f'["{RID}"]', f'["{RID}", "{other}"]'))
    assert problems(text) == [
        f"{PATH}.resource_ids: all resources must be in one subscription (one getBatch call)"]
    text = probe_config(METRICS.replace(f'["{RID}"]', '["orders-db"]'))
    assert problems(text)[0].startswith(f"{PATH}.resource_ids: [0] is not a resource id")


@pytest.mark.parametrize(("probe", "extra", "module"), [
    (GCP, "gcp", "google.cloud.monitoring_v3"),
    (METRICS, "azure", "azure.monitor.querymetrics"),
    (LOGS, "azure", "azure.monitor.query"),
])
def test_missing_extra_fails_with_the_pip_command(monkeypatch: pytest.MonkeyPatch, probe: str, extra: str,
                                                   module: str) -> None:
    """A probe whose SDK is not installed fails check-config at its ``type`` with the pip command."""
    monkeypatch.setattr(cloud_config, "module_available", lambda name: name != module)
    assert problems(probe_config(probe)) == [
        f"{PATH}.type: needs the {extra} extra ({module} is not installed): "
        f"pip install 'failover-engine[{extra}]'"]


def test_module_available_checks_real_imports() -> None:
    """The availability check finds installed packages and survives a missing parent package."""
    assert cloud_config.module_available("google.cloud.monitoring_v3")
    assert not cloud_config.module_available("no_such_parent.child")


def test_client_secret_comes_from_env_and_never_shows(tmp_path: Path) -> None:
    """A client secret given as ${ENV} or file: is loaded but absent from repr and serialization."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file-secret\n")
    for value, env in (("${AZ_SECRET}", {"AZ_SECRET": "env-secret-value"}), (f"file:{secret_file}", {})):
        text = probe_config(LOGS, f'credentials: {{type: client_secret, tenant_id: t, client_id: c, '
                                  f'secret: "{value}"}}')
        probe = parse_config(text, env=env).services["api"].sites["gcp"].probes[0]
        assert isinstance(probe, AzureLogsProbeConfig)
        assert isinstance(probe.credentials, AzureClientSecret)
        plain = probe.credentials.secret.get_secret_value()
        assert plain in {"env-secret-value", "from-file-secret"}
        assert plain not in repr(probe) and plain not in probe.model_dump_json()


def test_check_config_prints_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``failover-engine check-config`` exits 2 and prints the pip command when the azure extra is missing."""
    from engine.cli import main

    monkeypatch.setattr(cloud_config, "module_available", lambda name: not name.startswith("azure."))
    path = tmp_path / "engine.yaml"
    path.write_text(probe_config(LOGS))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"line 8: {PATH}.type: needs the azure extra (azure.monitor.query is not installed): " \
           "pip install 'failover-engine[azure]'" in err


AT_ENDPOINT = {  # each probe kind with the test-only plain-text switch on and {endpoint} to fill in
    "gcp": GCP + ", endpoint: {endpoint}, insecure_endpoint_for_tests: true",
    "metrics": METRICS.replace('"https://westeurope.metrics.monitor.azure.com"', '"{endpoint}"')
    + ", insecure_endpoint_for_tests: true",
    "logs": LOGS + ', endpoint: "{endpoint}", insecure_endpoint_for_tests: true',
}
LOOPBACK_ONLY = ("insecure_endpoint_for_tests: plain-text endpoints are allowed only on loopback "
                 "(127.0.0.0/8, ::1, localhost), not {host}: a bearer token would cross the network in clear")


@pytest.mark.parametrize(("kind", "endpoint", "host"), [
    ("gcp", "monitoring.googleapis.com:443", "monitoring.googleapis.com"),
    ("gcp", "10.0.0.7:8080", "10.0.0.7"),
    ("gcp", '"[2001:db8::1]:443"', "2001:db8::1"),
    ("gcp", "localhost.evil.example:80", "localhost.evil.example"),
    ("metrics", "http://metrics.example.com", "metrics.example.com"),
    ("metrics", "https://westeurope.metrics.monitor.azure.com", "westeurope.metrics.monitor.azure.com"),
    ("logs", "http://192.168.1.20:8080", "192.168.1.20"),
])
def test_insecure_endpoint_is_refused_for_a_remote_host(kind: str, endpoint: str, host: str) -> None:
    """The test-only plain-text switch names the host and refuses anything but loopback."""
    found = problems(probe_config(AT_ENDPOINT[kind].replace("{endpoint}", endpoint)))
    assert found == [f"{PATH}.{LOOPBACK_ONLY.format(host=host)}"]


@pytest.mark.parametrize(("kind", "endpoint"), [
    ("gcp", "127.0.0.1:50051"),
    ("gcp", "127.8.9.10:50051"),
    ("gcp", "localhost:50051"),
    ("gcp", '"[::1]:50051"'),
    ("metrics", "http://127.0.0.1:8080"),
    ("metrics", "http://LOCALHOST:8080"),
    ("logs", "http://[::1]:8080"),
])
def test_insecure_endpoint_is_allowed_on_loopback(kind: str, endpoint: str) -> None:
    """127.0.0.0/8, ::1 and localhost may be reached without TLS when the switch is on."""
    probe_cfg = parse_config(probe_config(AT_ENDPOINT[kind].replace("{endpoint}", endpoint)), env={}) \
        .services["api"].sites["gcp"].probes[0]
    assert isinstance(probe_cfg, GcpMonitoringProbeConfig | AzureMetricsProbeConfig | AzureLogsProbeConfig)
    assert probe_cfg.insecure_endpoint_for_tests is True


FEDERATION = "credentials: {{type: external_account, audience: //iam.googleapis.com/x, token_file: /t, " \
             "token_url: \"{url}\"}}"


@pytest.mark.parametrize("url", ["http://sts.example.com/v1/token", "http://10.1.2.3:8080/v1/token",
                                 "ftp://127.0.0.1/v1/token"])
def test_token_url_must_be_https_unless_loopback(url: str) -> None:
    """The Azure-issued subject token goes to token_url: plain http only to a loopback host."""
    assert problems(probe_config(GCP, FEDERATION.format(url=url))) == [
        f"{PATH}.credentials.token_url: must be https:// (plain http only to a loopback host: "
        "127.0.0.0/8, ::1, localhost)"]


@pytest.mark.parametrize("url", ["https://sts.googleapis.com/v1/token", "https://sts.example.com:8443/t",
                                 "http://127.0.0.1:9/v1/token", "http://localhost:9/v1/token",
                                 "http://[::1]:9/v1/token"])
def test_token_url_https_or_loopback_is_accepted(url: str) -> None:
    """https to any host, or http to loopback (a local token server), is accepted."""
    probe = parse_config(probe_config(GCP, FEDERATION.format(url=url)), env={}) \
        .services["api"].sites["gcp"].probes[0]
    assert isinstance(probe, GcpMonitoringProbeConfig)
    assert getattr(probe.credentials, "token_url", None) == url


def test_logs_staleness_needs_a_time_column() -> None:
    """Without time_column the query window is the only freshness bound: a shorter staleness is refused."""
    assert problems(probe_config(LOGS, "window: 15m, staleness: 5m")) == [
        f"{PATH}.staleness: needs time_column (without a row time only window bounds freshness: "
        "set window to 5m or add time_column)"]


@pytest.mark.parametrize("extra", [["window: 15m, staleness: 15m"], ["window: 15m"],
                                   ["window: 15m, staleness: 5m, time_column: TimeGenerated"]])
def test_logs_staleness_rules_accept_what_holds(extra: list[str]) -> None:
    """Staleness equal to the window, or any staleness with a time column, is accepted."""
    probe = parse_config(probe_config(LOGS, *extra), env={}).services["api"].sites["gcp"].probes[0]
    assert isinstance(probe, AzureLogsProbeConfig)
    assert probe.stale_after <= probe.window

"""Config parsing: every problem reported with its path and line; secrets from env and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import ConfigError, EngineConfig, load_config, parse_config, parse_duration
from engine.config.base import format_duration

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
instance: {id: gcp-1, site: gcp}
services:
  api:
    active: gcp
    sites:
      gcp:
        probes:
          - {type: http, url: "http://127.0.0.1:9/health"}
      azure:
        probes:
          - {type: tcp, host: 127.0.0.1, port: 9}
""".lstrip()


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return [str(p) for p in info.value.problems]


def test_minimal_config_defaults() -> None:
    """A minimal file gets the documented defaults (thresholds 3/2, 10 s interval, new connections)."""
    config = parse_config(MINIMAL, env={})
    svc = config.services["api"]
    assert (svc.policy.failure_threshold, svc.policy.success_threshold) == (3, 2)
    probe = svc.sites["gcp"].probes[0]
    assert probe.type == "http" and probe.interval == 10.0 and probe.timeout == 5.0
    assert probe.new_connection is True and probe.expect_status == [200]
    assert probe.signal_name == "http"


def test_timeout_must_be_below_interval_with_path_and_line() -> None:
    """The cross-field rule names the exact field path and its line."""
    text = MINIMAL.replace('url: "http://127.0.0.1:9/health"}', 'url: "http://x/h", interval: 10s, timeout: 10s}')
    assert problems(text) == ["line 8: services.api.sites.gcp.probes[0].timeout: must be < interval (10s)"]


def test_every_problem_is_listed() -> None:
    """Unknown keys, wrong types, bad enums and unknown probe types are all reported at once."""
    text = """
instance: {id: gcp-1, site: gcp, role: boss, colour: red}
services:
  api:
    active: aws
    sites:
      gcp:
        probes:
          - {type: http, url: "ftp://x", interval: soon}
          - {type: tcp, host: h, port: 70000}
          - {type: smoke}
      azure: {}
    policy: {failure_threshold: 0}
""".lstrip()
    got = problems(text)
    assert "line 1: instance.role: Input should be 'engine' or 'witness'" in got
    assert "line 1: instance.colour: unknown key" in got
    assert "line 8: services.api.sites.gcp.probes[0].url: must start with http:// or https://" in got
    assert ("line 8: services.api.sites.gcp.probes[0].interval: 'soon' is not a duration "
            "(use e.g. 10s, 500ms, 2m, 1h)") in got
    assert "line 9: services.api.sites.gcp.probes[1].port: Input should be less than or equal to 65535" in got
    assert any(p.startswith("line 10: services.api.sites.gcp.probes[2]: Input tag 'smoke'") for p in got)
    assert "line 12: services.api.policy.failure_threshold: Input should be greater than or equal to 1" in got
    assert len(got) == 7


def test_rule_on_active_site() -> None:
    """An active site that is not configured is reported at services.<name>.active."""
    assert problems(MINIMAL.replace("active: gcp", "active: aws")) == [
        "line 4: services.api.active: 'aws' is not one of the sites ['azure', 'gcp']"]


def test_duplicate_probe_names() -> None:
    """Two probes with the same name in a site are refused at the second one."""
    text = MINIMAL.replace('          - {type: http, url: "http://127.0.0.1:9/health"}',
                           '          - {type: http, url: "http://a/h"}\n          - {type: http, url: "http://b/h"}')
    assert problems(text) == [
        "line 9: services.api.sites.gcp.probes[1].name: 'http' is already used by probes[0]; give each probe a name"]


def test_missing_required_keys() -> None:
    """A missing required key is named, with the line of its parent."""
    assert problems("instance: {site: gcp}\n") == ["line 1: instance.id: required key is missing"]


def test_yaml_syntax_error() -> None:
    """Malformed YAML is one problem with its line, never a traceback."""
    got = problems("instance:\n  id: [unclosed\n")
    assert len(got) == 1
    assert got[0].startswith("line 3: (top level): not valid YAML: ") and "expected ',' or ']'" in got[0]


def test_top_level_must_be_a_mapping() -> None:
    """A list at the top is refused."""
    assert problems("- a\n- b\n") == ["line 1: (top level): the file must hold a mapping (key: value) at the top"]


def test_env_expansion_and_missing_variable() -> None:
    """${VAR} expands from the environment; ${VAR:-default} falls back; a missing one is a problem."""
    text = MINIMAL.replace('url: "http://127.0.0.1:9/health"',
                           'url: "http://${HOST}:${PORT:-8080}/health", headers: {X-Token: "${TOKEN}"}')
    config = parse_config(text, env={"HOST": "h1", "TOKEN": "t"})
    probe = config.services["api"].sites["gcp"].probes[0]
    assert probe.type == "http" and probe.url == "http://h1:8080/health"
    assert problems(text, env={"HOST": "h1"}) == [
        "line 8: services.api.sites.gcp.probes[0].headers.X-Token: environment variable TOKEN is not set"]


def test_secret_from_file_is_hidden(tmp_path: Path) -> None:
    """A file: secret is read, never shown in repr or dumps."""
    key = tmp_path / "peer.key"
    key.write_text("s3cr3t-value-long-enough\n")
    peer = f"peers: [{{id: azure-1, site: azure, url: 'http://127.0.0.1:9', key: 'file:{key}'}}]\n"
    config = parse_config(MINIMAL + peer, env={})
    assert config.peers[0].key is not None
    assert config.peers[0].key.get_secret_value() == "s3cr3t-value-long-enough"
    assert "s3cr3t" not in repr(config)
    assert "s3cr3t" not in config.model_dump_json()


def test_missing_secret_file() -> None:
    """An unreadable secret file is a problem with its path, and the secret path is named."""
    got = problems(MINIMAL + "peers: [{id: azure-1, site: azure, url: 'http://x:9', key: 'file:/nonexistent/key'}]\n")
    assert got == ["line 12: peers[0].key: cannot read secret file /nonexistent/key: No such file or directory"]


def test_config_is_frozen() -> None:
    """Config objects cannot be changed after parsing."""
    config = parse_config(MINIMAL, env={})
    with pytest.raises(Exception, match="frozen"):
        config.instance.id = "x"  # type: ignore[misc]


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_parses(path: Path) -> None:
    """Every YAML under config/ is a valid config (with its secrets provided)."""
    config = load_config(path, env={"FAILOVER_PEER_KEY_GCP_AZURE": "k" * 32, "FAILOVER_PEER_KEY_GCP_WITNESS": "w" * 32,
                                    "FAILOVER_PEER_KEY_AZURE_WITNESS": "a" * 32, "CLOUDFLARE_API_TOKEN": "t",
                                    "PGPASSWORD": "p", "TSIG_SECRET": "c2VjcmV0",
                                    "SLACK_WEBHOOK_URL": "https://hooks.example/x",
                                    "PAGER_WEBHOOK_URL": "https://pager.example/x",
                                    "FAILOVER_API_ONCALL_SHA256": "a" * 64, "FAILOVER_API_VIEWER_SHA256": "b" * 64})
    assert isinstance(config, EngineConfig)
    assert config.services


def test_schema_is_json_and_names_probe_types() -> None:
    """The exported JSON Schema lists every probe type."""
    schema = json.dumps(EngineConfig.model_json_schema())
    for kind in ("http", "tcp", "gcp_monitoring", "azure_metrics", "azure_logs"):
        assert f'"{kind}"' in schema


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("500ms", 0.5), ("2m", 120), ("1h30m", 5400),
                                               (3, 3.0), ("1.5s", 1.5)])
def test_durations(text: str | int, seconds: float) -> None:
    """Durations parse from units or numbers and format back."""
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


def test_a_removed_lease_key_names_its_replacement() -> None:
    """A config from before the echo lease: self_fence_after and lease_wait point to policy.lease."""
    old = "self_fence_after: 2s\n      lease_wait: 9s"
    text = (ROOT / "config" / "demo.yaml").read_text().replace("lease: 6s", old)
    got = [p for p in problems(text) if "policy." in p]
    assert any("policy.self_fence_after: unknown key: replaced by policy.lease" in p for p in got), got
    assert any("policy.lease_wait: unknown key: replaced by policy.lease" in p for p in got), got

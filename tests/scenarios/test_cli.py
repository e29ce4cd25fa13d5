"""The command line: check-config lists every problem and exits 2 without a traceback; schema prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=60)


def test_check_config_reports_every_problem(tmp_path: Path) -> None:
    """A broken file gives one line per problem with its path and line, exit 2, no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("instance: {id: x, site: gcp, extra: 1}\nservices:\n  api:\n    active: gcp\n    sites:\n"
                   "      gcp: {probes: [{type: http, url: 'http://a/h', interval: 10s, timeout: 10s}]}\n"
                   "      azure: {probes: [{type: tcp, host: a, port: 0}]}\n")
    result = cli("check-config", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{bad}: 3 problems"
    assert "  line 1: instance.extra: unknown key" in lines
    assert "  line 6: services.api.sites.gcp.probes[0].timeout: must be < interval (10s)" in lines
    assert "  line 7: services.api.sites.azure.probes[0].port: Input should be greater than or equal to 1" in lines


def test_check_config_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    """A missing file and malformed YAML are clear one-line problems with exit 2."""
    result = cli("check-config", str(tmp_path / "none.yaml"))
    assert result.returncode == 2 and "cannot read file" in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("instance: [\n")
    result = cli("check-config", str(bad))
    assert result.returncode == 2 and "not valid YAML" in result.stderr and "Traceback" not in result.stderr


def test_check_config_ok_and_missing_secret() -> None:
    """The example config passes with its secret set and names the variable when it is not."""
    secrets = {"FAILOVER_PEER_KEY_GCP_AZURE": "k" * 32, "FAILOVER_PEER_KEY_GCP_WITNESS": "w" * 32,
               "CLOUDFLARE_API_TOKEN": "t", "PGPASSWORD": "p",
               "SLACK_WEBHOOK_URL": "https://hooks.example/x", "PAGER_WEBHOOK_URL": "https://pager.example/x",
               "FAILOVER_API_ONCALL_SHA256": "a" * 64, "FAILOVER_API_VIEWER_SHA256": "b" * 64}
    ok = cli("check-config", "config/gcp.yaml", env=secrets)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("config/gcp.yaml: ok (engine-gcp in gcp")
    import os

    env = {**{k: v for k, v in os.environ.items() if k != "FAILOVER_PEER_KEY_GCP_WITNESS"}, **secrets}
    del env["FAILOVER_PEER_KEY_GCP_WITNESS"]
    result = subprocess.run([sys.executable, "-m", "engine", "check-config", "config/gcp.yaml"], cwd=ROOT,
                            capture_output=True, text=True, check=False, env={**env, "PYTHONPATH": str(ROOT)},
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        "  line 19: peers[1].key: environment variable FAILOVER_PEER_KEY_GCP_WITNESS is not set"]


def test_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    """`run` refuses a bad config the same way, before starting anything."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("instance: {site: gcp}\n")
    result = cli("run", "--config", str(bad))
    assert result.returncode == 2
    assert "instance.id: required key is missing" in result.stderr and "Traceback" not in result.stderr


def test_schema_is_json() -> None:
    """`schema` prints a JSON Schema for the whole file."""
    result = cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "EngineConfig" and "instance" in schema["properties"]

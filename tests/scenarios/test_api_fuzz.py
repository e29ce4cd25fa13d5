"""The API fuzzed from its own OpenAPI document (schemathesis): no 5xx, every answer matches the document.

A real engine process with an operator token serves it; the fuzzer sends valid and invalid requests to
every operation, mutations included. The document in the repository must equal the served one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection

from engine.http.auth import hash_token
from engine.http.openapi import build
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fuzz-operator-token-0123456789"
schema = schemathesis.openapi.from_dict(build())

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture(scope="module")
def engine_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An engine with two (unreachable) sites, an operator token and a journal, as a process."""
    d = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    (d / "engine.yaml").write_text(f"""
instance: {{id: fuzz-1, site: gcp, listen: "127.0.0.1:{port}", tick: 200ms}}
journal: {{path: "{d / 'journal.db'}"}}
logging: {{level: error}}
api: {{tokens: [{{name: fuzzer, role: operator, sha256: {hash_token(TOKEN)}}}], mutations_per_minute: 10000}}
services:
  shop:
    active: gcp
    policy: {{failback_healthy_for: 1s}}
    sites:
      gcp: {{probes: [{{type: tcp, host: 127.0.0.1, port: {free_port()}, interval: 300ms, timeout: 200ms}}]}}
      azure: {{probes: [{{type: tcp, host: 127.0.0.1, port: {free_port()}, interval: 300ms, timeout: 200ms}}]}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(d / "engine.yaml")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=(d / "log").open("wb"),
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    log = (d / "log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_the_repository_document_is_the_served_one() -> None:
    """openapi.json in the repository equals what the code builds (regenerate: failover-engine openapi)."""
    assert json.loads((ROOT / "openapi.json").read_text()) == json.loads(json.dumps(build()))


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case, engine_url: str) -> None:
    """Every generated request gets a documented status, never a 5xx, and a body matching the schema.

    schemathesis's negative-data check is left out: this test sends its own Authorization header (which
    replaces a generated invalid one) and an "invalid" empty object in the query serializes to no
    parameter at all, so the check failed now and then on requests that were in fact valid. Invalid
    input is covered by the generated cases' statuses and by the bad-input tests of each endpoint."""
    case.call_and_validate(base_url=engine_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10,
                           excluded_checks=[negative_data_rejection])

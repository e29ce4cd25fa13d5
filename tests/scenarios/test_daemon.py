"""The daemon as a real process: endpoints, detection of a broken site, decisions, clean SIGTERM.

This instance runs alone (no peers): it is the only voter, so its own view is the majority. The
service has no dns or database section, so the failover runbook records those steps as skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.demo.sample_site import SampleSite
from tests.support import free_port
from tests.support.sites import SiteFactory

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
instance: {{id: gcp-1, site: gcp, listen: "127.0.0.1:{port}", tick: 200ms}}
journal: {{path: "{journal}"}}
logging: {{format: json}}
services:
  api:
    active: gcp
    policy: {{failure_threshold: 3, success_threshold: 2}}
    sites:
      gcp:
        probes:
          - {{type: http, name: health, url: "{gcp}/health", interval: 200ms, timeout: 150ms}}
          - {{type: tcp, name: port, host: 127.0.0.1, port: {gcp_port}, interval: 200ms, timeout: 150ms}}
      azure:
        probes:
          - {{type: http, name: health, url: "{azure}/health", interval: 200ms, timeout: 150ms}}
"""


class Daemon:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, journal: Path) -> None:
        self.proc, self.url, self.journal = proc, url, journal

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.get("/v1/status")
                if last[0] == 200 and predicate(last[1]):
                    return last[1]
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not met within {timeout}s; last status: {last}")


@pytest.fixture
async def daemon(tmp_path: Path, sample_site: SiteFactory) -> AsyncIterator[tuple[Daemon, SampleSite]]:
    gcp, azure = await sample_site("gcp"), await sample_site("azure")
    port = free_port()
    cfg = tmp_path / "engine.yaml"
    cfg.write_text(CONFIG.format(port=port, journal=tmp_path / "journal.db", gcp=gcp.url, azure=azure.url,
                                 gcp_port=gcp.port))
    log = (tmp_path / "engine.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(cfg)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    d = Daemon(proc, f"http://127.0.0.1:{port}", tmp_path / "journal.db")
    try:
        yield d, gcp
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()


async def test_detects_a_broken_primary_and_decides(daemon: tuple[Daemon, SampleSite]) -> None:
    """Status shows both sites up, then the broken primary down with its reason and a failover decision."""
    d, gcp = daemon
    await d.wait_for(lambda s: (s["services"]["api"]["decision"] or {}).get("message")
                     == "holding: gcp is up for 1 of 1 voters")
    code, ready = await d.get("/readyz")
    assert code == 200 and ready["ready"] is True, ready
    code, health = await d.get("/healthz")
    assert code == 200 and health["ok"] is True
    # the overview counts signals by state and lists only those not up; ?signals=all lists every one
    code, overview = await d.get("/v1/status")
    assert overview["services"]["api"]["sites"]["gcp"]["signal_counts"] == {"up": 2}
    assert overview["services"]["api"]["sites"]["gcp"]["signals"] == []
    code, full = await d.get("/v1/status?signals=all")
    assert len(full["services"]["api"]["sites"]["gcp"]["signals"]) == 2
    code, bad = await d.get("/v1/status?signals=some")
    assert code == 400 and bad["error"] == "bad_query", bad

    gcp.set_mode("fail")
    status = await d.wait_for(lambda s: s["services"]["api"]["sites"]["gcp"]["health"] == "down")
    health_signal = status["services"]["api"]["sites"]["gcp"]["signals"][0]
    assert health_signal["state"] == "down"
    assert health_signal["consecutive_failures"] >= 3
    assert health_signal["last"]["reason"] == "status 503 not in [200]"
    status = await d.wait_for(lambda s: s["services"]["api"]["active"] == "azure")
    assert status["services"]["api"]["epoch"] == 1
    code, body = await d.get("/v1/operations?service=api")
    op = body["operations"][0]
    assert (op["state"], op["source"], op["target"], op["trigger"]) == ("done", "gcp", "azure", "auto")
    assert op["evidence"]["decision"] == ("failover api gcp -> azure: 1 of 1 voters see gcp down (need 1), "
                                          "1 see azure up; this instance acts")
    assert op["steps"]["shift_dns"]["state"] == "skipped"
    assert op["steps"]["shift_dns"]["summary"] == "no dns configured for this service"
    code, one = await d.get(f"/v1/operations/{op['id']}")
    assert code == 200 and one["id"] == op["id"]
    # away from home now: gcp recovering changes nothing, and failback is never automatic
    status = await d.wait_for(lambda s: s["services"]["api"]["sites"]["azure"]["health"] == "up")

    code, metrics = await d.get("/metrics")
    assert code == 200
    assert 'failover_engine_signal_state{service="api",signal="health",site="gcp"} 0.0' in metrics
    assert "failover_engine_probe_lateness_seconds_bucket" in metrics
    assert 'failover_engine_probe_results_total{result="fail",service="api",site="gcp"}' in metrics

    code, body = await d.get("/v1/events?service=api&kind=signal")
    assert code == 200
    assert any(e["message"].startswith("api/gcp/health: up -> down") for e in body["events"])


async def test_api_rejects_bad_input_with_json(daemon: tuple[Daemon, SampleSite]) -> None:
    """Unknown services, bad query values and unknown paths are 4xx JSON errors."""
    d, _ = daemon
    await d.wait_for(lambda s: True)
    assert (await d.get("/v1/services/nope"))[0] == 404
    code, body = await d.get("/v1/events?limit=abc")
    assert code == 400 and body["error"] == "bad_request" and "limit" in body["detail"]
    assert (await d.get("/v1/events?limit=5000"))[0] == 400
    assert (await d.get("/v1/events?since=nan"))[0] == 400
    code, body = await d.get("/nope")
    assert code == 404 and body["error"] == "not_found"
    code, body = await d.get("/v1/services/api")
    assert code == 200 and body["name"] == "api"


async def test_sigterm_stops_within_five_seconds(daemon: tuple[Daemon, SampleSite]) -> None:
    """SIGTERM ends the process cleanly (exit 0) within 5 s and records the stop in the journal."""
    d, gcp = daemon
    await d.wait_for(lambda s: s["services"]["api"]["sites"]["gcp"]["health"] == "up")
    gcp.set_mode("hang")  # a probe in flight must not hold the shutdown
    await asyncio.sleep(0.3)
    started = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.proc.wait, 5) == 0
    assert time.monotonic() - started < 5
    from engine.runtime.journal import Journal

    journal = Journal.open(d.journal)
    try:
        assert journal.events(limit=1)[0].message == "engine gcp-1 stopped"
    finally:
        await journal.close()


async def test_restart_keeps_the_journal(daemon: tuple[Daemon, SampleSite], tmp_path: Path) -> None:
    """A second start appends to the same journal: history survives restarts."""
    d, _ = daemon
    await d.wait_for(lambda s: True)
    d.proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(d.proc.wait, 10)
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(tmp_path / "engine.yaml")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        d2 = Daemon(proc, d.url, d.journal)
        await d2.wait_for(lambda s: True)
        _, body = await d2.get("/v1/events?kind=engine&limit=10")
        messages = [e["message"] for e in body["events"]]
        assert messages[:3] == ["engine gcp-1 started in gcp (engine, 3 signals)", "engine gcp-1 stopped",
                                "engine gcp-1 started in gcp (engine, 3 signals)"]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)


async def test_a_corrupt_journal_stops_the_start_until_told_to_begin_anew(
        daemon: tuple[Daemon, SampleSite], tmp_path: Path) -> None:
    """A journal damaged while the engine was down: the next start exits non-zero with one clear line (no
    traceback); with --new-journal it starts, and says so as an alert event."""
    d, _ = daemon
    await d.wait_for(lambda s: True)
    d.proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(d.proc.wait, 10)
    d.journal.write_bytes(b"garbage" * 1000)
    for side in (Path(f"{d.journal}-wal"), Path(f"{d.journal}-shm")):
        side.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "engine", "run", "--config", str(tmp_path / "engine.yaml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    refused = await asyncio.to_thread(subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=30,
                                      env=env, check=False)
    assert refused.returncode != 0
    said = refused.stderr + refused.stdout
    assert "journal is corrupt" in said or "cannot be read" in said, said
    assert "--new-journal" in said and "Traceback" not in said, said
    proc = subprocess.Popen([*cmd, "--new-journal"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    try:
        d2 = Daemon(proc, d.url, d.journal)
        await d2.wait_for(lambda s: True)
        _, body = await d2.get("/v1/events?kind=alert&limit=10")
        assert any("began a NEW journal" in e["message"] for e in body["events"]), body
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)

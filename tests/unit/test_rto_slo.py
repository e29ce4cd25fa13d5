"""The worst-case RTO against the SLO: the provider's DNS propagation passed in, the tunable step budgets,
the dominating term, and check-config's warning (exit 1 with --strict)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from actions.dns import propagation_worst_s
from engine.cli.render import render_status
from engine.config import EngineConfig, parse_config
from engine.core.rto import worst_case_rto
from engine.core.steps import failover_plan

ROOT = Path(__file__).resolve().parents[2]

# One engine in the standby site, the home site probed every 10 s (5 s timeout, threshold 3), RFC 2136 DNS with a
# 60 s TTL and a 30 s verify deadline (1 s interval, 2 s query timeout by default), no database.
SMALL = """
instance: {id: azure-1, site: azure, tick: 1s}
services:
  api:
    active: gcp
    policy: {failure_threshold: 3, rto_slo: 5m}
    sites:
      gcp:
        probes:
          - {type: http, name: health, url: "http://127.0.0.1:9/health", interval: 10s, timeout: 5s}
      azure:
        probes:
          - {type: tcp, host: 127.0.0.1, port: 9}
    dns:
      provider:
        type: rfc2136
        servers: ["127.0.0.1"]
        zone: example.com
        tsig: {name: failover-key, secret: "c2VjcmV0a2V5"}
      records:
        - {name: app, type: A, ttl: 60s, targets: {gcp: [192.0.2.1], azure: [192.0.2.2]}}
      verify: {deadline: 30s}
""".lstrip()

STEPS = """    policy:
      failure_threshold: 3
      rto_slo: 5m
      steps:
        precheck: {timeout: 10s, attempts: 2}
        shift_dns: {timeout: 15s, attempts: 2}
"""


def config(text: str = SMALL) -> EngineConfig:
    return parse_config(text, env={})


def steps_of(cfg: EngineConfig) -> dict[str, float]:
    return {c.name: c.seconds for c in worst_case_rto(cfg, "api").steps}


def test_propagation_replaces_the_verify_bound_by_what_it_waits_for() -> None:
    """With the provider's propagation passed in, verify_dns counts that propagation plus one round of queries."""
    bound = worst_case_rto(config(), "api")
    assert bound.component("runbook").seconds == pytest.approx(91.5 + 243.5 + 40)  # verify at its 30 s + 10 bound
    fast = worst_case_rto(config(), "api", dns_propagation=lambda kind: {"rfc2136": 0.0}[kind])
    verify = next(c for c in fast.steps if c.name == "verify_dns")
    assert verify.seconds == pytest.approx(0 + 1 + 2)  # propagation + interval + query timeout
    assert "provider propagation 0s" in verify.explanation
    slow = worst_case_rto(config(), "api", dns_propagation=lambda _kind: 20.0)
    assert next(c for c in slow.steps if c.name == "verify_dns").seconds == pytest.approx(23)
    assert not any("verify" in note for note in slow.notes)  # 20 s fits the 30 s deadline


def test_propagation_beyond_the_verify_deadline_is_a_note_and_the_bound_holds() -> None:
    """A propagation the verify deadline cannot cover keeps the step's bound and says the step may give up."""
    estimate = worst_case_rto(config(), "api", dns_propagation=lambda _kind: 100.0)
    assert next(c for c in estimate.steps if c.name == "verify_dns").seconds == pytest.approx(40)
    assert any("longer than dns.verify.deadline 30s" in note for note in estimate.notes), estimate.notes


def test_the_shipped_propagation_table_feeds_the_arithmetic() -> None:
    """actions.dns.propagation_worst_s is what the callers pass: RFC 2136 applies at once."""
    estimate = worst_case_rto(config(), "api", dns_propagation=propagation_worst_s)
    assert next(c for c in estimate.steps if c.name == "verify_dns").seconds == pytest.approx(
        propagation_worst_s("rfc2136") + 3)


def test_step_budgets_from_the_config_move_the_runner_table_and_the_estimate() -> None:
    """policy.steps sets precheck and shift_dns in the table the runner executes, and the estimate follows."""
    tuned = config(SMALL.replace("    policy: {failure_threshold: 3, rto_slo: 5m}\n", STEPS))
    plan = {s.name: s for s in failover_plan(tuned.services["api"])}
    assert (plan["precheck"].timeout, plan["precheck"].attempts) == (10, 2)
    assert (plan["shift_dns"].timeout, plan["shift_dns"].attempts) == (15, 2)
    got = steps_of(tuned)
    assert got["precheck"] == pytest.approx(2 * 10 + 0.5)
    assert got["shift_dns"] == pytest.approx(2 * 15 + 0.5)
    assert steps_of(config())["shift_dns"] == pytest.approx(243.5)  # the defaults are unchanged


def test_dominant_names_the_runbook_and_its_largest_step() -> None:
    """Above the SLO, the note and dominant() name the largest term and, for the runbook, its largest step."""
    estimate = worst_case_rto(config(), "api")
    assert estimate.over_slo_s == pytest.approx(estimate.total_s - 300)
    assert estimate.dominant().startswith("runbook 375 s (largest step: 243.5 s = shift_dns")
    assert estimate.notes[-1].startswith("above rto_slo 5m by 170.42s (largest term: runbook 375 s")
    within = worst_case_rto(config(SMALL.replace("rto_slo: 5m", "rto_slo: 10m")), "api")
    assert within.over_slo_s is None and within.notes == ()


def run_check(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", "check-config", str(path), *flags], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_check_config_warns_above_the_slo_and_strict_fails(tmp_path: Path) -> None:
    """A service above its rto_slo is a warning naming it and the dominating term; --strict makes it exit 1."""
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    plain = run_check(path)
    assert plain.returncode == 0, plain.stderr
    assert ("warning: service api: worst-case RTO 433.42 s exceeds its rto_slo 300 s by 133.42 s; dominated by "
            "runbook 338 s (largest step: 243.5 s = shift_dns") in plain.stderr
    strict = run_check(path, "--strict")
    assert strict.returncode == 1 and "1 service(s) above their rto_slo (--strict)" in strict.stderr
    path.write_text(SMALL.replace("    policy: {failure_threshold: 3, rto_slo: 5m}\n", STEPS))
    tuned = run_check(path, "--strict")
    assert tuned.returncode == 0 and "warning" not in tuned.stderr, tuned.stderr


def test_cli_status_shows_worst_case_beside_the_measured_rto() -> None:
    """`failover-engine status` puts the worst case over the SLO and the last measured RTO in the service table."""
    data = {"instance": {"id": "e1", "role": "engine", "site": "gcp"}, "healthy": True, "services": {"shop": {
        "active": "gcp", "epoch": 3, "rto": {"worst_case_s": 289.74, "rto_slo_s": 300.0, "measured": {
            "seconds": 6.25, "in": "drill drill-shop-full-abc", "from": "drill start to the standby serving"}}}}}
    text = render_status(data)
    header, row = text.splitlines()[2:4]
    assert "RTO WORST/SLO" in header and "RTO MEASURED" in header
    assert "4.8m / 5.0m" in row and "6.2s" in row
    assert ("RTO measured 6.2s in drill drill-shop-full-abc (drill start to the standby serving); worst case from "
            "the configuration 4.8m / 5.0m") in text

"""Worst-case RTO from the config: hand-computed terms, each moved by its input, and check-config's line."""

from __future__ import annotations

import ast
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import EngineConfig, parse_config
from engine.core.cadence import Cadence, default_jitter, phase_for
from engine.core.health import Health, HealthMachine
from engine.core.rto import (
    POKE_GAP,
    SKEW_ALLOWANCE,
    SignalDetection,
    runbook_steps,
    worst_case_rto,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "k" * 32

# One engine in the standby site (no peers), an HTTP probe on the home site every 10 s with a 5 s timeout, threshold 3,
# DNS through RFC 2136 with a 60 s TTL and a 30 s verify deadline, no database.
SMALL = """
instance: {id: azure-1, site: azure, tick: 1s}
services:
  api:
    active: gcp
    policy: {failure_threshold: 3, rto_slo: 10m}
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

PEERS = f"""
peers:
  - {{id: gcp-1, site: gcp, role: engine, url: "http://127.0.0.1:9", key: "{KEY}-gcp"}}
  - {{id: witness, site: witness, role: witness, url: "http://127.0.0.1:10", key: "{KEY}-witness"}}
"""

DATABASE = """
    database:
      sites:
        gcp: {host: 127.0.0.1, dbname: app, user: failover}
        azure: {host: 127.0.0.2, dbname: app, user: failover}
      fencing: {enabled: %s, timeout: 10s}
"""


def config(text: str = SMALL) -> EngineConfig:
    return parse_config(text, env={})


def terms(cfg: EngineConfig, lease_wait: float | None = None) -> dict[str, float]:
    return {c.name: c.seconds for c in worst_case_rto(cfg, "api", lease_wait=lease_wait).components}


def test_small_config_hand_computed() -> None:
    """Every term of the small config, worked out by hand from the code's bounds."""
    estimate = worst_case_rto(config(), "api")
    got = {c.name: c.seconds for c in estimate.components}
    assert list(got) == ["detection", "decision", "lease", "runbook", "dns_ttl"]
    # 3 failures x 10 s + 5 s timeout + 2 x 0.2 s jitter (2 % of 10 s)
    assert got["detection"] == pytest.approx(35.4)
    # one voter: the DOWN change pokes the loop, which ticks within POKE_GAP
    assert got["decision"] == pytest.approx(0.02)
    assert got["lease"] == 0
    # precheck 3 x 30 + 0.5 + 1 backoff = 91.5; shift_dns 4 x 60 + 0.5 + 1 + 2 = 243.5;
    # verify_dns 30 s deadline + 10 = 40; fence and promote skipped (no database)
    assert got["runbook"] == pytest.approx(91.5 + 243.5 + 40)
    assert got["dns_ttl"] == 60
    assert estimate.total_s == pytest.approx(35.4 + 0.02 + 375 + 60)
    assert estimate.line() == ("worst-case RTO for api: 470.42 s (detection 35.4 s + decision 0.02 s + lease 0 s "
                               "+ runbook 375 s + DNS TTL 60 s)")
    assert [c.name for c in estimate.after_traffic] == ["consistency", "reconcile", "report"]
    assert [c.seconds for c in estimate.after_traffic] == [0, 0, 10.5]  # no database: only the report runs
    assert estimate.component("detection").explanation.startswith(
        "3 failures × 10s interval + 5s timeout + 0.4s jitter (slowest signal of gcp: health")
    assert "no lease configured" in estimate.component("lease").explanation
    assert estimate.automatic and estimate.notes == ()


def test_components_sum_to_total_and_to_dict_is_json() -> None:
    """Components add up to the total in every variant; to_dict is plain JSON with the same numbers."""
    variants = [config(), config(SMALL + PEERS), config(SMALL + DATABASE % "true")]
    for cfg in variants:
        for lease in (None, 0.0, 42.5):
            estimate = worst_case_rto(cfg, "api", lease_wait=lease)
            assert estimate.total_s == pytest.approx(math.fsum(c.seconds for c in estimate.components))
            runbook = estimate.component("runbook").seconds
            assert runbook == pytest.approx(sum(c.seconds for c in estimate.steps))
            data = json.loads(json.dumps(estimate.to_dict()))
            assert data["total_s"] == pytest.approx(sum(c["seconds"] for c in data["components"]), abs=0.01)
            assert data["within_slo"] == (estimate.total_s <= 600)


def test_detection_follows_interval_threshold_and_timeout() -> None:
    """Each detection input moves the term by the arithmetic: N x interval + timeout + 2 x jitter."""
    base = terms(config())["detection"]
    slower = terms(config(SMALL.replace("interval: 10s, timeout: 5s", "interval: 20s, timeout: 5s")))
    assert slower["detection"] == pytest.approx(3 * 20 + 5 + 0.5) != base  # jitter capped at 250 ms
    more = terms(config(SMALL.replace("failure_threshold: 3", "failure_threshold: 5")))
    assert more["detection"] == pytest.approx(5 * 10 + 5 + 0.4)
    override = terms(config(SMALL.replace("timeout: 5s}", "timeout: 5s, failure_threshold: 2}")))
    assert override["detection"] == pytest.approx(2 * 10 + 5 + 0.4)  # the probe's threshold wins
    longer = terms(config(SMALL.replace("timeout: 5s", "timeout: 8s")))
    assert longer["detection"] == pytest.approx(3 * 10 + 8 + 0.4)


def test_detection_counts_skipped_slots_when_timeout_nearly_fills_the_interval() -> None:
    """timeout + 2 x jitter >= interval: a hanging check can still run at its next slot, which is skipped."""
    got = terms(config(SMALL.replace("timeout: 5s", "timeout: 9700ms")))["detection"]
    assert got == pytest.approx(2 * 3 * 10 + 9.7 + 0.4)
    assert SignalDetection("x", 10, 9.5, 3).may_skip is False
    assert SignalDetection("x", 10, 9.6, 3).may_skip is True


def test_detection_uses_the_slowest_home_signal_and_site_dependencies_only() -> None:
    """Any DOWN signal makes the site DOWN, so a failure seen by one signal only waits for that one;
    site dependencies of the home site count, shared ones and the standby's signals do not."""
    text = SMALL.replace("      azure:\n", "          - {type: tcp, name: lb, host: 127.0.0.1, port: 9, "
                                           "interval: 5s, timeout: 1s}\n      azure:\n")
    both = worst_case_rto(config(text), "api").component("detection")
    assert both.seconds == pytest.approx(35.4)
    assert "lb within 16.2s" in both.explanation  # 3 x 5 + 1 + 0.2
    dep = SMALL.replace("    dns:\n", "    dependencies:\n      - {name: db, scope: site, site: gcp, probe: "
                                     "{type: tcp, host: 127.0.0.1, port: 9, interval: 30s, timeout: 2s}}\n"
                                     "      - {name: pay, scope: shared, probe: {type: tcp, host: 127.0.0.1, "
                                     "port: 9, interval: 60s, timeout: 2s}}\n    dns:\n")
    got = worst_case_rto(config(dep), "api").component("detection")
    assert got.seconds == pytest.approx(3 * 30 + 2 + 2 * 0.25)  # jitter is capped at 250 ms
    assert "dep:db" in got.explanation


def test_decision_with_peers_follows_the_tick() -> None:
    """With peers: poke + wait for the peer's next broadcast + post deadline (0.8 x tick) + poke."""
    assert terms(config(SMALL + PEERS))["decision"] == pytest.approx(0.02 + 1 + 0.8 + 0.02)
    two = config(SMALL.replace("tick: 1s", "tick: 2s") + PEERS)
    assert terms(two)["decision"] == pytest.approx(0.02 + 2 + 1.6 + 0.02)
    fast = config(SMALL.replace("tick: 1s", "tick: 100ms") + PEERS)  # deadline floor 0.2 s: two ticks
    assert terms(fast)["decision"] == pytest.approx(0.02 + 0.2 + 0.2 + 0.02)
    text = worst_case_rto(config(SMALL + PEERS), "api").component("decision").explanation
    assert "majority 2 of 3 voters" in text and "cool-down 30m not counted (first move)" in text


def test_lease_argument_and_the_configured_lease() -> None:
    """lease_wait is taken as given; otherwise the service's self-fencing lease (engine.lease) when it has one."""
    cfg = config()
    assert terms(cfg, lease_wait=45.0)["lease"] == 45
    assert terms(cfg, lease_wait=45.0)["detection"] == terms(cfg)["detection"]
    with_lease = config(SMALL + DATABASE % "true" + PEERS)
    lease = with_lease.lease("api")
    assert lease is not None
    component = worst_case_rto(with_lease, "api").component("lease")
    assert component.seconds == lease.wait == lease.length + 0.5
    assert lease.explain() in component.explanation
    assert worst_case_rto(with_lease, "api", lease_wait=5.0).component("lease").seconds == 5


def test_dns_ttl_and_verify_deadline() -> None:
    """The largest record TTL is the DNS term; the verify deadline moves the runbook term."""
    assert terms(config(SMALL.replace("ttl: 60s", "ttl: 2m")))["dns_ttl"] == 120
    two = SMALL.replace("      verify:", "        - {name: www, type: A, ttl: 5m, targets: {gcp: [192.0.2.3], "
                                         "azure: [192.0.2.4]}}\n      verify:")
    got = worst_case_rto(config(two), "api").component("dns_ttl")
    assert got.seconds == 300 and got.explanation.startswith("www TTL 5m, the largest of 2 records")
    longer = terms(config(SMALL.replace("deadline: 30s", "deadline: 2m")))
    assert longer["runbook"] - terms(config())["runbook"] == pytest.approx(90)


def test_cloudflare_automatic_ttl_is_300s() -> None:
    """Cloudflare's TTL 1 means automatic, which it serves as 300 s."""
    pytest.importorskip("cloudflare")
    text = SMALL.replace("""        type: rfc2136
        servers: ["127.0.0.1"]
        zone: example.com
        tsig: {name: failover-key, secret: "c2VjcmV0a2V5"}""", """        type: cloudflare
        zone: example.com
        api_token: t""").replace("ttl: 60s", "ttl: 1")
    got = worst_case_rto(config(text), "api").component("dns_ttl")
    assert got.seconds == 300 and "Cloudflare automatic" in got.explanation


def test_database_steps_and_fencing() -> None:
    """A database adds fence (best effort, with the trailing backoff) and promote; fencing off skips fence."""
    with_db = worst_case_rto(config(SMALL + DATABASE % "true"), "api")
    steps = {c.name: c.seconds for c in with_db.steps}
    # promote: 3 attempts of promotion.timeout (60 s default) + 5 = 195, + backoff 1 + 2 between attempts
    assert steps == {"precheck": 91.5, "fence": 15.5, "promote": 198.0, "shift_dns": 243.5, "verify_dns": 40.0}
    after = {c.name: c.seconds for c in with_db.after_traffic}
    assert after == {"consistency": 121.5, "reconcile": 1800.5, "report": 10.5}  # not in the total
    no_fence = {c.name: c.seconds for c in worst_case_rto(config(SMALL + DATABASE % "false"), "api").steps}
    assert no_fence["fence"] == 0 and no_fence["promote"] == 198


def test_synchronous_mode_adds_the_commit_stall_on_the_promoted_primary() -> None:
    """``on`` adds degrade ``after`` plus one check interval; ``strict`` adds nothing and says writes stay blocked."""
    database = DATABASE % "true"
    off = worst_case_rto(config(SMALL + database), "api")
    on = worst_case_rto(config(SMALL + database + "      synchronous: on\n"
                               "      synchronous_degrade: {after: 4s, check_interval: 500ms}\n"), "api")
    strict = worst_case_rto(config(SMALL + database + "      synchronous: strict\n"), "api")
    assert "sync_stall" not in [c.name for c in off.components]
    assert on.component("sync_stall").seconds == pytest.approx(4.5)
    assert on.total_s == pytest.approx(off.total_s + 4.5)
    assert "degrades to asynchronous" in on.component("sync_stall").explanation
    assert strict.component("sync_stall").seconds == 0 and strict.total_s == pytest.approx(off.total_s)
    assert any("strict" in note and "re-protected" in note for note in strict.notes)
    assert not any("strict" in note for note in on.notes)


def test_the_runner_runs_the_table_rto_adds_up() -> None:
    """The runbook the runner is handed is the very step table the worst-case RTO adds up (one table, not a copy)."""
    from engine.runtime.runbooks import Runbooks

    for text in (SMALL, SMALL + DATABASE % "true", SMALL.split("    dns:")[0]):
        svc = config(text).services["api"]
        runbooks = Runbooks(SimpleNamespace(), lambda _svc, _site, _epoch: (None, None))  # type: ignore[arg-type]
        plan, steps = runbooks(SimpleNamespace(config=svc, lease=None, operation=None))  # type: ignore[arg-type]
        assert tuple(plan) == runbook_steps(svc)
        assert list(steps) == [s.name for s in plan]


def test_mirrored_constants_match_the_daemon() -> None:
    """POKE_GAP and SKEW_ALLOWANCE are copies (their modules do I/O); they must not drift."""
    from engine.runtime.daemon import POKE_GAP as daemon_gap
    from engine.runtime.peering import SKEW_ALLOWANCE as peering_skew

    assert (daemon_gap, peering_skew) == (POKE_GAP, SKEW_ALLOWANCE)


def test_notes_for_what_the_figure_hides() -> None:
    """Manual-only services, a quorum a whole-site loss cannot form, no DNS and a missed SLO are said."""
    off = worst_case_rto(config(SMALL.replace("failure_threshold: 3,", "failure_threshold: 3, auto_failover: false,")),
                         "api")
    assert not off.automatic and any("automatic failover is disabled" in n for n in off.notes)
    two = SMALL + PEERS.split("  - {id: witness", maxsplit=1)[0]
    notes = worst_case_rto(config(two), "api").notes
    assert any(n.startswith("losing all of gcp (its 1 voter(s) too) leaves 1 of 2 voters") for n in notes)
    assert not any("losing all" in n for n in worst_case_rto(config(SMALL + PEERS), "api").notes)
    tight = worst_case_rto(config(SMALL.replace("rto_slo: 10m", "rto_slo: 5m")), "api")
    assert tight.notes == ("above rto_slo 5m by 170.42s (largest term: runbook 375 s (largest step: 243.5 s = "
                           "shift_dns (4 × 1m + 3.5s backoff)))",)
    no_dns = worst_case_rto(config(SMALL.split("    dns:")[0]), "api")
    assert no_dns.component("dns_ttl").seconds == 0
    assert any(n.startswith("no dns configured") for n in no_dns.notes)


@settings(max_examples=200, deadline=None)
@given(interval=st.floats(1, 120), timeout_share=st.floats(0.01, 0.999), threshold=st.integers(1, 6),
       seed=st.integers(0, 2**32), outage_share=st.floats(0, 1))
def test_simulated_detection_never_exceeds_the_bound(interval: float, timeout_share: float, threshold: int,
                                                     seed: int, outage_share: float) -> None:
    """Replays the scheduler's rules (fixed phase, jitter per slot, a running check skips its slot) with
    random check durations: the time from outage to DOWN never exceeds the computed worst case."""
    timeout = interval * timeout_share
    rng = random.Random(seed)
    cadence = Cadence(0.0, interval, phase_for(str(seed), interval), default_jitter(interval))
    machine = HealthMachine(threshold, 1)
    outage = (5 + outage_share) * interval
    busy_until = -1.0
    bound = SignalDetection("s", interval, timeout, threshold).worst_s
    for _ in range(10 * threshold + 20):
        due = cadence.due(rng)
        if due >= busy_until:  # the scheduler skips a slot while the previous check still runs
            failing = due >= outage
            took = timeout if failing and rng.random() < 0.7 else rng.uniform(0, timeout)
            busy_until = due + took
            machine.observe(not failing, busy_until)
            if machine.state is Health.DOWN:
                assert busy_until - outage <= bound + 1e-9
                return
        cadence.advance_past(due)
    raise AssertionError("never went down")


def test_rto_module_stays_pure() -> None:
    """engine.core.rto imports no I/O library itself (the rule of tests/unit/test_purity.py), and importing it
    pulls in neither asyncio nor a network or database client through the modules it uses."""
    tree = ast.parse((ROOT / "engine" / "core" / "rto.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    forbidden = {"asyncio", "aiohttp", "psycopg", "dns", "socket", "sqlite3", "requests", "httpx", "subprocess"}
    assert not imported & forbidden
    code = ("import sys, engine.core.rto; print(sorted({'asyncio', 'aiohttp', 'psycopg', 'dns', 'sqlite3'} "
            "& {m.split('.')[0] for m in sys.modules}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.stdout.strip() == "[]"


def test_check_config_prints_the_worst_case_rto(tmp_path: Path) -> None:
    """`check-config` prints one RTO line per service after the ok line, and notes beneath it."""
    path = tmp_path / "small.yaml"
    path.write_text(SMALL.replace("rto_slo: 10m", "rto_slo: 5m"))
    result = subprocess.run([sys.executable, "-m", "engine", "check-config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{path}: ok (azure-1 in azure, 1 service(s)")
    # check-config counts verify_dns as RFC 2136's propagation (0 s) + one round (1 s interval + 2 s query timeout)
    assert lines[1:] == [
        "worst-case RTO for api: 433.42 s (detection 35.4 s + decision 0.02 s + lease 0 s + runbook 338 s "
        "+ DNS TTL 60 s)",
        "  above rto_slo 5m by 133.42s (largest term: runbook 338 s (largest step: 243.5 s = shift_dns "
        "(4 × 1m + 3.5s backoff)))"]

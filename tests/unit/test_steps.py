"""One step table per runbook kind (engine.core.steps), read by the runner, the RTO and the dry run."""

from __future__ import annotations

from engine.config import parse_config
from engine.config.lease import Lease
from engine.config.model import ServiceConfig
from engine.core.steps import (
    FAILOVER_STEPS,
    SWITCHOVER_STEPS,
    failover_plan,
    names,
    plan_for,
    switchover_plan,
)

CONFIG = """
instance: {id: azure-1, site: azure, tick: 1s}
services:
  api:
    active: gcp
    sites:
      gcp: {probes: [{type: tcp, host: 127.0.0.1, port: 9}]}
      azure: {probes: [{type: tcp, host: 127.0.0.1, port: 10}]}
%s"""
DNS = """    dns:
      provider:
        type: rfc2136
        servers: ["127.0.0.1"]
        zone: example.com
        tsig: {name: failover-key, secret: "c2VjcmV0a2V5"}
      records:
        - {name: app, type: A, ttl: 60s, targets: {gcp: [192.0.2.1], azure: [192.0.2.2]}}
"""
DB = """    database:
      sites:
        gcp: {host: 127.0.0.1, dbname: app, user: failover}
        azure: {host: 127.0.0.2, dbname: app, user: failover}
"""


def service(extra: str = "") -> ServiceConfig:
    return parse_config(CONFIG % extra, env={}).services["api"]


def test_failover_runs_its_steps_in_order() -> None:
    """precheck, fence, promote, shift, verify, consistency, reconcile, report."""
    assert names(failover_plan(service(DNS + DB))) == list(FAILOVER_STEPS) == [
        "precheck", "fence", "promote", "shift_dns", "verify_dns", "consistency", "reconcile", "report"]


def test_switchover_runs_its_steps_in_order() -> None:
    """The planned move lowers the TTL first, drains before promoting and reverses replication before restoring."""
    assert names(switchover_plan(service(DNS + DB))) == list(SWITCHOVER_STEPS) == [
        "precheck", "lower_ttl", "weighted_failback", "fence", "drain", "promote", "shift_dns", "verify_dns",
        "reverse", "restore_ttl", "reconcile", "report"]


def test_a_planned_move_runs_the_switchover() -> None:
    """plan_for picks the table by the move's kind."""
    svc = service(DNS + DB)
    assert plan_for(svc, planned=True) == switchover_plan(svc)
    assert plan_for(svc, planned=False) == failover_plan(svc)


def test_the_fence_must_hold_with_a_lease_or_when_asked() -> None:
    """Best effort by default; with a lease (its wait inside the timeout) or require_fence: 3 attempts, must succeed."""
    svc = service(DNS + DB)
    default = failover_plan(svc)[1]
    assert (default.name, default.best_effort, default.attempts) == ("fence", True, 1)
    lease = Lease(length=29.5, fence_timeout=10.0, tick=1.0)
    held = failover_plan(svc, lease=lease)[1]
    assert (held.best_effort, held.attempts, held.timeout) == (False, 3, default.timeout + 30.0)
    assert not failover_plan(svc, require_fence=True)[1].best_effort


def test_steps_a_config_does_not_need_say_why_they_are_skipped() -> None:
    """No dns: the traffic steps are skipped with that reason; no database: the data steps; the runner still
    runs them (they return at once) and the RTO adds nothing for them."""
    plan = {s.name: s for s in failover_plan(service())}
    assert plan["shift_dns"].skipped == "no dns configured" and plan["shift_dns"].worst_s == 0.0
    assert plan["promote"].skipped == "no database configured"
    assert plan["report"].skipped is None

"""Prometheus metrics of one engine, in a registry of its own (several engines can share a process).

Every series is named ``failover_engine_*``; ``docs/metrics.md`` lists each one with its labels and the alert
that reads it (``deploy/prometheus/alerts.yml``). Per-signal series are kept to the ones an operator alerts
on (state, consecutive failures); latency and lateness are histograms per service and site, so 10,000
signals stay cheap. No ``*_created`` series: they double the counter series and no alert reads them.

Gauges without labels that only a running cluster can measure (quorum, lease, the last loop tick) start
as NaN, "not measured": a single instance never has a quorum to lose, and a comparison with NaN is false,
so no alert fires on a value nobody measured.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from engine import __version__

# a process-wide switch of prometheus_client: no *_created series from any registry
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
STATE_VALUE = {"unknown": -1, "down": 0, "up": 1}
P = "failover_engine_"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build = Info(P + "build", "Version of the engine and of the Python running it; always 1.", registry=r)
        self.build.info({"version": __version__, "python": platform.python_version()})

        # -- probes and signals
        self.probe_results = Counter(
            P + "probe_results", "Probe results by outcome (ok or fail) per service and site; a rising fail "
            "rate precedes a site going down.", ["service", "site", "result"], registry=r)
        self.probe_latency = Histogram(
            P + "probe_latency_seconds", "How long probes took per service and site (a failure counts too).",
            ["service", "site"], buckets=_LATENCY_BUCKETS, registry=r)
        self.signal_state = Gauge(
            P + "signal_state", "One signal's health machine: 1 up, 0 down, -1 unknown (not yet observed).",
            ["service", "site", "signal"], registry=r)
        self.signal_failures = Gauge(
            P + "signal_consecutive_failures", "Failures in a row of one signal; it goes down at the "
            "signal's failure_threshold.", ["service", "site", "signal"], registry=r)
        self.site_state = Gauge(
            P + "site_state", "A site as this engine sees it: 1 up, 0 down, -1 unknown.", ["service", "site"],
            registry=r)
        self.active_site = Gauge(
            P + "active_site", "1 for the site a service is active in (takes writes and traffic), 0 for the "
            "others.", ["service", "site"], registry=r)
        self.lateness = Histogram(
            P + "probe_lateness_seconds", "How late a check started against its due time; late checks mean an "
            "overloaded engine.", buckets=_LATENESS_BUCKETS, registry=r)
        self.skipped = Counter(
            P + "probe_skipped", "Check slots skipped because the previous check of the signal still ran "
            "(its timeout is too close to its interval).", ["service"], registry=r)

        # -- decisions, quorum, lease
        self.decisions = Counter(
            P + "decisions", "Changes of a service's decision, by verdict (hold, failover, page...); a rising "
            "page count means the engine wants an operator.", ["service", "verdict"], registry=r)
        self.loop_tick = Gauge(
            P + "loop_last_tick_timestamp_seconds", "Unix time of the decision loop's last tick; far behind "
            "time() means the engine is stalled. NaN before the first tick.", registry=r)
        self.quorum = Gauge(
            P + "quorum", "1 while a majority of the configured voters is heard, 0 while not (no automatic "
            "move possible). NaN with a single voter.", registry=r)
        self.lease_granted = Gauge(
            P + "lease_granted", "1 while the echoes of a majority of voters renew this engine's self-fencing "
            "lease, 0 once it ran out: the active site's engine fences its own database before that. NaN with "
            "fewer than 3 voters or on a witness.", registry=r)
        self.peer_age = Gauge(
            P + "peer_last_seen_age_seconds", "Seconds since a peer's verdict was last accepted; past two of its "
            "intervals it is no vote.", ["peer"], registry=r)
        for unmeasured in (self.loop_tick, self.quorum, self.lease_granted):
            unmeasured.set(math.nan)

        # -- runbooks (operations: failover, failback, switchover, drill moves)
        self.failovers = Counter(
            P + "failovers", "Finished runbook operations by service, kind (failover, failback, switchover), "
            "trigger (auto, manual, drill, scheduled) and result (done, halted, stood_down).",
            ["service", "kind", "trigger", "result"], registry=r)
        self.step_seconds = Histogram(
            P + "runbook_step_duration_seconds", "Duration of one attempt of a runbook step, by service, "
            "operation kind, step and result (done, skipped, failed).", ["service", "kind", "step", "result"],
            buckets=_STEP_BUCKETS, registry=r)
        self.runbook_halted = Gauge(
            P + "runbook_halted", "1 while a halted operation blocks the service's runbooks until an operator "
            "retries or aborts it.", ["service"], registry=r)
        self.runbook_running = Gauge(
            P + "runbook_running_seconds", "Age of the service's running operation (counted from its start or "
            "its last retry, like the deadline); 0 when none runs.", ["service"], registry=r)
        self.deadline_exceeded = Counter(
            P + "runbook_deadline_exceeded", "Operations halted because they outlived policy.runbook_deadline.",
            ["service", "kind"], registry=r)
        self.data_loss_possible = Gauge(
            P + "data_loss_possible", "1 when the last failover's consistency check could not prove zero data "
            "loss (RPO breached or unknown): reconcile and look for lost writes.", ["service"], registry=r)
        self.data_loss_window = Gauge(
            P + "data_loss_window_seconds", "Upper bound of the last failover's data-loss window, when one "
            "could be justified.", ["service"], registry=r)

        # -- policy (from the config: the thresholds alerts compare against)
        self.rpo = Gauge(P + "rpo_seconds", "The service's RPO (policy.rpo): the most data-loss window a "
                         "failover may accept.", ["service"], registry=r)
        self.rto_slo = Gauge(P + "rto_slo_seconds", "The service's RTO objective (policy.rto_slo).", ["service"],
                             registry=r)
        self.runbook_deadline = Gauge(
            P + "runbook_deadline_seconds", "policy.runbook_deadline: a runbook still running after this halts.",
            ["service"], registry=r)

        # -- database, DNS, journal, API
        self.replication_lag = Gauge(
            P + "replication_lag_seconds", "Standby's replication lag from the heartbeat (last known); above "
            "the RPO an automatic failover is refused.", ["service"], registry=r)
        self.slot_retained = Gauge(
            P + "replication_slot_retained_bytes", "WAL a replication slot keeps on its server (bytes "
            "behind the current LSN); it grows while the subscriber is away and can fill the disk.",
            ["service", "site", "slot"], registry=r)
        self.dns_drift = Gauge(
            P + "dns_drift", "1 while the DNS records differ from what the engine expects and the difference "
            "is not acknowledged (moves are blocked).", ["service"], registry=r)
        self.journal_events = Counter(
            P + "journal_events", "Events written to the journal (audit log), by kind.", ["kind"], registry=r)
        self.journal_writable = Gauge(
            P + "journal_writable", "1 while the journal's last write committed, 0 after one failed (disk full, "
            "I/O error, read-only): nothing is recorded then. NaN while no journal is open.", registry=r)
        self.journal_writable.set(math.nan)
        self.api_requests = Counter(
            P + "api_requests", "API requests by method, route and status.", ["method", "route", "status"],
            registry=r)
        self._reconcile: dict[str, Gauge] = {}

        # -- breaker, self-fence, drills
        self.breaker_open = Gauge(
            P + "breaker_open", "1 while the circuit breaker disarms automatic action on a service (too many "
            "automatic moves); only an operator's arm closes it.", ["service"], registry=r)
        self.self_fenced = Gauge(
            P + "self_fenced", "1 while this engine keeps its own site's database fenced (it was cut off from "
            "the voters); only an operator's unfence lifts it.", ["service"], registry=r)
        self.drill_result = Gauge(
            P + "drill_last_result", "Last drill per kind (shadow, full): 1 passed, 0 failed.",
            ["service", "kind"], registry=r)
        self.drill_time = Gauge(
            P + "drill_last_timestamp_seconds", "Unix time the last drill per kind finished.",
            ["service", "kind"], registry=r)
        self.drill_overdue = Gauge(
            P + "drill_overdue", "1 while a scheduled drill missed its window and none has run since.",
            ["service", "kind"], registry=r)
        self.drill_phase = Gauge(
            P + "drill_phase_seconds", "Phase durations of the last full drill.", ["service", "phase"], registry=r)
        self.drill_slo_missed = Gauge(
            P + "drill_phase_slo_missed", "1 when the phase missed its SLO in the last full drill.",
            ["service", "phase"], registry=r)
        # synchronous replication and the data-loss verdict (issues 24, 17)
        self.synchronous = Gauge(
            "failover_engine_synchronous_state", "1 for the synchronous replication state a service is in (off, "
            "engaging, sync, at_risk, waiting, degraded).", ["service", "state"], registry=r)
        # -- the stray-primary watch (issue 17, item 4) ------------------------------------------------------
        self.stray_primary = Gauge(
            "failover_engine_stray_primary", "1 while a database takes writes outside the active site.",
            ["service", "site"], registry=r)
        self.stray_primary_fenced = Counter(
            "failover_engine_stray_primary_fenced", "Stray primaries this engine fenced.", ["service", "site"],
            registry=r)

    # -- helpers for the callers: one call instead of several label lookups ----------------------------
    def describe_service(self, service: str, *, rpo: float, rto_slo: float, runbook_deadline: float) -> None:
        """Export the policy numbers of ``service`` that alerts compare against."""
        self.rpo.labels(service).set(rpo)
        self.rto_slo.labels(service).set(rto_slo)
        self.runbook_deadline.labels(service).set(runbook_deadline)
        self.runbook_halted.labels(service).set(0)
        self.runbook_running.labels(service).set(0)

    def operation_finished(self, op: Any) -> None:
        """Count a finished (or halted) operation: ``op`` has service, kind, trigger and state."""
        self.failovers.labels(op.service, op.kind, op.trigger, str(op.state)).inc()

    def observe_operation(self, service: str, op: Any | None, now: float) -> None:
        """The service's operation right now (``None`` when there is none): halted, or running since when."""
        state = str(op.state) if op is not None else ""
        self.runbook_halted.labels(service).set(1 if state == "halted" else 0)
        started = now
        if op is not None and state == "running":
            started = float(op.evidence.get("deadline_from") or op.created_at)
        self.runbook_running.labels(service).set(max(0.0, now - started))

    def observe_step(self, service: str, kind: str, step: str, record: Mapping[str, Any]) -> None:
        """One finished step attempt (its journal record): its duration; the consistency step's verdict."""
        self.step_seconds.labels(service, kind, step, str(record["state"])).observe(float(record["duration_s"]))
        if step == "consistency" and str(record["state"]) == "done":
            data = record.get("data") or {}
            self.data_loss_possible.labels(service).set(0 if data.get("status") == "ok" else 1)
            if "kind" in data:  # the loss verdict (engine.core.loss): 0 by proof, the bound, +Inf when unknown
                bound = data.get("bound_s")
                self.data_loss_window.labels(service).set(math.inf if bound is None else float(bound))

    def watch_journal(self, writable: Callable[[], bool] | None) -> None:
        """Read the journal's health at every scrape (``None``: no journal open)."""
        if writable is None:
            self.journal_writable.set_function(lambda: math.nan)
        else:
            self.journal_writable.set_function(lambda: 1.0 if writable() else 0.0)


    def export_reconcile(self, samples: list[tuple[str, dict[str, str], float]]) -> None:
        """Reconciliation results as gauges: failover_engine_reconcile_{identical,differences,...}."""
        for name, labels, value in samples:
            full = P + name.removeprefix("failover_")
            gauge = self._reconcile.get(full)
            if gauge is None:
                what = name.removeprefix("failover_reconcile_").replace("_", " ")
                gauge = Gauge(full, f"Last reconciliation of the database pair: {what} (see docs/metrics.md).",
                              sorted(labels), registry=self.registry)
                self._reconcile[full] = gauge
            gauge.labels(**labels).set(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)

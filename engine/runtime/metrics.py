"""Prometheus metrics of one engine, in a registry of its own (several engines can share a process).

Per-signal series are kept to the ones an operator alerts on (state, consecutive failures);
latency and lateness are histograms per service and site, so 10,000 signals stay cheap.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
STATE_VALUE = {"unknown": -1, "down": 0, "up": 1}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.probe_results = Counter(
            "failover_engine_probe_results", "Probe results by outcome.",
            ["service", "site", "result"], registry=r)
        self.probe_latency = Histogram(
            "failover_engine_probe_latency_seconds", "Probe latency.", ["service", "site"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.signal_state = Gauge(
            "failover_engine_signal_state", "Signal health: 1 up, 0 down, -1 unknown.",
            ["service", "site", "signal"], registry=r)
        self.signal_failures = Gauge(
            "failover_engine_signal_consecutive_failures", "Consecutive failures of a signal.",
            ["service", "site", "signal"], registry=r)
        self.site_state = Gauge(
            "failover_engine_site_state", "Site health: 1 up, 0 down, -1 unknown.",
            ["service", "site"], registry=r)
        self.active_site = Gauge(
            "failover_engine_active_site", "1 for the site a service is active in.",
            ["service", "site"], registry=r)
        self.lateness = Histogram(
            "failover_engine_probe_lateness_seconds", "How late a check started against its due time.",
            buckets=_LATENESS_BUCKETS, registry=r)
        self.skipped = Counter(
            "failover_engine_probe_skipped", "Check slots skipped because the previous check still ran.",
            ["service"], registry=r)
        self.decisions = Counter(
            "failover_engine_decisions", "Decision changes by verdict.", ["service", "verdict"], registry=r)
        self.loop_tick = Gauge(
            "failover_engine_loop_last_tick_timestamp_seconds", "Wall time of the last decision loop tick.",
            registry=r)
        self.quorum = Gauge(
            "failover_engine_quorum", "1 while a majority of voters is reachable.", registry=r)
        self.failovers = Counter(
            "failover_engine_failovers", "Failover operations by service and result.", ["service", "result"],
            registry=r)
        self.journal_events = Counter(
            "failover_engine_journal_events", "Events written to the journal.", ["kind"], registry=r)

        self.step_seconds = Histogram(
            "failover_engine_runbook_step_duration_seconds", "Runbook step durations.",
            ["service", "kind", "step", "state"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r)
        self.api_requests = Counter(
            "failover_engine_api_requests", "API requests by method, route and status.",
            ["method", "route", "status"], registry=r)
        self.replication_lag = Gauge(
            "failover_engine_replication_lag_seconds", "Replication lag from the heartbeat (last known).",
            ["service"], registry=r)
        self._reconcile: dict[str, Gauge] = {}
        self.lease_granted = Gauge(
            "failover_engine_lease_granted", "1 while a majority of voters hears this engine (the self-fencing lease).",
            registry=r)
        self.breaker_open = Gauge(
            "failover_engine_breaker_open", "1 while the circuit breaker disarms automatic action.", ["service"],
            registry=r)
        self.self_fenced = Gauge(
            "failover_engine_self_fenced", "1 while this engine keeps its own database fenced (cut off).",
            ["service"], registry=r)
        self.drill_result = Gauge(
            "failover_engine_drill_last_result", "Last drill per kind: 1 passed, 0 failed.", ["service", "kind"],
            registry=r)
        self.drill_time = Gauge(
            "failover_engine_drill_last_timestamp_seconds", "When the last drill per kind finished.",
            ["service", "kind"], registry=r)
        self.drill_overdue = Gauge(
            "failover_engine_drill_overdue", "1 while a scheduled drill missed its window and none has run since.",
            ["service", "kind"], registry=r)
        self.drill_phase = Gauge(
            "failover_engine_drill_phase_seconds", "Phase durations of the last full drill.",
            ["service", "phase"], registry=r)
        self.drill_slo_missed = Gauge(
            "failover_engine_drill_phase_slo_missed", "1 when the phase missed its SLO in the last full drill.",
            ["service", "phase"], registry=r)
        self.peer_age = Gauge(
            "failover_engine_peer_last_seen_age_seconds", "Seconds since a peer's verdict was last heard.",
            ["peer"], registry=r)

        # -- issue 17 items 5 and 7: DNS drift and replication slot retention ----------------------
        self.dns_drift = Gauge(
            "failover_engine_dns_drift", "1 while a service's DNS records differ from the expected state.",
            ["service"], registry=r)
        self.slot_retained = Gauge(
            "failover_engine_replication_slot_retained_bytes",
            "WAL bytes a replication slot keeps on the current primary (pg_wal_lsn_diff from restart_lsn).",
            ["service", "site", "slot"], registry=r)

    def export_reconcile(self, samples: list[tuple[str, dict[str, str], float]]) -> None:
        """Reconciliation results as gauges: failover_engine_reconcile_{identical,differences,...}."""
        for name, labels, value in samples:
            full = "failover_engine_" + name.removeprefix("failover_")
            gauge = self._reconcile.get(full)
            if gauge is None:
                gauge = Gauge(full, f"Reconciliation: {name.removeprefix('failover_reconcile_')}.",
                              sorted(labels), registry=self.registry)
                self._reconcile[full] = gauge
            gauge.labels(**labels).set(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)

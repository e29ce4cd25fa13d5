"""The /metrics exposition, read back through Prometheus' own text parser: labels, build info, no _created
series, HELP texts a reader can act on, the helpers the runtime calls, and docs/metrics.md covering it all."""

from __future__ import annotations

import math
import platform
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engine import __version__
from engine.core.operations import Operation, OpState
from engine.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RECONCILE_SAMPLES = [  # the names actions.reconcile.result.ReconcileResult.gauges() exports
    ("failover_reconcile_identical", {"service": "shop"}, 0.0),
    ("failover_reconcile_seconds", {"service": "shop"}, 1.5),
    ("failover_reconcile_differences", {"service": "shop", "table": "orders"}, 2.0),
    ("failover_reconcile_in_flight_rows", {"service": "shop", "table": "orders"}, 0.0),
    ("failover_reconcile_compared", {"service": "shop", "table": "orders"}, 1.0),
    ("failover_reconcile_metric_ok", {"service": "shop", "metric": "revenue"}, 1.0),
]


def samples(metrics: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def exposed_names(metrics: Metrics) -> dict[str, str]:
    """Each family's name as a reader sees it in the exposition (counters with _total), with its HELP."""
    names = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names[family.name + suffix] = family.documentation
    return names


def full_metrics() -> Metrics:
    metrics = Metrics()
    metrics.export_reconcile(RECONCILE_SAMPLES)
    return metrics


def test_no_created_series_and_build_info_names_version_and_python() -> None:
    """No *_created series is exported; build_info carries the engine's and Python's versions."""
    metrics = Metrics()
    op = Operation("op-1", "shop", "failover", "gcp", "azure", 1, 2, "auto", state=OpState.DONE)
    metrics.operation_finished(op)
    text = metrics.render().decode()
    assert "_created" not in text
    assert samples(metrics)["failover_engine_build_info"] == [
        ({"version": __version__, "python": platform.python_version()}, 1.0)]


def test_failovers_carry_service_kind_trigger_and_result() -> None:
    """A finished operation is counted under its service, kind, trigger and result."""
    metrics = Metrics()
    metrics.operation_finished(Operation("op-1", "shop", "switchover", "gcp", "azure", 1, 2, "scheduled",
                                         state=OpState.DONE))
    metrics.operation_finished(Operation("op-2", "shop", "failover", "azure", "gcp", 2, 3, "auto",
                                         state=OpState.HALTED))
    assert sorted(samples(metrics)["failover_engine_failovers_total"], key=str) == sorted([
        ({"service": "shop", "kind": "switchover", "trigger": "scheduled", "result": "done"}, 1.0),
        ({"service": "shop", "kind": "failover", "trigger": "auto", "result": "halted"}, 1.0)], key=str)


def test_step_durations_and_the_consistency_verdict() -> None:
    """A step attempt lands in the histogram by result; the consistency step's loss verdict (engine.core.loss)
    sets data_loss_possible (0 only by proof) and the bound (+Inf when unknown)."""
    metrics = Metrics()
    metrics.observe_step("shop", "failover", "promote", {"state": "done", "duration_s": 0.3})
    metrics.observe_step("shop", "failover", "consistency", {
        "state": "done", "duration_s": 0.1, "data": {"kind": "bounded", "status": "possible loss <= 41.5 s",
                                                     "bound_s": 41.5}})
    got = samples(metrics)
    count = {tuple(sorted(labels.items())): value
             for labels, value in got["failover_engine_runbook_step_duration_seconds_count"]}
    assert count[(("kind", "failover"), ("result", "done"), ("service", "shop"), ("step", "promote"))] == 1
    assert got["failover_engine_data_loss_possible"] == [({"service": "shop"}, 1.0)]
    assert got["failover_engine_data_loss_window_seconds"] == [({"service": "shop"}, 41.5)]
    metrics.observe_step("shop", "failover", "consistency", {"state": "done", "duration_s": 0.1,
                                                            "data": {"kind": "unknown", "status": "unknown",
                                                                     "bound_s": None}})
    assert samples(metrics)["failover_engine_data_loss_window_seconds"] == [({"service": "shop"}, math.inf)]
    metrics.observe_step("shop", "failover", "consistency", {"state": "done", "duration_s": 0.1,
                                                            "data": {"kind": "zero_by_proof", "status": "ok",
                                                                     "bound_s": 0.0}})
    got = samples(metrics)
    assert got["failover_engine_data_loss_possible"] == [({"service": "shop"}, 0.0)]
    assert got["failover_engine_data_loss_window_seconds"] == [({"service": "shop"}, 0.0)]


def test_operation_gauges_follow_the_services_operation() -> None:
    """A running operation shows its age from its start (or retry); a halted one sets runbook_halted."""
    metrics = Metrics()
    metrics.describe_service("shop", rpo=30, rto_slo=300, runbook_deadline=900)
    op = Operation("op-1", "shop", "failover", "gcp", "azure", 1, 2, "auto", created_at=1000.0)
    metrics.observe_operation("shop", op, 1100.0)
    assert samples(metrics)["failover_engine_runbook_running_seconds"] == [({"service": "shop"}, 100.0)]
    op.evidence["deadline_from"] = 1090.0  # an operator's retry restarts the deadline
    metrics.observe_operation("shop", op, 1100.0)
    assert samples(metrics)["failover_engine_runbook_running_seconds"] == [({"service": "shop"}, 10.0)]
    op.state = OpState.HALTED
    metrics.observe_operation("shop", op, 1200.0)
    got = samples(metrics)
    assert got["failover_engine_runbook_halted"] == [({"service": "shop"}, 1.0)]
    assert got["failover_engine_runbook_running_seconds"] == [({"service": "shop"}, 0.0)]
    metrics.observe_operation("shop", None, 1300.0)
    assert samples(metrics)["failover_engine_runbook_halted"] == [({"service": "shop"}, 0.0)]
    assert samples(metrics)["failover_engine_rpo_seconds"] == [({"service": "shop"}, 30.0)]


def test_unmeasured_gauges_read_nan_and_the_journal_is_read_at_scrape_time() -> None:
    """Quorum, lease, last tick and journal health read NaN until measured; journal health follows the journal."""
    metrics = Metrics()
    got = samples(metrics)
    for name in ("failover_engine_quorum", "failover_engine_lease_granted",
                 "failover_engine_loop_last_tick_timestamp_seconds", "failover_engine_journal_writable"):
        assert math.isnan(got[name][0][1]), name
    state = {"writable": True}
    metrics.watch_journal(lambda: state["writable"])
    assert samples(metrics)["failover_engine_journal_writable"] == [({}, 1.0)]
    state["writable"] = False
    assert samples(metrics)["failover_engine_journal_writable"] == [({}, 0.0)]


def test_help_texts_say_what_a_reader_needs() -> None:
    """Every HELP is a sentence of several words, distinct from the others, not a restatement of the name."""
    helps = exposed_names(full_metrics())
    for name, text in helps.items():
        words = text.split()
        assert len(words) >= 5, f"{name}: HELP too short: {text!r}"
        assert text.endswith((".", ")")), f"{name}: HELP is not a sentence: {text!r}"
    regular = [t for n, t in helps.items() if "reconcile" not in n]
    assert len(set(regular)) == len(regular), "two metrics share a HELP text"


def test_docs_metrics_lists_every_metric_and_nothing_else() -> None:
    """docs/metrics.md names every exported metric, and every metric it names is exported."""
    doc = (ROOT / "docs" / "metrics.md").read_text()
    exported = set(exposed_names(full_metrics()))
    documented = set(re.findall(r"^\| `(failover_engine_[a-z_]+)`", doc, flags=re.MULTILINE))
    assert exported - documented == set(), "exported but not in docs/metrics.md"
    assert documented - exported == set(), "in docs/metrics.md but not exported"

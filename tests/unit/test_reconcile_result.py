"""The reconciliation result as the journal, the status API and the CLI see it."""

from __future__ import annotations

from actions.reconcile.pg_side import hash_mode
from actions.reconcile.plan import RowDiff
from actions.reconcile.result import MetricResult, ReconcileResult, TableResult


def result(*tables: TableResult, metrics: tuple[MetricResult, ...] = ()) -> ReconcileResult:
    return ReconcileResult("api", "gcp", "azure", "native", None, 0.0, 1.25, tables, metrics)


def test_differences_sentence_and_listing() -> None:
    """The sentence counts differing rows per table; the listing shows each row on both sides."""
    orders = TableResult("orders", "differences", rows_primary=10, rows_standby=9,
                         differences=(RowDiff((7,), "missing_on_standby"), RowDiff((8,), "changed")),
                         difference_count=3, samples={(7,): ("(7,a)", None), (8,): ("(8,b)", "(8,c)")})
    res = result(orders, metrics=(MetricResult("total", False, "gcp 5 vs azure 4 (difference 1 > tolerance 0)"),))
    assert res.sentence == ("gcp vs azure: 3 differing rows (orders 3); "
                            "metric total: gcp 5 vs azure 4 (difference 1 > tolerance 0)")
    assert res.render().splitlines()[2:] == [
        "  table orders: differences (10 rows on gcp, 9 on azure)",
        "    key 7: missing on azure",
        "      gcp: (7,a)",
        "    key 8: changed",
        "      gcp: (8,b)",
        "      azure: (8,c)",
        "    ... and 1 more",
        "  metric total: MISMATCH: gcp 5 vs azure 4 (difference 1 > tolerance 0)"]
    data = res.to_dict()
    assert data["identical"] is False and data["differences_found"] == 3
    assert data["tables"][0]["differences"][0] == {"key": 7, "kind": "missing_on_standby", "in_flight": False}


def test_gauges_for_metrics() -> None:
    """Each table and business metric yields a gauge sample labelled with the service."""
    res = result(TableResult("t", "differences", difference_count=2, in_flight=1),
                 metrics=(MetricResult("total", True, "1 vs 1"),))
    gauges = {(name, tuple(sorted(labels.items()))): value for name, labels, value in res.gauges()}
    assert gauges[("failover_reconcile_differences", (("service", "api"), ("table", "t")))] == 2.0
    assert gauges[("failover_reconcile_in_flight_rows", (("service", "api"), ("table", "t")))] == 1.0
    assert gauges[("failover_reconcile_metric_ok", (("metric", "total"), ("service", "api")))] == 1.0
    assert gauges[("failover_reconcile_identical", (("service", "api"),))] == 0.0


def test_refused_tables_are_never_identical() -> None:
    """A table that could not be compared keeps the run from being 'identical' and is named."""
    res = result(TableResult("loose", "refused", "table loose on gcp has no primary key: rows cannot be matched"))
    assert not res.identical
    assert res.sentence == ("gcp vs azure: not compared: table loose on gcp has no primary key: "
                            "rows cannot be matched")


def test_clean_run_and_failed_run() -> None:
    """A clean run says the sites agree; a run that could not connect says why."""
    clean = result(TableResult("t", "identical", rows_primary=5, rows_standby=5))
    assert clean.identical and clean.sentence == "gcp and azure agree: 1 table, 5 rows, 0 metrics"
    failed = ReconcileResult("api", "gcp", "azure", "-", None, 0.0, 0.1, error="azure unreachable: connect refused")
    assert not failed.identical and failed.sentence == "reconciliation failed: azure unreachable: connect refused"


def test_hash_mode_is_native_only_between_equal_majors() -> None:
    """Native hashes need the same major version (>= 14); otherwise the portable md5 form is used."""
    assert hash_mode(15, 15) == "native"
    assert hash_mode(15, 16) == "portable"
    assert hash_mode(13, 13) == "portable"
    assert hash_mode(15, 15, "portable") == "portable"


def test_exit_codes() -> None:
    """0 only when every table was compared and agrees; 1 for differences; 2 for any error or refusal."""
    assert result(TableResult("t", "identical")).exit_code == 0
    assert result(TableResult("t", "differences", difference_count=1)).exit_code == 1
    assert result(TableResult("t", "identical", in_flight=1)).exit_code == 1
    assert result(TableResult("t", "refused", "no key")).exit_code == 2
    assert result(TableResult("t", "differences", difference_count=1), TableResult("u", "error", "x")).exit_code == 2
    assert result(metrics=(MetricResult("m", False, "query failed on gcp: boom", error=True),)).exit_code == 2
    failed = ReconcileResult("api", "gcp", "azure", "-", None, 0.0, 0.1, error="azure unreachable")
    assert failed.exit_code == 2


def test_in_flight_rows_are_named_by_key() -> None:
    """The sentence and the listing name each row still in flight by its table and key."""
    t = TableResult("orders", "identical", rows_primary=3, rows_standby=3, in_flight=2,
                    in_flight_rows=(RowDiff((5,), "changed", True), RowDiff((1, "x"), "missing_on_standby", True)))
    res = result(t)
    assert res.sentence == ("gcp and azure agree: 1 table, 3 rows, 0 metrics "
                            "(2 rows still in flight: orders 5, orders (1, 'x'))")
    assert "    key (1, 'x'): missing on azure (in flight)" in res.render().splitlines()
    assert res.to_dict()["tables"][0]["in_flight_rows"][1]["key"] == [1, "x"]


def test_causes_after_a_failover_are_counted_and_said() -> None:
    """After a failover each difference carries its cause; the sentence counts lost, diverged and later rows."""
    t = TableResult("orders", "differences", difference_count=3,
                    differences=(RowDiff((1,), "missing_on_primary", cause="lost"),
                                 RowDiff((2,), "changed", cause="diverged"),
                                 RowDiff((3,), "missing_on_standby", cause="after_promotion")))
    res = result(t)
    assert res.causes == {"lost": 1, "after_promotion": 1, "diverged": 1}
    assert res.sentence == ("gcp vs azure: 3 differing rows (orders 3): 1 lost, 1 diverged, "
                            "1 written after promotion")
    assert "    key 1: missing on gcp [lost]" in res.render().splitlines()

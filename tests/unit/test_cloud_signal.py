"""Judging cloud metric points: comparisons, staleness, several series and bounded retries."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config.cloud import CloudRetry, Condition
from probes.cloud_signal import (
    Point,
    RetriesExhausted,
    format_value,
    judge,
    judge_series,
    short_message,
    stale_reason,
    with_retries,
)

NOW = 1_800_000_000.0
LAG = Condition(op="<=", threshold=30)


@pytest.mark.parametrize(("op", "value", "ok", "reason"), [
    ("<=", 12.0, True, "lag 12.0 <= 30"),
    ("<=", 30.0, True, "lag 30.0 <= 30"),
    ("<=", 42.0, False, "lag 42.0 > 30"),
    ("<", 30.0, False, "lag 30.0 >= 30"),
    (">", 31.0, True, "lag 31.0 > 30"),
    (">=", 29.5, False, "lag 29.5 < 30"),
    ("==", 30.0, True, "lag 30.0 == 30"),
    ("==", 1.0, False, "lag 1.0 != 30"),
    ("!=", 30.0, False, "lag 30.0 == 30"),
])
def test_judge_table(op: str, value: float, ok: bool, reason: str) -> None:
    """A comparison passes or fails and the reason shows the relation that actually holds."""
    assert judge("lag", value, Condition.model_validate({"op": op, "threshold": 30})) == (ok, reason)


def test_nan_always_fails() -> None:
    """NaN never meets a condition, whatever the operator."""
    for op in ("<", "<=", ">", ">=", "==", "!="):
        ok, _ = judge("x", math.nan, Condition.model_validate({"op": op, "threshold": 0}))
        assert not ok


@given(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
       st.floats(allow_nan=False, allow_infinity=False, width=32),
       st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_judge_matches_python_comparison(op: str, value: float, threshold: float) -> None:
    """For any finite numbers the verdict equals Python's own comparison."""
    expected = {"<": value < threshold, "<=": value <= threshold, ">": value > threshold,
                ">=": value >= threshold, "==": value == threshold, "!=": value != threshold}[op]
    ok, _ = judge("v", value, Condition.model_validate({"op": op, "threshold": threshold}))
    assert ok is expected


def test_format_value_keeps_a_decimal_point() -> None:
    """Values print as floats rounded to six places: 42.0, 0.125, 0.333333."""
    assert [format_value(v) for v in (42, 0.125, 1 / 3)] == ["42.0", "0.125", "0.333333"]


def test_no_points_is_stale_for_the_window() -> None:
    """No point at all fails as stale for the whole window."""
    assert judge_series([], now=NOW, label="lag", condition=LAG, stale_after=120, window=300) == (
        False, "no data for 300s (stale)", None, {"series": 0})


def test_old_point_is_stale_even_if_its_value_is_fine() -> None:
    """A point older than the staleness window fails with its age."""
    ok, reason, value, _ = judge_series([Point(1.0, NOW - 130, "a")], now=NOW, label="lag", condition=LAG,
                                        stale_after=120, window=300)
    assert (ok, reason, value) == (False, stale_reason(130), None)
    assert reason == "no data for 130s (stale)"


def test_several_series_report_the_worst_passing_value() -> None:
    """When every series passes, the value reported is the one nearest the threshold."""
    points = [Point(3.0, NOW - 10, "a"), Point(25.0, NOW - 10, "b"), Point(9.0, NOW - 10, "c")]
    ok, reason, value, details = judge_series(points, now=NOW, label="lag", condition=LAG,
                                              stale_after=120, window=300)
    assert (ok, reason, value) == (True, "lag 25.0 <= 30 (3 series)", 25.0)
    assert details["series"] == 3


def test_missing_series_fail_as_stale_and_are_counted() -> None:
    """An expected series with no point fails as stale; the reason names it and counts failures."""
    ok, reason, _, details = judge_series([Point(3.0, NOW - 10, "a")], now=NOW, label="lag", condition=LAG,
                                          stale_after=120, window=300, missing=["b"])
    assert not ok
    assert reason == "no data for 300s (stale) (1 of 2 series, b)"
    assert details["failed"] == 1


@pytest.mark.parametrize(("raw", "expected"), [
    ("  denied\n  second line", "denied"),
    ({"detail": "nested"}, "{'detail': 'nested'}"),
    (["a", "b"], "['a', 'b']"),
    (403, "403"),
    (None, ""),
    ("", ""),
    ("x" * 200, "x" * 159 + "…"),
])
def test_short_message_accepts_any_value(raw: object, expected: str) -> None:
    """A server message that is not a string (nested JSON, a number, null) is shown, never raised on."""
    assert short_message(raw) == expected


class Flaky:
    """A call that raises the given errors in turn, then returns ``done``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class Pauses:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def transient(exc: BaseException) -> str | None:
    return "unavailable" if isinstance(exc, ConnectionError) else None


async def test_retries_stop_after_the_configured_attempts_with_capped_backoff() -> None:
    """Transient errors are retried ``attempts`` times with doubling pauses capped at ``max_backoff``."""
    call, pauses = Flaky(*[ConnectionError()] * 5), Pauses()
    retry = CloudRetry(attempts=4, backoff=0.5, max_backoff=1.5)
    with pytest.raises(RetriesExhausted) as info:
        await with_retries(call, retry=retry, transient=transient, sleep=pauses)
    assert str(info.value) == "unavailable after 4 attempts"
    assert call.calls == 4
    assert pauses.pauses == [0.5, 1.0, 1.5]


async def test_success_after_a_transient_error() -> None:
    """A transient error followed by success returns the result."""
    call = Flaky(ConnectionError())
    assert await with_retries(call, retry=CloudRetry(), transient=transient, sleep=Pauses()) == "done"
    assert call.calls == 2


async def test_other_errors_propagate_at_once() -> None:
    """An error the classifier does not name is raised on the first attempt."""
    call = Flaky(PermissionError("denied"))
    with pytest.raises(PermissionError):
        await with_retries(call, retry=CloudRetry(attempts=5), transient=transient, sleep=Pauses())
    assert call.calls == 1


async def test_one_attempt_means_no_retry() -> None:
    """With ``attempts: 1`` a transient error is reported without any pause."""
    pauses = Pauses()
    with pytest.raises(RetriesExhausted, match=r"^unavailable after 1 attempt$"):
        await with_retries(Flaky(ConnectionError()), retry=CloudRetry(attempts=1), transient=transient,
                           sleep=pauses)
    assert pauses.pauses == []


def test_gcp_typed_values_and_the_newest_point() -> None:
    """Double, int64, bool and distribution points read as numbers; the newest by end time wins."""
    from google.cloud import monitoring_v3

    from probes.gcp_monitoring import newest_point, typed_value

    tv = monitoring_v3.TypedValue
    assert typed_value(tv(double_value=0.5)) == 0.5
    assert typed_value(tv(int64_value=7)) == 7.0
    assert typed_value(tv(bool_value=False)) == 0.0
    assert typed_value(tv(distribution_value={"count": 4, "mean": 2.5})) == 2.5
    assert typed_value(tv(distribution_value={"count": 0})) is None
    assert typed_value(tv(string_value="up")) is None
    series = monitoring_v3.TimeSeries(
        metric={"type": "m", "labels": {"site": "gcp"}},
        points=[{"interval": {"end_time": {"seconds": 100}}, "value": {"double_value": 1.0}},
                {"interval": {"end_time": {"seconds": 160}}, "value": {"string_value": "x"}},
                {"interval": {"end_time": {"seconds": 130}}, "value": {"double_value": 2.0}}])
    assert newest_point(series) == Point(2.0, 130.0, "site=gcp")

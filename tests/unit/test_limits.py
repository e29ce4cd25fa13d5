"""Bounds shared by the HTTP face and the peer exchange: JSON depth measured on bytes, log lines on a budget."""

from __future__ import annotations

from typing import Any

from engine.core.limits import LogBudget, json_depth
from engine.http.guards import QuietLog, authorization_problem


def test_json_depth_counts_brackets_outside_strings() -> None:
    """Brackets inside strings (escaped quotes too) do not count; the count stops past the limit."""
    assert json_depth(b'{"a": [1, {"b": "[[[\\"[["}]}', 10) == 3
    assert json_depth(b"[]", 10) == 1 and json_depth(b"", 10) == 0
    assert json_depth(b"[" * 100_000, 32) == 33


def test_log_budget_lets_a_burst_through_then_counts() -> None:
    """Five lines a minute per key; the first line of the next minute says how many were held back."""
    budget = LogBudget(burst=5, period=60.0)
    assert [budget.take("x", 0.0) for _ in range(5)] == [0] * 5
    assert [budget.take("x", 1.0) for _ in range(3)] == [None] * 3
    assert budget.take("y", 1.0) == 0  # another kind has its own budget
    assert budget.take("x", 60.0) == 3
    assert budget.take("x", 61.0) == 0


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def exception(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def test_handler_failures_are_logged_on_a_budget() -> None:
    """A hundred failures on one path in a minute give five tracebacks, then one line naming the rest."""
    recorder = Recorder()
    quiet = QuietLog(recorder, burst=5, period=60.0)
    for i in range(100):
        quiet.failure("/v1/status", now=i * 0.1)
    assert len(recorder.lines) == 5
    quiet.failure("/v1/status", now=61.0)
    assert recorder.lines[-1] == ("api handler failed", {"path": "/v1/status", "held_back": 95})


def test_authorization_headers_must_be_printable_ascii() -> None:
    """Non-ASCII, lone surrogates (invalid UTF-8 as aiohttp hands it on), controls and huge values are refused."""
    assert authorization_problem(None) is None and authorization_problem("Bearer abc") is None
    for bad in ("Bearer jalapeño", "Bearer \udcff", "Bearer \x00", "Bearer " + "a" * 5000):
        assert authorization_problem(bad) is not None

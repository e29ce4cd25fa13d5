"""CLI flags that take a span of time accept durations (10m, 1h30m) as well as seconds."""

from __future__ import annotations

import argparse

import pytest

from engine.cli import build_parser
from engine.cli.client import _positive


@pytest.mark.parametrize(("raw", "seconds"), [("10m", 600.0), ("1h", 3600.0), ("1h30m", 5400.0), ("250ms", 0.25),
                                              ("90", 90.0), ("2.5", 2.5), ("1d", 86400.0)])
def test_durations_and_seconds_are_accepted(raw: str, seconds: float) -> None:
    """Each form gives its seconds."""
    assert _positive(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "0", "-5", "10x", "m10", "1e7", "10m junk"])
def test_bad_spans_are_refused_with_the_forms_named(raw: str) -> None:
    """Zero, negative, unknown units and trailing text are refused."""
    with pytest.raises(argparse.ArgumentTypeError):
        _positive(raw)


def test_pause_ttl_takes_ten_minutes() -> None:
    """`pause --ttl 10m` parses to 600 seconds (it was refused as not a number)."""
    args = build_parser().parse_args(["pause", "shop", "--reason", "maintenance", "--ttl", "10m"])
    assert args.ttl == 600.0 and args.replace is False

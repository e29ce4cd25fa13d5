"""Replication slot retention: the alert size in the config and the once-per-crossing rule (engine.core.retention)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.config.database import DatabaseConfig
from engine.core.retention import crossings

SITES = {"gcp": {"host": "h", "dbname": "d", "user": "u"}, "azure": {"host": "h", "dbname": "d", "user": "u"}}


@pytest.mark.parametrize(("given", "size"), [("1GiB", 1024**3), ("512MB", 512 * 1000**2), ("64KiB", 65536),
                                             (4096, 4096), ("1.5MiB", 1572864)])
def test_the_alert_size_reads_units(given: object, size: int) -> None:
    """Sizes with binary or decimal units, or bytes as a number, become bytes."""
    assert DatabaseConfig.model_validate({"sites": SITES, "slot_retained_alert": given}).slot_retained_alert == size


def test_the_default_alert_size_is_one_gibibyte() -> None:
    """Without a setting the alert fires past 1 GiB."""
    assert DatabaseConfig.model_validate({"sites": SITES}).slot_retained_alert == 1024**3


@pytest.mark.parametrize("given", ["lots", "1XB", float("inf"), 10, "2PiB", True, -5])
def test_a_bad_alert_size_is_one_clear_error_on_its_path(given: object) -> None:
    """Unknown units, infinities and sizes out of 1 KiB..1 PiB are refused at slot_retained_alert."""
    with pytest.raises(ValidationError) as err:
        DatabaseConfig.model_validate({"sites": SITES, "slot_retained_alert": given})
    assert [e["loc"] for e in err.value.errors()] == [("slot_retained_alert",)]


def test_a_slot_crossing_the_limit_alerts_once_and_clears_once() -> None:
    """Over the limit: raised once; still over: nothing; back under: cleared once."""
    first = crossings(frozenset(), {"sub": 2000, "other": 10}, 1000)
    assert (first.raised, first.cleared, first.over) == (("sub",), (), frozenset({"sub"}))
    still = crossings(first.over, {"sub": 5000, "other": 10}, 1000)
    assert (still.raised, still.cleared) == ((), ())
    back = crossings(still.over, {"sub": 999, "other": 10}, 1000)
    assert (back.raised, back.cleared, back.over) == ((), ("sub",), frozenset())


def test_a_dropped_slot_clears_and_an_unknown_size_changes_nothing() -> None:
    """A slot that vanished clears its alert; a slot whose size is unknown keeps its state."""
    assert crossings(frozenset({"sub"}), {}, 1000).cleared == ("sub",)
    kept = crossings(frozenset({"sub"}), {"sub": None}, 1000)
    assert (kept.raised, kept.cleared, kept.over) == ((), (), frozenset({"sub"}))
    assert crossings(frozenset(), {"sub": None}, 1000).over == frozenset()

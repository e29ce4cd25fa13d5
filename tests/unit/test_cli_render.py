"""The CLI's status text: the last reconciliation reads as a sentence, not a dict."""

from __future__ import annotations

from engine.cli.render import reconciliation_sentence


def test_a_reconciliation_is_one_sentence_with_its_pair_time_and_finding() -> None:
    """When, which pair, how long and what it found, in one sentence ending with a full stop."""
    line = reconciliation_sentence({"sentence": "3 tables identical (12,000 rows)", "identical": True,
                                    "at": 1_800_000_000.0, "seconds": 0.42, "primary": "gcp", "standby": "azure"})
    assert line == ("Last reconciliation of gcp (primary) against azure at 2027-01-15 08:00:00 UTC, took 420ms: "
                    "3 tables identical (12,000 rows).")


def test_without_a_sentence_it_says_whether_the_databases_matched() -> None:
    """An older record with only ``identical`` still reads as words."""
    assert reconciliation_sentence({"identical": False}) == "Last reconciliation: the databases differed."

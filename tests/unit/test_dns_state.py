"""The pure part of DNS shifts: the epoch record's text, site matching and the planned state."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actions.dns.errors import DnsConfigError
from actions.dns.state import (
    DnsState,
    Epoch,
    RecordState,
    derive_op,
    format_epoch,
    is_applied,
    parse_epoch,
    planned_state,
    resumed_state,
    site_of,
)
from engine.config.dns import RecordConfig

APP = RecordConfig.model_validate(
    {"name": "app", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.11", "198.51.100.10"]}})
API = RecordConfig.model_validate(
    {"name": "api", "type": "AAAA", "ttl": "30s",
     "targets": {"gcp": ["2001:db8::10"], "azure": ["2001:db8:1::10"]}})
CONFIGS = {"app.example.test.": APP, "api.example.test.": API}


def state(app_site: str = "gcp", api_site: str = "gcp", epoch: int = 4) -> DnsState:
    records = (RecordState("app.example.test.", "A", 60, tuple(APP.targets[app_site]), app_site),
               RecordState("api.example.test.", "AAAA", 60, tuple(API.targets[api_site]), api_site))
    text = format_epoch(epoch, app_site, "abc")
    return DnsState("example.test", records, Epoch(epoch, app_site, "abc", text),
                    "_failover-epoch.app.example.test.")


@pytest.mark.parametrize(("text", "expected"), [
    (None, Epoch(0)),
    ("epoch=3 site=azure op=7f", Epoch(3, "azure", "7f", "epoch=3 site=azure op=7f")),
    ("site=gcp epoch=12", Epoch(12, "gcp", None, "site=gcp epoch=12")),
    ("epoch=0", Epoch(0, None, None, "epoch=0")),
])
def test_parse_epoch(text: str | None, expected: Epoch) -> None:
    """The epoch TXT parses into number, site and op in any order; no record means epoch 0."""
    assert parse_epoch(text, "_failover-epoch.app.example.test.") == expected


@pytest.mark.parametrize("text", ["hello", "epoch=", "epoch=-1 site=gcp", "epoch=two"])
def test_unreadable_epoch_is_refused(text: str) -> None:
    """Text without a whole non-negative epoch number is a DnsConfigError naming the record."""
    with pytest.raises(DnsConfigError, match=r"epoch record _failover-epoch.app.example.test holds"):
        parse_epoch(text, "_failover-epoch.app.example.test.")


@given(number=st.integers(min_value=0, max_value=2**63),
       site=st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
       op=st.from_regex(r"[0-9a-f]{12}", fullmatch=True))
def test_epoch_text_round_trips(number: int, site: str, op: str) -> None:
    """Whatever epoch, site and op are written, parsing the text gives them back."""
    text = format_epoch(number, site, op)
    assert parse_epoch(text, "e.") == Epoch(number, site, op, text)


def test_site_of_needs_the_exact_value_set() -> None:
    """Values point to a site only when they equal its configured set, in any order."""
    assert site_of(["198.51.100.10", "198.51.100.11"], APP.targets) == "azure"
    assert site_of(["198.51.100.10"], APP.targets) == "unknown"
    assert site_of([], APP.targets) == "unknown"


def test_state_site_is_mixed_or_unknown_when_records_disagree() -> None:
    """A state points to one site only if every record does; otherwise mixed, or unknown if none match."""
    assert state().site == "gcp"
    assert state("gcp", "azure").site == "mixed"
    unknown = RecordState("app.example.test.", "A", 60, ("10.0.0.1",), "unknown")
    assert DnsState("z", (unknown,), Epoch(0), "e.").site == "unknown"
    assert state().describe() == ("epoch 4, gcp (app.example.test A 192.0.2.10; "
                                  "api.example.test AAAA 2001:db8::10)")


def test_planned_state_takes_target_values_ttls_and_next_epoch() -> None:
    """The planned state has the target site's values and TTLs and the new epoch text with the op."""
    planned = planned_state(state(), CONFIGS, "azure", 5, "op1")
    assert [(r.values, r.ttl, r.site) for r in planned.records] == [
        (("198.51.100.10", "198.51.100.11"), 60, "azure"), (("2001:db8:1::10",), 30, "azure")]
    assert planned.epoch == Epoch(5, "azure", "op1", "epoch=5 site=azure op=op1")
    assert planned.site == "azure"


@pytest.mark.parametrize(("site", "epoch", "message"), [
    ("azure", 4, "new epoch 4 must be exactly one more than the epoch read \\(4\\)"),
    ("azure", 6, "new epoch 6 must be exactly one more than the epoch read \\(4\\)"),
    ("azure", 3, "new epoch 3 must be exactly one more"),
    ("aws", 5, "'aws' is not a site of app.example.test."),
])
def test_planned_state_refuses_caller_errors(site: str, epoch: int, message: str) -> None:
    """An epoch that is not the next one or an unknown site is a ValueError, not a shift."""
    with pytest.raises(ValueError, match=message):
        planned_state(state(), CONFIGS, site, epoch, "op1")


def test_derived_op_is_stable_per_salt_and_plan() -> None:
    """The same salt and (service, epoch, target) give the same op; any difference gives another."""
    op = derive_op("salt", "shop", 5, "azure")
    assert op == derive_op("salt", "shop", 5, "azure") and len(op) == 12
    assert len({op, derive_op("other", "shop", 5, "azure"), derive_op("salt", "shop", 6, "azure"),
                derive_op("salt", "shop", 5, "gcp"), derive_op("salt", "api", 5, "azure")}) == 5


def test_is_applied_needs_our_op_epoch_and_values() -> None:
    """A read is our planned state only with the same epoch, site, op and record values."""
    planned = planned_state(state(), CONFIGS, "azure", 5, "op1")
    assert is_applied(planned, planned)
    assert not is_applied(replace(planned, epoch=replace(planned.epoch, op="rival")), planned)
    hand_edited = replace(planned, records=(replace(planned.records[0], values=("203.0.113.9",)),
                                            planned.records[1]))
    assert not is_applied(hand_edited, planned)
    assert not is_applied(state(), planned)


def test_resumed_state_only_for_our_own_epoch() -> None:
    """A state already at the new epoch by our op is resumable; at that epoch by another op it is not."""
    written = planned_state(state(), CONFIGS, "azure", 5, "op1")
    assert resumed_state(written, CONFIGS, "azure", 5, "op1") == written
    assert resumed_state(written, CONFIGS, "azure", 5, "op2") is None
    assert resumed_state(state(), CONFIGS, "azure", 5, "op1") is None

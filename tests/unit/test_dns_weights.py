"""Weights as the providers read and compare them (actions.dns.weights): normalised shares, records that must
agree, the conflict that names the record that moved, and a refused write read back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actions.dns.errors import DnsConfigError, DnsConflict
from actions.dns.weights import Weights, agreed, refused, unmoved, weights_of

APP, WWW = "app.example.com.", "www.example.com."


@given(st.dictionaries(st.sampled_from(["gcp", "azure", "aws"]), st.floats(0, 255), min_size=1))
def test_any_raw_weights_become_whole_percents_summing_to_100(raw: dict[str, float]) -> None:
    """Weights on any scale are whole percents per site summing to 100 (all 0 when every weight is 0)."""
    shares = weights_of(raw, 1).as_dict()
    assert set(shares) == set(raw) and all(0 <= v <= 100 for v in shares.values())
    assert sum(shares.values()) == (100 if sum(raw.values()) > 0 else 0)


def test_records_with_the_same_shares_agree_on_any_scale() -> None:
    """Two records agree when their shares are equal, whatever the scale; else the error names both."""
    assert agreed({APP: {"gcp": 10, "azure": 90}, WWW: {"gcp": 1.0, "azure": 9.0}}) == {"gcp": 10, "azure": 90}
    with pytest.raises(DnsConfigError, match=r"app.example.com has azure 90 %, gcp 10 %, www.example.com azure 60"):
        agreed({APP: {"gcp": 10, "azure": 90}, WWW: {"gcp": 40, "azure": 60}})


def test_a_record_whose_weights_moved_is_a_conflict_naming_it() -> None:
    """Weights as expected pass; one record edited (or another epoch) is DnsConflict naming the record."""
    expected = weights_of({"gcp": 25, "azure": 75}, 2)
    unmoved("weighted sets", expected, {APP: {"gcp": 25, "azure": 75}, WWW: {"gcp": 1, "azure": 3}}, 2)
    with pytest.raises(DnsConflict) as info:
        unmoved("weighted sets", expected, {APP: {"gcp": 25, "azure": 75}, WWW: {"gcp": 25, "azure": 60}}, 2)
    assert info.value.found.startswith("www.example.com azure 71 %, gcp 29 %")
    with pytest.raises(DnsConflict, match="epoch 3"):
        unmoved("weighted sets", expected, {APP: {"gcp": 25, "azure": 75}}, 3)


async def test_a_refused_write_is_a_conflict_with_what_a_read_back_finds() -> None:
    """The read-back's weights are the conflict's ``found``; a read-back that fails is still a conflict."""
    expected = weights_of({"gcp": 25, "azure": 75}, 2)

    async def read() -> Weights:
        return weights_of({"gcp": 30, "azure": 70}, 2)

    async def disagreeing() -> Weights:
        raise DnsConfigError("the weighted records disagree: ...")

    moved = await refused("sets", expected, read)
    assert isinstance(moved, DnsConflict) and moved.found == "azure 70 %, gcp 30 % (epoch 2)"
    found = await refused("sets", expected, disagreeing)
    assert isinstance(found, DnsConflict) and "disagree" in found.found

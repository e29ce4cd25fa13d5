"""The claim two engines exchange before a runbook starts (engine.core.claims): pure, milliseconds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.core.claims import ClaimMessage, Held, answer, precedes, refusal_sentence


def claim(op: str = "shop-e2-aaaaaa", sender: str = "engine-gcp", created_at: float = 100.0,
          expires_at: float = 400.0) -> ClaimMessage:
    return ClaimMessage(action="claim", sender=sender, service="shop", operation=op, kind="failover",
                        target="azure", epoch_to=2, created_at=created_at, expires_at=expires_at, at=created_at)


def held(op: str = "shop-e2-bbbbbb", engine: str = "engine-azure", created_at: float = 100.0, *,
         claiming: bool = False, foreign: bool = False, expires_at: float = float("inf")) -> Held:
    return Held(op, engine, "switchover", "azure", 2, created_at, claiming=claiming, foreign=foreign,
                expires_at=expires_at)


def test_nothing_held_is_granted() -> None:
    """A claim on a service this engine holds nothing for is granted."""
    got = answer(claim(), None, 150.0)
    assert got.granted and not got.yield_local and got.winner is None


def test_the_same_operation_again_is_granted() -> None:
    """A repeated claim (a retry after a lost answer) is granted, not refused as a rival."""
    assert answer(claim(op="x-1"), held(op="x-1", foreign=True), 150.0).granted


def test_an_operation_under_way_refuses_naming_itself() -> None:
    """A committed local operation (past its claim round) refuses, and the answer names it."""
    got = answer(claim(created_at=1.0), held(claiming=False, created_at=200.0), 150.0)
    assert not got.granted and got.winner is not None and got.winner["id"] == "shop-e2-bbbbbb"
    assert "under way" in got.reason


def test_a_granted_foreign_claim_refuses_until_it_expires() -> None:
    """A claim granted to another engine refuses rivals while live, and stops counting once expired."""
    rival = held(op="shop-e2-cccccc", engine="engine-aws", foreign=True, expires_at=300.0)
    assert not answer(claim(), rival, 299.0).granted
    assert answer(claim(), rival, 300.0).granted


def test_two_claiming_operations_one_wins_on_both_sides() -> None:
    """Each side decides from the same two claims: exactly one grants (and yields), the other refuses."""
    gcp = claim(op="shop-e2-gcp000", sender="engine-gcp", created_at=100.0)
    azure = claim(op="shop-e2-azure0", sender="engine-azure", created_at=100.0)
    as_held = {m.sender: held(op=m.operation, engine=m.sender, created_at=m.created_at, claiming=True)
               for m in (gcp, azure)}
    at_azure = answer(gcp, as_held["engine-azure"], 101.0)  # gcp's claim reaches azure
    at_gcp = answer(azure, as_held["engine-gcp"], 101.0)
    # the same time: the smaller engine id (engine-azure) wins on both sides
    assert at_gcp.granted and at_gcp.yield_local
    assert not at_azure.granted and at_azure.winner is not None and at_azure.winner["id"] == azure.operation


@given(t1=st.floats(0, 1e6), t2=st.floats(0, 1e6), e1=st.sampled_from(["engine-a", "engine-b", "engine-c"]),
       e2=st.sampled_from(["engine-a", "engine-b", "engine-c"]), o1=st.text("abc", min_size=1, max_size=3),
       o2=st.text("abc", min_size=1, max_size=3))
def test_exactly_one_of_two_rival_claims_proceeds(t1: float, t2: float, e1: str, e2: str, o1: str, o2: str) -> None:
    """For any two distinct rival claims each held as claiming by the other side, exactly one side grants."""
    if (e1, o1) == (e2, o2):
        return
    a = claim(op=f"op-{o1}-{e1}", sender=e1, created_at=t1)
    b = claim(op=f"op-{o2}-{e2}", sender=e2, created_at=t2)
    a_at_b = answer(a, held(op=b.operation, engine=b.sender, created_at=b.created_at, claiming=True), 0.0)
    b_at_a = answer(b, held(op=a.operation, engine=a.sender, created_at=a.created_at, claiming=True), 0.0)
    assert a_at_b.granted != b_at_a.granted
    assert a_at_b.yield_local == a_at_b.granted and b_at_a.yield_local == b_at_a.granted
    first = a if precedes((t1, e1, a.operation), (t2, e2, b.operation)) else b
    assert (a_at_b.granted and first is a) or (b_at_a.granted and first is b)


def test_malformed_claims_are_refused_by_the_schema() -> None:
    """Unknown fields, a bad sender or a non-finite time do not validate."""
    good = claim().model_dump()
    for bad in ({**good, "extra": 1}, {**good, "sender": "Engine GCP"}, {**good, "created_at": float("nan")},
                {**good, "epoch_to": 0}, {**good, "action": "steal"}):
        with pytest.raises(ValidationError):
            ClaimMessage.model_validate(bad)


def test_the_refusal_names_the_winner_and_the_engine() -> None:
    """The 409 detail names the operation, its engine and what it does."""
    text = refusal_sentence("shop", "engine-gcp", claim().summary(), "asked first")
    assert "shop-e2-aaaaaa on engine engine-gcp (failover to azure, epoch 2)" in text

"""Peer message authentication: forged, altered, stale, replayed and malformed verdicts are rejected."""

from __future__ import annotations

import json

import pytest

from engine.core.peer_auth import MAX_BODY, SIGNATURE_HEADER, TIMESTAMP_HEADER, Rejected, Verifier, sign
from engine.core.verdict import Verdict

KEY = b"k" * 32


def body(seq: int = 1, at: float = 1000.0, sender: str = "engine-azure", boot: str = "b1") -> bytes:
    verdict = {"sender": sender, "site": "azure", "role": "engine", "boot": boot, "seq": seq, "at": at,
               "interval": 1.0, "services": {"api": {"active": "gcp", "epoch": 2,
                                                      "sites": {"gcp": "down", "azure": "up"}, "lag_s": 0.5}}}
    return json.dumps(verdict).encode()


def verifier() -> Verifier:
    return Verifier(KEY, 30.0, frozenset({"engine-azure", "witness"}))


def test_valid_message_is_accepted() -> None:
    """A signed, fresh, well-formed verdict parses."""
    b = body()
    v = verifier().verify(sign(KEY, 1000.0, b), b, now=1001.0)
    assert isinstance(v, Verdict) and v.services["api"].sites["gcp"] == "down"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, b: (sign(b"x" * 32, 1000.0, b), b), "bad signature (wrong key or altered body)"),
        (lambda h, b: (h, b.replace(b'"down"', b'"up"  ')), "bad signature (wrong key or altered body)"),
        (lambda h, b: ({}, b), "missing or malformed signature headers"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: "soon"}, b), "malformed timestamp"),
        (lambda h, b: ({**h, SIGNATURE_HEADER: "md5=abc"}, b), "missing or malformed signature headers"),
    ],
)
def test_forged_or_altered_is_rejected(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    """A wrong key, an altered body or missing headers are rejected with a reason."""
    b = body()
    headers, payload = mutate(sign(KEY, 1000.0, b), b)
    with pytest.raises(Rejected, match="^" + reason.replace("(", r"\(").replace(")", r"\)")):
        verifier().verify(headers, payload, now=1000.0)


def test_stale_and_future_messages_are_rejected() -> None:
    """Outside the replay window either way is refused."""
    b = body()
    with pytest.raises(Rejected, match=r"timestamp \+31.0s from our clock, outside the 30s window"):
        verifier().verify(sign(KEY, 1000.0, b), b, now=1031.0)
    with pytest.raises(Rejected, match=r"-31.0s"):
        verifier().verify(sign(KEY, 1000.0, b), b, now=969.0)


def test_replay_is_rejected() -> None:
    """The same message twice, or an older sequence number, is a replay."""
    v = verifier()
    b1, b2 = body(seq=1), body(seq=2, at=1000.5)
    v.verify(sign(KEY, 1000.0, b1), b1, now=1000.0)
    v.verify(sign(KEY, 1000.5, b2), b2, now=1000.6)
    with pytest.raises(Rejected, match="replayed or reordered message from engine-azure"):
        v.verify(sign(KEY, 1000.0, b1), b1, now=1001.0)
    b3 = body(seq=0, at=1002.0, boot="b2")  # the sender restarted: a new boot starts again at 0
    v.verify(sign(KEY, 1002.0, b3), b3, now=1002.0)


def test_malformed_and_unknown_sender() -> None:
    """Validly signed garbage, a mismatched time and unknown senders are rejected."""
    v = verifier()
    junk = b'{"sender": "engine-azure"}'
    with pytest.raises(Rejected, match="malformed verdict"):
        v.verify(sign(KEY, 1000.0, junk), junk, now=1000.0)
    b = body(at=990.0)
    with pytest.raises(Rejected, match="verdict time does not match the signed timestamp"):
        v.verify(sign(KEY, 1000.0, b), b, now=1000.0)
    b = body(sender="mallory")
    with pytest.raises(Rejected, match="unknown sender 'mallory'"):
        v.verify(sign(KEY, 1000.0, b), b, now=1000.0)
    big = b" " * (MAX_BODY + 1)
    with pytest.raises(Rejected, match="exceeds"):
        v.verify(sign(KEY, 1000.0, big), big, now=1000.0)


def test_replay_from_before_the_senders_restart_is_rejected() -> None:
    """A message from the sender's previous boot, replayed after its new boot spoke, is refused."""
    v = verifier()
    old = body(seq=7, at=1000.0, boot="old")
    new = body(seq=0, at=1005.0, boot="new")
    v.verify(sign(KEY, 1000.0, old), old, now=1000.0)
    v.verify(sign(KEY, 1005.0, new), new, now=1005.0)
    with pytest.raises(Rejected, match="replayed or reordered"):
        v.verify(sign(KEY, 1000.0, old), old, now=1006.0)


def test_check_remembers_nothing_until_accepted() -> None:
    """A message refused after check (e.g. a wrong client certificate) cannot raise the sequence bar."""
    v = verifier()
    forged = body(seq=10**9, at=1000.0)
    v.check(sign(KEY, 1000.0, forged), forged, now=1000.0)  # then refused elsewhere: never accepted
    real = body(seq=1, at=1000.5)
    assert v.verify(sign(KEY, 1000.5, real), real, now=1000.6).seq == 1


def test_a_message_that_waited_counts_from_when_it_was_sent() -> None:
    """Even the first message after a restart: one signed 25 s ago is 23 s old (beyond 2 s of skew)."""
    from engine.runtime.peering import PeerState

    peer = PeerState("engine-azure", "http://x")
    peer.last_heard = 500.0
    peer.delays.append(25.0)
    assert peer.effective_heard() == 500.0 - 23.0
    peer.delays.extend([0.003, 0.004])
    assert peer.effective_heard() == pytest.approx(500.0 - 0.001)  # fresh: only its own ms of transit

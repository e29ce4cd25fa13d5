"""Peer message authentication: forged, altered, stale, replayed, malformed and cross-signed verdicts are rejected."""

from __future__ import annotations

import json

import pytest

from engine.core.peer_auth import (
    MAX_BODY,
    SENDER_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Rejected,
    Verifier,
    sign,
)
from engine.core.verdict import Verdict

KEY = b"k" * 32  # the link engine-azure <-> us
WITNESS_KEY = b"w" * 32  # the link witness <-> us
KEYS = {"engine-azure": KEY, "witness": WITNESS_KEY}


def body(seq: int = 1, at: float = 1000.0, sender: str = "engine-azure", boot: str = "b1") -> bytes:
    verdict = {"sender": sender, "site": "azure", "role": "engine", "boot": boot, "seq": seq, "at": at,
               "interval": 1.0, "services": {"api": {"active": "gcp", "epoch": 2,
                                                      "sites": {"gcp": "down", "azure": "up"}, "lag_s": 0.5}}}
    return json.dumps(verdict).encode()


def signed(b: bytes, at: float = 1000.0, sender: str = "engine-azure", key: bytes = KEY) -> dict[str, str]:
    return sign(key, sender, at, b)


def verifier() -> Verifier:
    return Verifier(KEYS, 30.0)


def test_valid_message_is_accepted() -> None:
    """A signed, fresh, well-formed verdict parses."""
    b = body()
    v = verifier().verify(signed(b), b, now=1001.0)
    assert isinstance(v, Verdict) and v.services["api"].sites["gcp"] == "down"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, b: (signed(b, key=b"x" * 32), b), "bad signature for engine-azure (not its key, or an altered"),
        (lambda h, b: (h, b.replace(b'"down"', b'"up"  ')), "bad signature for engine-azure"),
        (lambda h, b: ({}, b), "missing or malformed signature headers"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: "soon"}, b), "missing or malformed signature headers"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: "nan"}, b), "missing or malformed signature headers"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: "inf"}, b), "missing or malformed signature headers"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: "１０００"}, b), "missing or malformed signature headers"),
        (lambda h, b: ({**h, SIGNATURE_HEADER: "md5=abc"}, b), "missing or malformed signature headers"),
        (lambda h, b: ({**h, SIGNATURE_HEADER: "v2=é" + "0" * 63}, b), "missing or malformed signature headers"),
        (lambda h, b: ({**h, SIGNATURE_HEADER: "v2=\udcff" + "0" * 63}, b), "missing or malformed signature headers"),
        (lambda h, b: ({**h, SENDER_HEADER: "Engine-Azure"}, b), "missing or malformed signature headers"),
    ],
)
def test_forged_or_altered_is_rejected(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    """A wrong key, an altered body, missing headers or headers not in their exact ASCII form are rejected."""
    b = body()
    headers, payload = mutate(signed(b), b)
    with pytest.raises(Rejected, match="^" + reason.replace("(", r"\(").replace(")", r"\)")):
        verifier().verify(headers, payload, now=1000.0)


def test_a_voter_cannot_sign_as_another() -> None:
    """The witness, signing with its own key, cannot pass a verdict off as engine-azure's."""
    forged = body(sender="engine-azure")
    with pytest.raises(Rejected, match="bad signature for engine-azure"):
        verifier().verify(sign(WITNESS_KEY, "engine-azure", 1000.0, forged), forged, now=1000.0)
    with pytest.raises(Rejected, match="verdict of 'engine-azure' signed as 'witness'"):
        verifier().verify(sign(WITNESS_KEY, "witness", 1000.0, forged), forged, now=1000.0)
    own = body(sender="witness")
    assert verifier().verify(sign(WITNESS_KEY, "witness", 1000.0, own), own, now=1000.0).sender == "witness"


def test_a_message_for_another_link_is_refused() -> None:
    """A verdict engine-azure signed for a third voter (another link key) is refused here: no relaying."""
    b = body()
    with pytest.raises(Rejected, match="bad signature for engine-azure"):
        verifier().verify(sign(b"t" * 32, "engine-azure", 1000.0, b), b, now=1000.0)


def test_nan_and_infinite_times_in_the_body_are_refused() -> None:
    """A verdict whose time or interval is NaN or infinite is malformed, whatever the signature says."""
    for text in (b'"at": NaN', b'"at": Infinity', b'"at": -Infinity'):
        b = body().replace(b'"at": 1000.0', text)
        with pytest.raises(Rejected, match="malformed verdict"):
            verifier().verify(signed(b), b, now=1000.0)
    b = body().replace(b'"interval": 1.0', b'"interval": NaN')
    with pytest.raises(Rejected, match="malformed verdict"):
        verifier().verify(signed(b), b, now=1000.0)


def test_deep_json_is_refused_without_parsing() -> None:
    """A signed body nested 10,000 deep is refused as malformed (no recursion error)."""
    b = b"[" * 10_000 + b"]" * 10_000
    with pytest.raises(Rejected, match="nested deeper"):
        verifier().verify(signed(b), b, now=1000.0)


def test_stale_and_future_messages_are_rejected() -> None:
    """Outside the replay window either way is refused."""
    b = body()
    with pytest.raises(Rejected, match=r"timestamp \+31.0s from our clock, outside the 30s window"):
        verifier().verify(signed(b), b, now=1031.0)
    with pytest.raises(Rejected, match=r"-31.0s"):
        verifier().verify(signed(b), b, now=969.0)


def test_signing_refuses_a_time_that_is_not_finite() -> None:
    """The sender cannot even produce a NaN timestamp."""
    with pytest.raises(ValueError, match="cannot sign"):
        sign(KEY, "engine-gcp", float("nan"), b"{}")


def test_replay_is_rejected() -> None:
    """The same message twice, or an older sequence number, is a replay."""
    v = verifier()
    b1, b2 = body(seq=1), body(seq=2, at=1000.5)
    v.verify(signed(b1, 1000.0), b1, now=1000.0)
    v.verify(signed(b2, 1000.5), b2, now=1000.6)
    with pytest.raises(Rejected, match="replayed or reordered message from engine-azure"):
        v.verify(signed(b1, 1000.0), b1, now=1001.0)
    b3 = body(seq=0, at=1002.0, boot="b2")  # the sender restarted: a new boot starts again at 0
    v.verify(signed(b3, 1002.0), b3, now=1002.0)


def test_malformed_and_unknown_sender() -> None:
    """Validly signed garbage, a mismatched time and unknown senders are rejected."""
    v = verifier()
    junk = b'{"sender": "engine-azure"}'
    with pytest.raises(Rejected, match="malformed verdict"):
        v.verify(signed(junk, 1000.0), junk, now=1000.0)
    b = body(at=990.0)
    with pytest.raises(Rejected, match="verdict time does not match the signed timestamp"):
        v.verify(signed(b, 1000.0), b, now=1000.0)
    b = body(sender="mallory")
    with pytest.raises(Rejected, match="unknown sender 'mallory'"):
        v.verify(signed(b, 1000.0, sender="mallory"), b, now=1000.0)
    big = b" " * (MAX_BODY + 1)
    with pytest.raises(Rejected, match="exceeds"):
        v.verify(signed(big, 1000.0), big, now=1000.0)


def test_replay_from_before_the_senders_restart_is_rejected() -> None:
    """A message from the sender's previous boot, replayed after its new boot spoke, is refused."""
    v = verifier()
    old = body(seq=7, at=1000.0, boot="old")
    new = body(seq=0, at=1005.0, boot="new")
    v.verify(signed(old, 1000.0), old, now=1000.0)
    v.verify(signed(new, 1005.0), new, now=1005.0)
    with pytest.raises(Rejected, match="replayed or reordered"):
        v.verify(signed(old, 1000.0), old, now=1006.0)


def test_check_remembers_nothing_until_accepted() -> None:
    """A message refused after check (e.g. a wrong client certificate) cannot raise the sequence bar."""
    v = verifier()
    forged = body(seq=10**9, at=1000.0)
    v.check(signed(forged, 1000.0), forged, now=1000.0)  # then refused elsewhere: never accepted
    real = body(seq=1, at=1000.5)
    assert v.verify(signed(real, 1000.5), real, now=1000.6).seq == 1


def test_a_message_that_waited_counts_from_when_it_was_sent() -> None:
    """Even the first message after a restart: one signed 25 s ago is 23 s old (beyond 2 s of skew)."""
    from engine.runtime.peering import PeerState

    peer = PeerState("engine-azure", "http://x")
    peer.last_heard = 500.0
    peer.delays.append(25.0)
    assert peer.effective_heard() == 500.0 - 23.0
    peer.delays.extend([0.003, 0.004])
    assert peer.effective_heard() == pytest.approx(500.0 - 0.001)  # fresh: only its own ms of transit

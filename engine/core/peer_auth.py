"""Authenticating verdicts: per-pair HMAC-SHA256 keys, a replay window and sequence numbers.

Keys: every pair of voters shares its own key (``peers[].key`` on both sides), so a voter holds only the
keys of its own links. A message is checked with the key of the sender it *claims*: a voter signing with
its own keys cannot pass as another, and a key that leaks lets its holder speak only as the two voters of
that link, only to each other. (One key shared by every voter let anyone who held it speak as anyone.)

Wire form: the JSON body, with headers ``X-Failover-Sender`` (the claimed sender's id),
``X-Failover-Timestamp`` (sender wall time, seconds, plain decimal) and ``X-Failover-Signature:
v2=<hex>`` where the MAC covers ``"<sender>\\n<timestamp>\\n" + body``. A message is accepted only when
every header has its exact ASCII form (anything else is refused before any use: no NaN, no infinity, no
other digits), the sender is a configured peer, the MAC matches (constant-time) with that peer's key,
the timestamp is within ``replay_window`` of the receiver's clock, the body is JSON without NaN or
infinity and parses as a :class:`~engine.verdict.Verdict` naming the same sender at the same time, and
its ``(boot, seq)`` and time are newer than the last accepted from that sender.

Every refusal is a :class:`Rejected` with a reason fit for a log line (never a key, never the raw header).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from engine.core.limits import json_depth
from engine.core.verdict import Verdict

SENDER_HEADER = "X-Failover-Sender"
TIMESTAMP_HEADER = "X-Failover-Timestamp"
SIGNATURE_HEADER = "X-Failover-Signature"
MAX_BODY = 256 * 1024
MAX_DEPTH = 16  # a verdict nests 4 deep

_SENDER = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_STAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_SIGNATURE = re.compile(r"v2=[0-9a-f]{64}")


class Rejected(Exception):
    """A peer message that must not be believed."""


def _mac(key: bytes, sender: str, stamp: str, body: bytes) -> str:
    return hmac.new(key, f"{sender}\n{stamp}\n".encode() + body, hashlib.sha256).hexdigest()


def sign(key: bytes, sender: str, timestamp: float, body: bytes) -> dict[str, str]:
    """Headers that authenticate ``body`` sent by ``sender`` at ``timestamp`` with the key of one link."""
    if not math.isfinite(timestamp) or timestamp < 0:
        raise ValueError(f"cannot sign a message at {timestamp!r}")
    stamp = f"{timestamp:.6f}"
    return {SENDER_HEADER: sender, TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"v2={_mac(key, sender, stamp, body)}"}


def authenticate(keys: Mapping[str, bytes], headers: Mapping[str, str], body: bytes, now: float,
                 replay_window: float) -> tuple[str, float]:
    """The sender and the signed time of a peer message whose headers, MAC (with the claimed sender's own
    key) and time (within ``replay_window`` of ``now``) check out; else :class:`Rejected`."""
    if len(body) > MAX_BODY:
        raise Rejected(f"body of {len(body)} bytes exceeds {MAX_BODY}")
    sender = headers.get(SENDER_HEADER, "")
    stamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    if not (_SENDER.fullmatch(sender) and _STAMP.fullmatch(stamp) and _SIGNATURE.fullmatch(signature)):
        raise Rejected("missing or malformed signature headers (sender, timestamp, v2 signature)")
    key = keys.get(sender)
    if key is None:
        raise Rejected(f"unknown sender {sender!r}")
    if not hmac.compare_digest(_mac(key, sender, stamp, body), signature[3:]):
        raise Rejected(f"bad signature for {sender} (not its key, or an altered body)")
    timestamp = float(stamp)  # finite: the pattern admits plain decimals only
    skew = now - timestamp
    if not math.isfinite(now) or abs(skew) > replay_window:
        raise Rejected(f"timestamp {skew:+.1f}s from our clock, outside the {replay_window:g}s window")
    return sender, timestamp


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a verdict may carry")


@dataclass
class Verifier:
    """Checks incoming verdicts with each sender's own key; remembers the newest (boot, seq) per sender."""

    keys: Mapping[str, bytes]  # peer id -> the key of our link with it
    replay_window: float
    _last: dict[str, tuple[str, int]] = field(default_factory=dict)
    _last_at: dict[str, float] = field(default_factory=dict)

    @property
    def known_senders(self) -> frozenset[str]:
        return frozenset(self.keys)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        """Check a message and, when it passes, remember it (its sequence and time) as the sender's newest."""
        verdict = self.check(headers, body, now)
        self.accept(verdict)
        return verdict

    def accept(self, verdict: Verdict) -> None:
        """Remember ``verdict`` as its sender's newest: call only after every other check passed."""
        self._last[verdict.sender] = (verdict.boot, verdict.seq)
        self._last_at[verdict.sender] = verdict.at

    def check(self, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        """Every check, remembering nothing (so a message refused later cannot poison the state)."""
        sender, timestamp = authenticate(self.keys, headers, body, now, self.replay_window)
        if json_depth(body, MAX_DEPTH) > MAX_DEPTH:
            raise Rejected(f"malformed verdict: nested deeper than {MAX_DEPTH}")
        try:
            verdict = Verdict.model_validate(json.loads(body, parse_constant=_no_constant))
        except (ValueError, ValidationError) as exc:
            raise Rejected(f"malformed verdict: {str(exc).splitlines()[0][:200]}") from None
        stamps = [verdict.sent_mono] + [e.sent_mono for e in verdict.echoes.values()]
        if not all(math.isfinite(x) for x in (verdict.at, verdict.interval, *(s for s in stamps if s is not None))):
            raise Rejected("malformed verdict: its times must be finite")
        if abs(verdict.at - timestamp) > 1e-3:
            raise Rejected("verdict time does not match the signed timestamp")
        if verdict.sender != sender:
            raise Rejected(f"verdict of {verdict.sender!r} signed as {sender!r}")
        last = self._last.get(sender)
        if last is not None and last[0] == verdict.boot and verdict.seq <= last[1]:
            raise Rejected(f"replayed or reordered message from {sender} (seq {verdict.seq} <= {last[1]})")
        last_at = self._last_at.get(sender)
        if last_at is not None and verdict.at <= last_at:  # across restarts of the sender too
            raise Rejected(f"replayed or reordered message from {sender} (sent at or before the newest seen)")
        return verdict

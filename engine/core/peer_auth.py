"""Authenticating verdicts: HMAC-SHA256 over timestamp and body, a replay window and sequence numbers.

Wire form: the JSON body, with headers ``X-Failover-Timestamp`` (sender wall time, seconds) and
``X-Failover-Signature: v1=<hex>`` where the MAC covers ``"<timestamp>\\n" + body``. A message is
accepted only when the MAC matches (constant-time), the timestamp is within ``replay_window`` of
the receiver's clock, the body parses as a :class:`~engine.core.verdict.Verdict` whose ``at`` matches
the header, and its ``(sender, boot, seq)`` is newer than the last one accepted from that sender.

Every refusal is a :class:`Rejected` with a reason fit for a log line (never the key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from engine.core.verdict import Verdict

TIMESTAMP_HEADER = "X-Failover-Timestamp"
SIGNATURE_HEADER = "X-Failover-Signature"
MAX_BODY = 256 * 1024


class Rejected(Exception):
    """A peer message that must not be believed."""


def sign(key: bytes, timestamp: float, body: bytes) -> dict[str, str]:
    """Headers that authenticate ``body`` sent at ``timestamp``."""
    stamp = f"{timestamp:.6f}"
    mac = hmac.new(key, stamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"v1={mac}"}


@dataclass
class Verifier:
    """Checks incoming verdicts; remembers the newest (boot, seq) per sender."""

    key: bytes
    replay_window: float
    known_senders: frozenset[str]
    _last: dict[str, tuple[str, int]] = field(default_factory=dict)
    _last_at: dict[str, float] = field(default_factory=dict)

    def verify(self, headers: dict[str, str], body: bytes, now: float) -> Verdict:
        """Check a message and, when it passes, remember it (its sequence and time) as the sender's newest."""
        verdict = self.check(headers, body, now)
        self.accept(verdict)
        return verdict

    def accept(self, verdict: Verdict) -> None:
        """Remember ``verdict`` as its sender's newest: call only after every other check passed."""
        self._last[verdict.sender] = (verdict.boot, verdict.seq)
        self._last_at[verdict.sender] = verdict.at

    def check(self, headers: dict[str, str], body: bytes, now: float) -> Verdict:
        """Every check, remembering nothing (so a message refused later cannot poison the state)."""
        if len(body) > MAX_BODY:
            raise Rejected(f"body of {len(body)} bytes exceeds {MAX_BODY}")
        stamp = headers.get(TIMESTAMP_HEADER)
        signature = headers.get(SIGNATURE_HEADER, "")
        if not stamp or not signature.startswith("v1="):
            raise Rejected("missing or malformed signature headers")
        try:
            timestamp = float(stamp)
        except ValueError:
            raise Rejected("malformed timestamp") from None
        expected = hmac.new(self.key, stamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature[3:]):
            raise Rejected("bad signature (wrong key or altered body)")
        skew = now - timestamp
        if abs(skew) > self.replay_window:
            raise Rejected(f"timestamp {skew:+.1f}s from our clock, outside the {self.replay_window:g}s window")
        try:
            verdict = Verdict.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            raise Rejected(f"malformed verdict: {str(exc).splitlines()[0][:200]}") from None
        if abs(verdict.at - timestamp) > 1e-3:
            raise Rejected("verdict time does not match the signed timestamp")
        if verdict.sender not in self.known_senders:
            raise Rejected(f"unknown sender {verdict.sender!r}")
        last = self._last.get(verdict.sender)
        if last is not None and last[0] == verdict.boot and verdict.seq <= last[1]:
            raise Rejected(f"replayed or reordered message from {verdict.sender} (seq {verdict.seq} <= {last[1]})")
        last_at = self._last_at.get(verdict.sender)
        if last_at is not None and verdict.at <= last_at:  # across restarts of the sender too
            raise Rejected(f"replayed or reordered message from {verdict.sender} (sent at or before the newest seen)")
        return verdict

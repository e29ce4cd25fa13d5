"""Echoes between real Peering objects (signed bodies, an injected clock per voter): the holder's stamps,
the voters' silence and the executor's certifiers, as engine.core.lease_echo reads them."""

from __future__ import annotations

import json

import pytest

from engine.config import parse_config
from engine.core.clock import ManualClock
from engine.core.lease_echo import certify_silent
from engine.core.peer_auth import Rejected, sign
from engine.runtime.peering import Peering

VOTERS = {"gcp-1": "gcp", "azure-1": "azure", "witness": "witness"}


def key(a: str, b: str) -> str:
    return "key-" + "-".join(sorted((a, b))) + "-0123456789abcdef"


def config(me: str) -> str:
    peers = "\n".join(f"  - {{id: {o}, site: {s}, role: {'witness' if o == 'witness' else 'engine'}, "
                      f"url: 'http://127.0.0.1:{9 + i}', key: '{key(me, o)}'}}"
                      for i, (o, s) in enumerate(VOTERS.items()) if o != me)
    return f"""
instance: {{id: {me}, site: {VOTERS[me]}, role: {'witness' if me == 'witness' else 'engine'}, tick: 1s}}
peers:
{peers}
services:
  shop:
    active: gcp
    sites:
      gcp: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}
      azure: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}
"""


class HostClock(ManualClock):
    """One host's clock: the wall clock shared (NTP), the monotonic one counted from the host's boot."""

    def __init__(self, booted: float) -> None:
        super().__init__()
        self._mono = booted


class World:
    def __init__(self) -> None:
        # monotonic clocks of different hosts have nothing in common
        self.clocks = {vid: HostClock(booted) for vid, booted in zip(VOTERS, (10.0, 5000.0, 77.0), strict=True)}
        self.peering = {vid: Peering(parse_config(config(vid), env={}), self.clocks[vid]) for vid in VOTERS}

    def advance(self, seconds: float) -> None:
        for clock in self.clocks.values():
            clock.advance(seconds)

    def send(self, src: str, dst: str) -> None:
        verdict = self.peering[src].make_verdict({})
        body = json.dumps(verdict.model_dump(exclude_none=True), separators=(",", ":")).encode()
        self.peering[dst].receive(sign(key(src, dst).encode(), src, verdict.at, body), body)

    def round(self) -> None:
        for src in VOTERS:
            for dst in VOTERS:
                if src != dst:
                    self.send(src, dst)
        self.advance(1.0)


def test_a_verdict_echoes_what_it_received_and_the_holder_keeps_its_own_stamps() -> None:
    """gcp's stamp comes back from both voters, on gcp's clock; a peer never heard has no stamp, only silence."""
    w = World()
    first = w.peering["azure-1"].make_verdict({})
    assert first.echoes["gcp-1"].boot is None and first.echoes["gcp-1"].silent_s == 0.0
    w.round()
    w.round()
    stamps = w.peering["gcp-1"].lease_stamps()
    assert set(stamps) == {"azure-1", "witness"}
    assert all(0.0 <= w.clocks["gcp-1"].monotonic() - s <= 2.0 for s in stamps.values())
    echo = w.peering["witness"].make_verdict({}).echoes["gcp-1"]
    assert echo.boot == w.peering["gcp-1"].boot and echo.silent_s == 1.0


def test_echoes_of_another_process_do_not_renew_the_lease() -> None:
    """A restarted holder (a new nonce) gets nothing from echoes of its previous process."""
    w = World()
    w.round()
    w.round()
    w.peering["gcp-1"] = Peering(parse_config(config("gcp-1"), env={}), w.clocks["gcp-1"])
    w.send("witness", "gcp-1")
    assert w.peering["gcp-1"].lease_stamps() == {}


def test_a_forged_echo_body_is_rejected_and_renews_nothing() -> None:
    """An altered body (a later stamp slipped in) fails the signature; the holder's stamps stay as they were."""
    w = World()
    w.round()
    w.round()
    before = w.peering["gcp-1"].lease_stamps()
    verdict = w.peering["witness"].make_verdict({})
    body = json.dumps(verdict.model_dump(exclude_none=True), separators=(",", ":")).encode()
    headers = sign(key("witness", "gcp-1").encode(), "witness", verdict.at, body)
    forged = body.replace(b'"sent_mono":', b'"sent_mono":9', 1)
    with pytest.raises(Rejected):
        w.peering["gcp-1"].receive(headers, forged)
    assert w.peering["gcp-1"].lease_stamps() == before


def test_a_malformed_echo_is_rejected_even_when_signed() -> None:
    """A negative silence in a correctly signed verdict is malformed: rejected before anything reads it."""
    w = World()
    verdict = w.peering["witness"].make_verdict({})
    raw = verdict.model_dump(exclude_none=True)
    raw["echoes"]["gcp-1"]["silent_s"] = -5.0
    body = json.dumps(raw, separators=(",", ":")).encode()
    with pytest.raises(Rejected, match="malformed verdict"):
        w.peering["gcp-1"].receive(sign(key("witness", "gcp-1").encode(), "witness", verdict.at, body), body)


def test_the_executor_certifies_a_silent_holder_after_the_wait() -> None:
    """gcp falls silent: azure's own silence and the witness's echoed one ripen to lease + margin together."""
    w = World()
    for _ in range(3):
        w.round()
    for _ in range(8):  # gcp cut off: azure and the witness keep talking
        w.send("azure-1", "witness")
        w.send("witness", "azure-1")
        w.advance(1.0)
    azure = w.peering["azure-1"]
    certs = {c.id: c for c in azure.certifiers("gcp-1")}
    assert set(certs) == {"azure-1", "witness"}
    mono = w.clocks["azure-1"].monotonic()
    assert certs["witness"].sent_after is not None and mono - certs["witness"].sent_after <= 2.0
    assert certify_silent(list(certs.values()), 2, 6.0, 2.5, 6.5, mono).certified
    assert not certify_silent(list(certs.values()), 2, 6.0, 2.5, 9.5, mono).certified

"""Peering: sending this instance's verdict to every peer, and receiving theirs.

Every tick the daemon hands :meth:`Peering.dispatch` its verdict; each peer gets it as a POST to
``/v1/peer/verdict`` signed with the key of that link (see :mod:`engine.core.peer_auth`), bounded by a
deadline below the tick so a dead peer never slows the loop. Received verdicts are verified and kept
with their arrival time on the monotonic clock; :meth:`received_for` hands them to the quorum tally.
Rejections are counted, logged at a bounded rate, never believed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import secrets
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from engine.config.model import EngineConfig
from engine.core.clock import Clock
from engine.core.lease_echo import Certifier
from engine.core.limits import LogBudget
from engine.core.peer_auth import Rejected, Verifier, sign
from engine.core.quorum import Received, VoterInfo
from engine.core.verdict import Echo, ServiceVerdict, Verdict

log = structlog.get_logger("engine.peering")


SKEW_ALLOWANCE = 2.0  # seconds of clock difference between hosts tolerated before a message counts as old


@dataclass
class PeerState:
    id: str
    url: str
    last_sent_ok: float | None = None  # monotonic
    last_error: str | None = None
    last_heard: float | None = None  # monotonic
    verdict: Verdict | None = None
    rejected: int = 0
    delays: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=64))
    extra: dict[str, Any] = field(default_factory=dict)
    echo_of_me: float | None = None  # the newest of our stamps this peer echoed (our monotonic clock): its promise

    def effective_heard(self) -> float | None:
        """When the latest verdict would have arrived had it not waited somewhere on the way.

        ``delays`` holds (our wall clock - the sender's signed time) for recent messages: their
        minimum is clock skew plus the fastest transit. A message whose delay exceeds it sat in a
        buffer (a peer frozen then woken, a congested link), so its age counts from when it was
        sent, not from when it reached us. Constant clock skew between hosts cancels out.
        """
        if self.last_heard is None or not self.delays:
            return self.last_heard
        relative = self.delays[-1] - min(self.delays)
        absolute = self.delays[-1] - SKEW_ALLOWANCE  # also right for the first message after a restart
        return self.last_heard - max(0.0, relative, absolute)


def client_ssl(config: EngineConfig) -> ssl.SSLContext | bool:
    """The TLS context for talking to peers: their CA, and our client certificate for mTLS."""
    tls = config.peering.tls
    if tls is None:
        return True
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


class Peering:
    def __init__(self, config: EngineConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.boot = secrets.token_hex(8)  # the process nonce: our monotonic stamps mean something only with it
        self.started = clock.monotonic()  # silence of a peer never heard counts from here
        self._seq = itertools.count(1)
        self.keys = {p.id: p.key.get_secret_value().encode() for p in config.peers if p.key is not None}
        self.peers = {p.id: PeerState(p.id, p.url) for p in config.peers}
        self.verifier = Verifier(self.keys, config.peering.replay_window)
        self._session: aiohttp.ClientSession | None = None
        self.rejections = 0
        self._log_budget = LogBudget()  # a flood of forged verdicts costs the log a few lines a minute
        self.on_change: Callable[[], None] | None = None  # called when a peer's view changed
        self._sending: dict[str, asyncio.Task[None]] = {}  # peer id -> its verdict in flight

    @property
    def voters(self) -> list[VoterInfo]:
        inst = self.config.instance
        return [VoterInfo(inst.id, inst.role, inst.site)] + [
            VoterInfo(p.id, p.role, p.site) for p in self.config.peers]

    @property
    def engines(self) -> list[VoterInfo]:
        return [v for v in self.voters if v.role == "engine"]

    def make_verdict(self, services: dict[str, ServiceVerdict]) -> Verdict:
        inst = self.config.instance
        mono = self.clock.monotonic()
        return Verdict(sender=inst.id, site=inst.site, role=inst.role, boot=self.boot, seq=next(self._seq),
                       at=round(self.clock.now(), 6), interval=inst.tick, services=services,
                       hears=self.fresh_ids(), sent_mono=mono, echoes=self.echoes(mono))

    def echoes(self, mono: float) -> dict[str, Echo]:
        """Per peer: the echo of its newest verdict we received and how long ago that was (our clock); a peer
        never heard since we started gets no echo, its silence counted from our start. Our promise: we never
        report a peer silent for longer than it really was, so its lease (engine.core.lease_echo) holds."""
        out: dict[str, Echo] = {}
        for peer in self.peers.values():
            verdict, heard = peer.verdict, peer.last_heard
            if verdict is None or heard is None:
                out[peer.id] = Echo(silent_s=round(max(0.0, mono - self.started), 6))
            else:
                out[peer.id] = Echo(boot=verdict.boot, sent_mono=verdict.sent_mono,
                                    silent_s=round(max(0.0, mono - heard), 6))
        return out

    def fresh_ids(self) -> list[str]:
        """Peers whose latest verdict is fresh: heard within two of their intervals (capped at four of
        our ticks, so a peer cannot stretch its own freshness)."""
        mono = self.clock.monotonic()
        tick = self.config.instance.tick
        return [p.id for p in self.peers.values()
                if (heard := p.effective_heard()) is not None and p.verdict is not None
                and mono - heard <= 2 * min(p.verdict.interval, 4 * tick)]

    def lease_stamps(self) -> dict[str, float]:
        """Per peer, the newest of this process's stamps it echoed: its promise runs until stamp + lease."""
        return {p.id: p.echo_of_me for p in self.peers.values() if p.echo_of_me is not None}

    def certifiers(self, engine: str) -> list[Certifier]:
        """Every voter's word, as far as we have it, on how long ``engine`` has been silent (our clock): ours
        (exact), and each other peer's from its latest verdict while fresh, given after it received our verdict
        stamped ``sent_after`` (its echo of this process; none: it cannot certify)."""
        mono = self.clock.monotonic()
        tick = self.config.instance.tick
        target = self.peers.get(engine)
        ours = target.last_heard if target is not None and target.last_heard is not None else self.started
        out = [Certifier(self.config.instance.id, ours, mono)]
        for peer in self.peers.values():
            verdict, received = peer.verdict, peer.last_heard
            if peer.id == engine or verdict is None or received is None:
                continue
            if mono - received > 2 * min(verdict.interval, 4 * tick):
                continue  # a silent voter cannot certify
            about, mine = verdict.echoes.get(engine), verdict.echoes.get(self.config.instance.id)
            if about is None:
                continue
            after = mine.sent_mono if mine is not None and mine.boot == self.boot else None
            out.append(Certifier(peer.id, received - about.silent_s, after))
        return out

    def dispatch(self, verdict: Verdict) -> None:
        """Send ``verdict`` to every peer without waiting: one task per peer, and a peer whose previous send
        is still pending (a dead or cut-off peer, up to the deadline) is skipped this time, so an unreachable
        voter never delays the verdicts the others get."""
        if not self.peers:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False, connector=aiohttp.TCPConnector(ssl=client_ssl(self.config)))
        body = json.dumps(verdict.model_dump(exclude_none=True), separators=(",", ":")).encode()
        deadline = max(0.2, 0.8 * self.config.instance.tick)
        for peer in self.peers.values():
            pending = self._sending.get(peer.id)
            if pending is not None and not pending.done():
                continue
            headers = {"Content-Type": "application/json",
                       **sign(self.keys.get(peer.id, b""), verdict.sender, verdict.at, body)}
            self._sending[peer.id] = asyncio.create_task(self._send(peer, body, headers, deadline),
                                                         name=f"verdict to {peer.id}")

    async def _send(self, peer: PeerState, body: bytes, headers: dict[str, str], deadline: float) -> None:
        before = peer.last_error
        await self._post(peer, body, headers, deadline)
        if peer.last_error != before:
            if peer.last_error is None:
                log.info("peer reachable again", peer=peer.id)
            elif before is None:
                log.warning("cannot reach peer", peer=peer.id, url=peer.url, error=peer.last_error)

    async def _post(self, peer: PeerState, body: bytes, headers: dict[str, str], deadline: float) -> None:
        assert self._session is not None
        try:
            async with asyncio.timeout(deadline), self._session.post(
                    peer.url + "/v1/peer/verdict", data=body, headers=headers) as resp:
                if resp.status == 200:
                    peer.last_sent_ok = self.clock.monotonic()
                    peer.last_error = None
                    return
                text = (await resp.text())[:200]
                peer.last_error = f"answered {resp.status}: {text}"
        except TimeoutError:
            peer.last_error = f"no answer within {deadline:g}s"
        except aiohttp.ClientError as exc:
            peer.last_error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        except OSError as exc:
            peer.last_error = exc.strerror or type(exc).__name__

    def receive(self, headers: Mapping[str, str], body: bytes, peer_cn: str | None = None) -> Verdict:
        """Verify and keep a peer's verdict; raises :class:`Rejected` (logged) when it is not believable.

        ``peer_cn`` is the common name of the client certificate the message came with (mTLS).
        """
        try:
            verdict = self.verifier.check(headers, body, self.clock.now())
            tls = self.config.peering.tls
            if tls is not None and tls.require_client_cert:
                if peer_cn is None:
                    raise Rejected("a client certificate is required from peers")
                if peer_cn != verdict.sender:
                    raise Rejected(f"client certificate {peer_cn!r} does not belong to sender {verdict.sender!r}")
            self.verifier.accept(verdict)
        except Rejected as exc:
            self.rejections += 1
            held = self._log_budget.take("rejected", self.clock.monotonic())
            if held is not None:
                log.warning("peer message rejected", reason=str(exc), **({"held_back": held} if held else {}))
            raise
        peer = self.peers[verdict.sender]
        changed = peer.verdict is None or peer.verdict.services != verdict.services
        peer.verdict = verdict
        peer.last_heard = mono = self.clock.monotonic()
        echo = verdict.echoes.get(self.config.instance.id)
        if echo is not None and echo.boot == self.boot and echo.sent_mono is not None and echo.sent_mono <= mono:
            peer.echo_of_me = echo.sent_mono if peer.echo_of_me is None else max(peer.echo_of_me, echo.sent_mono)
        peer.delays.append(self.clock.now() - verdict.at)
        if changed and self.on_change is not None:
            self.on_change()
        return verdict

    def received_for(self, service: str) -> dict[str, Received | None]:
        out: dict[str, Received | None] = {}
        for peer in self.peers.values():
            verdict = peer.verdict
            heard = peer.effective_heard()
            if verdict is None or heard is None or service not in verdict.services:
                out[peer.id] = None
            else:
                # a peer cannot stretch its own freshness: its interval counts up to 4 of our ticks
                interval = min(verdict.interval, 4 * self.config.instance.tick)
                out[peer.id] = Received(verdict.services[service], heard, interval)
        return out

    def status(self) -> list[dict[str, Any]]:
        now = self.clock.monotonic()
        return [{"id": p.id, "url": p.url,
                 "heard_age_s": None if (h := p.effective_heard()) is None else round(now - h, 3),
                 "sent_age_s": None if p.last_sent_ok is None else round(now - p.last_sent_ok, 3),
                 "last_error": p.last_error} for p in self.peers.values()]

    async def close(self) -> None:
        pending = [t for t in self._sending.values() if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()

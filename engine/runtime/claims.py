"""The claim exchange between engines (the rules: :mod:`engine.core.claims`).

:meth:`ClaimDesk.claim` runs in ``Coordinator.start_operation`` right after the journal's claim: it sends
the operation's claim to every peer engine heard recently, at once, and waits up to a short deadline.
Any refusal (or an earlier claim that arrived meanwhile and made this one yield) ends the operation
before its first step. :meth:`ClaimDesk.receive` answers a peer's claim (``POST /v1/peer/claim``) and
remembers the claims it granted, so this engine's own starters refuse, naming the peer's operation,
until the peer releases it (:meth:`ClaimDesk.release`, when its operation ends) or the claim expires
(the runbook deadline). Answers are not signed: a forged grant is what an unreachable peer already
gives (the DNS compare-and-set stays the guard), a forged refusal only stops a move.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog
from pydantic import ValidationError

from engine.core.claims import Answer, ClaimMessage, Held, answer, clean
from engine.core.limits import json_depth
from engine.core.operations import Operation, OpState
from engine.core.peer_auth import Rejected, authenticate, sign
from engine.runtime.context import RuntimeContext
from engine.runtime.peering import Peering, client_ssl

log = structlog.get_logger("engine.claims")

MAX_CLAIM = 4096  # bytes: a claim is a few hundred


class ClaimDesk:
    def __init__(self, ctx: RuntimeContext, peering: Peering) -> None:
        self.ctx = ctx
        self.peering = peering
        self.granted: dict[str, ClaimMessage] = {}  # service -> the peer's claim this engine granted
        self.claiming: dict[str, Operation] = {}  # service -> our operation while it asks its peers
        self.yielded: dict[str, dict[str, Any]] = {}  # operation id -> the peer claim it yields to
        self.asked: dict[str, list[str]] = {}  # operation id -> the peers that granted it (to release)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- this engine's starters ----------------------------------------------------------------------------
    def foreign(self, service: str) -> dict[str, Any] | None:
        """A live claim this engine granted to a peer for ``service`` (its own starters refuse), or None."""
        claim = self.granted.get(service)
        if claim is None:
            return None
        if claim.expires_at <= self.ctx.clock.now():
            del self.granted[service]
            return None
        return claim.summary()

    def _peer_engines(self) -> list[Any]:
        """Peer engines heard within four ticks: a silent one is not waited for (it may be the lost site)."""
        mono = self.ctx.clock.monotonic()
        window = 4 * self.ctx.config.instance.tick
        out = []
        for peer_cfg in self.ctx.config.peers:
            state = self.peering.peers.get(peer_cfg.id)
            if peer_cfg.role != "engine" or state is None or state.last_heard is None:
                continue
            if mono - state.last_heard <= window:
                out.append(peer_cfg)
        return out

    def _message(self, op: Operation, action: str, expires_at: float) -> ClaimMessage:
        return ClaimMessage(action=action, sender=self.ctx.config.instance.id, service=op.service,  # type: ignore[arg-type]
                            operation=op.id, kind=op.kind, target=op.target, epoch_to=op.epoch_to,
                            created_at=round(op.created_at, 6), expires_at=round(expires_at, 6),
                            at=round(self.ctx.clock.now(), 6))

    async def claim(self, op: Operation, deadline_s: float) -> tuple[str, dict[str, Any] | None, str] | None:
        """Ask every peer engine heard recently; None when none refused (and this operation did not yield),
        else ``(engine, winner, reason)``."""
        peers = self._peer_engines()
        if not peers:
            return None
        self.claiming[op.service] = op
        try:
            message = self._message(op, "claim", op.created_at + deadline_s)
            timeout = min(2.0, max(0.5, 2 * self.ctx.config.instance.tick))
            answers = await asyncio.gather(*(self._post(p, message, timeout) for p in peers))
        finally:
            self.claiming.pop(op.service, None)
        granted = [p.id for p, got in zip(peers, answers, strict=True) if got is not None and got.granted]
        self.asked[op.id] = granted
        refused = [(p.id, got) for p, got in zip(peers, answers, strict=True) if got is not None and not got.granted]
        winner = self.yielded.pop(op.id, None)
        if refused:
            engine, got = refused[0]
            return engine, got.winner, got.reason
        if winner is not None:
            return str(winner.get("engine")), winner, "its claim came first"
        return None

    async def release(self, op: Operation) -> None:
        """The operation ended: tell the peers that granted its claim (best effort; the claim expires anyway)."""
        peers = self.asked.pop(op.id, [])
        if not peers or op.state in (OpState.RUNNING, OpState.HALTED):
            if op.state is OpState.HALTED and peers:
                self.asked[op.id] = peers  # a halted operation keeps holding the service
            return
        message = self._message(op, "release", op.created_at)
        by_id = {p.id: p for p in self.ctx.config.peers}
        await asyncio.gather(*(self._post(by_id[pid], message, 2.0) for pid in peers if pid in by_id))

    async def _post(self, peer: Any, message: ClaimMessage, timeout: float) -> Answer | None:
        """One claim or release to one peer: its answer, or None when it did not give one in time."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False, connector=aiohttp.TCPConnector(ssl=client_ssl(self.ctx.config)))
        body = json.dumps(message.model_dump(), separators=(",", ":")).encode()
        key = self.peering.keys.get(peer.id, b"")
        headers = {"Content-Type": "application/json", **sign(key, message.sender, message.at, body)}
        try:
            async with asyncio.timeout(timeout), self._session.post(
                    peer.url + "/v1/peer/claim", data=body, headers=headers) as resp:
                data = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.info("peer claim unanswered", peer=peer.id, error=type(exc).__name__)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("granted"), bool):
            return None
        winner = data.get("winner") if isinstance(data.get("winner"), dict) else None
        return Answer(bool(data["granted"]), winner=winner, reason=clean(str(data.get("reason", ""))))

    # -- a peer's claim --------------------------------------------------------------------------------------
    def _held(self, service: str) -> Held | None:
        ctx = self.ctx
        claiming = self.claiming.get(service)
        me = ctx.config.instance.id
        if claiming is not None:
            return Held(claiming.id, me, claiming.kind, claiming.target, claiming.epoch_to, claiming.created_at,
                        claiming=True)
        rt = ctx.services.get(service)
        op = rt.operation if rt is not None else None
        if op is not None and op.state in (OpState.RUNNING, OpState.HALTED):
            return Held(op.id, me, op.kind, op.target, op.epoch_to, op.created_at, claiming=False)
        granted = self.granted.get(service)
        if granted is not None:
            return Held(granted.operation, granted.sender, granted.kind, granted.target, granted.epoch_to,
                        granted.created_at, claiming=False, foreign=True, expires_at=granted.expires_at)
        return None

    async def receive(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Verify a peer engine's claim or release and answer it; :class:`Rejected` when it is not believable."""
        ctx = self.ctx
        if len(body) > MAX_CLAIM:
            raise Rejected(f"a claim is at most {MAX_CLAIM} bytes")
        now = ctx.clock.now()
        sender, stamp = authenticate(self.peering.keys, headers, body, now, ctx.config.peering.replay_window)
        if json_depth(body, 4) > 4:
            raise Rejected("malformed claim: nested too deep")
        try:
            message = ClaimMessage.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            raise Rejected(f"malformed claim: {str(exc).splitlines()[0][:200]}") from None
        if message.sender != sender or abs(message.at - stamp) > 1e-3:
            raise Rejected(f"claim of {message.sender!r} signed as {sender!r} or at another time")
        role = next((p.role for p in ctx.config.peers if p.id == sender), None)
        if role != "engine":
            raise Rejected(f"{sender} is not an engine: only engines run operations")
        if message.service not in ctx.services:
            raise Rejected(f"unknown service {message.service!r}")
        if message.action == "release":
            granted = self.granted.get(message.service)
            if granted is not None and granted.operation == message.operation:
                del self.granted[message.service]
                await ctx.record("runbook", f"engine {sender} released its claim on {message.service} "
                                 f"({message.operation})", service=message.service,
                                 data={"operation": message.operation})
            return {"granted": True, "reason": "released"}
        held = self._held(message.service)
        got = answer(message, held, now)
        if got.granted and got.yield_local and held is not None:
            self.yielded[held.operation] = message.summary()
        if got.granted and (held is None or held.operation != message.operation):
            self.granted[message.service] = message
            await ctx.record("runbook", f"granted engine {sender}'s claim on {message.service}: {message.kind} to "
                             f"{message.target}, epoch {message.epoch_to} ({message.operation}); {got.reason}",
                             service=message.service, data={"operation": message.operation, "engine": sender})
        return {"granted": got.granted, "winner": got.winner, "reason": got.reason}

"""Ports: what the HTTP face and the runtime say to each other, and nothing more.

The daemon (the only composition root) builds the runtime's components and hands the HTTP app an
:class:`EnginePorts` bundle: a read-only :class:`StatusView`, a :class:`JournalReader` for listings,
a :class:`PeerInbox` for signed verdicts, and the :class:`OperatorPort` / :class:`DrillPort` through
which operators request moves. HTTP never sees the daemon or a runtime object; the runtime never
builds an HTTP response. A refusal travels as :class:`Refused` (carrying a core
:class:`~engine.core.gates.Refusal`, whose ``kind`` HTTP maps to a status code); a success as a
:class:`Reply`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from engine.config.model import EngineConfig
from engine.core.clock import Clock
from engine.core.gates import Refusal, RefusalKind
from engine.core.verdict import Verdict


class Refused(Exception):
    """A request the engine refuses: the refusal, and extra fields for the answer (e.g. every reason, gates)."""

    def __init__(self, code: str, detail: str, kind: RefusalKind = "conflict", **extra: Any) -> None:
        super().__init__(detail)
        self.refusal = Refusal(code, detail, kind)
        self.extra = extra

    @classmethod
    def of(cls, refusal: Refusal, **extra: Any) -> Refused:
        return cls(refusal.code, refusal.detail, refusal.kind, **extra)


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: ``ok`` (done), ``accepted`` (started: a runbook, a drill, a schedule) or ``failed``
    (the engine tried and it did not work, e.g. an unfence the database refused)."""

    body: Mapping[str, Any] = field(default_factory=dict)
    status: Literal["ok", "accepted", "failed"] = "ok"


class StatusView(Protocol):
    """Read-only views of the running engine."""

    def healthy(self) -> tuple[bool, str]: ...

    def ready(self) -> tuple[bool, list[str]]: ...

    def status(self, *, all_signals: bool = True) -> dict[str, Any]: ...

    def status_json(self, max_age: float = 0.2, *, all_signals: bool = False) -> bytes: ...

    def service_names(self) -> Collection[str]: ...

    def metrics_text(self) -> bytes: ...

    def api_counter(self, method: str, route: str, status: str) -> Any:
        """The request counter child for one (method, route, status): ``.inc()`` per request."""
        ...


class ClusterPort(Protocol):
    """Every voter's view side by side (peer mode), and where they disagree."""

    def cluster(self) -> dict[str, Any]: ...


class JournalReader(Protocol):
    """Listings out of the journal (events, operations, drills)."""

    def events(self, *, service: str | None = None, kind: str | None = None, since: float | None = None,
               until: float | None = None, before_id: int | None = None, limit: int = 100) -> Sequence[Any]: ...

    def operations(self, *, service: str | None = None, state: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]: ...

    def operation(self, op_id: str) -> dict[str, Any] | None: ...

    def drills(self, *, service: str | None = None, kind: str | None = None, state: str | None = None,
               limit: int = 50) -> list[dict[str, Any]]: ...

    def drill(self, drill_id: str) -> dict[str, Any] | None: ...


class PeerInbox(Protocol):
    """Signed verdicts from the peers: verified, or refused by raising ``engine.core.peer_auth.Rejected``."""

    def receive(self, headers: Mapping[str, str], body: bytes, peer_cn: str | None = None) -> Verdict: ...


class ClaimInbox(Protocol):
    """Peer engines' claims on a service (:mod:`engine.core.claims`): answered, or ``Rejected`` when not believable."""

    async def receive(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]: ...


class OperatorPort(Protocol):
    """Every operator action; each raises :class:`Refused` or returns a :class:`Reply`."""

    async def pause(self, service: str, *, actor: str, reason: str, until: float | None,
                    ttl: float | None, replace: bool = False) -> Reply: ...

    async def resume(self, service: str, *, actor: str, reason: str) -> Reply: ...

    async def arm(self, service: str, *, actor: str, reason: str) -> Reply: ...

    async def unfence(self, service: str, *, actor: str, reason: str, force: bool) -> Reply: ...

    async def acknowledge_drift(self, service: str, *, actor: str, reason: str) -> Reply:
        """Accept the DNS drift seen now (moves may start again until the records drift differently)."""
        ...

    async def failover(self, service: str, *, actor: str, reason: str, target: str | None, dry_run: bool,
                       force: bool, fence_first: bool) -> Reply: ...

    async def failback(self, service: str, *, actor: str, reason: str, dry_run: bool,
                       acknowledge_reconciliation: bool) -> Reply: ...

    async def switchover(self, service: str, *, actor: str, reason: str, target: str | None, dry_run: bool,
                         scheduled_at: float | None, cancel: bool) -> Reply: ...

    async def prepare_failback(self, service: str, *, actor: str, reason: str,
                               acknowledge_reconciliation: bool) -> Reply: ...

    async def retry(self, operation_id: str, *, actor: str, reason: str) -> Reply: ...

    async def abort(self, operation_id: str, *, actor: str, reason: str) -> Reply: ...

    def find_halted(self, operation_id: str) -> None:
        """Raises :class:`Refused` unless ``operation_id`` is an operation halted on this instance."""
        ...


class DrillPort(Protocol):
    def refusals(self, service: str, kind: str) -> list[Refusal]: ...

    async def start(self, service: str, kind: str, *, actor: str, reason: str) -> Reply: ...


@dataclass(frozen=True)
class EnginePorts:
    """Everything the HTTP app may use, handed over by the daemon."""

    config: EngineConfig
    clock: Clock
    view: StatusView
    journal: JournalReader
    peers: PeerInbox
    operator: OperatorPort
    drills: DrillPort
    cluster: ClusterPort
    claims: ClaimInbox

"""One move per service across engines: the claim two engines exchange before a runbook starts (pure).

The journal's claim (``Journal.claim_operation``) makes one operation per service *per engine*. Two
engines asked at the same moment (two operators, one on each engine's API) would each claim their own
service and run a runbook for the same epoch; the DNS compare-and-set would keep DNS single, but the
loser would already have fenced and promoted. So, before its runbook starts, an engine sends its claim
to every peer engine it hears (``POST /v1/peer/claim``, signed with the link's key) and starts only
when none refuses; a refused claim stands down before any step ran, and the API answers 409 naming
the operation that won.

Theory of operation. A receiving engine answers with :func:`answer`:

- it holds no open operation and no live foreign claim for the service: **grant**, and remember the
  claim (its own starters then refuse, naming it) until the claimer releases it or ``expires_at``;
- it holds a foreign claim from another engine that is still live: **refuse**, naming it;
- its own operation is open and *committed* (its claims were granted, or it was resumed or is
  halted): **refuse**, naming it;
- its own operation is still *claiming* (asking its peers, like the caller): both engines compare the
  two claims with the same total order (:func:`precedes`: earlier ``created_at``, then the smaller engine
  id, then the operation id), so exactly one wins. If the caller's claim wins, **grant** and ``yield``:
  the local operation stands down when its own round ends; else **refuse**.

Both sides decide from the same two claims, so two simultaneous requests end with one runbook. A peer
engine that does not answer within the deadline is not waited for (a dead site must not block the
failover away from it): the DNS epoch compare-and-set stays the guard for that case.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"


class ClaimMessage(BaseModel):
    """The body of ``POST /v1/peer/claim``: a claim, or its release."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    action: Literal["claim", "release"]
    sender: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    service: str = Field(pattern=f"^{_ID}$")
    operation: str = Field(pattern=f"^{_ID}$")
    kind: str = Field(pattern=r"^[a-z_]{1,32}$")
    target: str = Field(pattern=f"^{_ID}$")
    epoch_to: int = Field(ge=1, le=2**53)
    created_at: float = Field(ge=0, le=1e11)
    expires_at: float = Field(ge=0, le=1e11)
    at: float = Field(ge=0, le=1e11)

    def summary(self) -> dict[str, Any]:
        return {"id": self.operation, "engine": self.sender, "kind": self.kind, "target": self.target,
                "epoch_to": self.epoch_to}


@dataclass(frozen=True, slots=True)
class Held:
    """What this engine holds for a service when a peer's claim arrives."""

    operation: str
    engine: str
    kind: str
    target: str
    epoch_to: int
    created_at: float
    claiming: bool  # still asking its peers: may yield to an earlier claim
    foreign: bool = False  # a claim this engine granted to a peer (not its own operation)
    expires_at: float = math.inf

    def summary(self) -> dict[str, Any]:
        return {"id": self.operation, "engine": self.engine, "kind": self.kind, "target": self.target,
                "epoch_to": self.epoch_to}


@dataclass(frozen=True, slots=True)
class Answer:
    granted: bool
    yield_local: bool = False  # grant, and the local claiming operation must stand down
    winner: dict[str, Any] | None = None
    reason: str = ""


def precedes(a: tuple[float, str, str], b: tuple[float, str, str]) -> bool:
    """The total order both engines apply: (created_at, engine id, operation id), smallest first."""
    return a < b


def answer(claim: ClaimMessage, held: Held | None, now: float) -> Answer:
    """The answer of an engine holding ``held`` (None: nothing) to ``claim`` (see the module docstring)."""
    if held is None or (held.foreign and held.expires_at <= now) or held.operation == claim.operation:
        return Answer(True, reason="nothing held" if held is None or held.operation != claim.operation
                      else "the same operation again")
    what = (f"operation {held.operation} ({held.kind} to {held.target}, epoch {held.epoch_to}) of engine "
            f"{held.engine}")
    if held.foreign:
        return Answer(False, winner=held.summary(), reason=f"this engine granted {what} first")
    if not held.claiming:
        return Answer(False, winner=held.summary(), reason=f"{what} is under way")
    theirs = (claim.created_at, claim.sender, claim.operation)
    ours = (held.created_at, held.engine, held.operation)
    if precedes(theirs, ours):
        return Answer(True, yield_local=True, reason=f"the claim precedes {what}, which stands down")
    return Answer(False, winner=held.summary(), reason=f"{what} was asked first")


def refusal_sentence(service: str, engine: str, winner: dict[str, Any] | None, reason: str) -> str:
    """The 409 detail a starter sees when a peer engine refused its claim."""
    if winner is None:
        return f"{service}: engine {engine} refused the claim: {reason}"
    return (f"{service} is claimed by operation {winner.get('id')} on engine {winner.get('engine')} "
            f"({winner.get('kind')} to {winner.get('target')}, epoch {winner.get('epoch_to')}): one operation per "
            f"service across the engines ({engine}: {reason})")


SAFE_TEXT = re.compile(r"[^\x20-\x7e]")


def clean(text: str, limit: int = 300) -> str:
    """A peer's free text, made safe to journal and show (printable ASCII, bounded)."""
    return SAFE_TEXT.sub("?", text)[:limit]

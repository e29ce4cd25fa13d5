"""The write lease is about a writable database, not a live engine (pure rules, time passed in).

Two rules, one per side of a failover:

- **The old site's engine** (:class:`PrimaryWritability`): it knows whether its *local* primary takes
  writes from its own heartbeat, an ``INSERT`` on that primary every ``heartbeat.interval``. A
  successful beat says writable; :data:`DOWN_AFTER` failed beats in a row (server down, hung past the
  beat's deadline, or read-only) say not writable; no beat result for ``stale_after`` says unknown.
  It reports that in its verdict (:attr:`engine.core.verdict.ServiceVerdict.primary_writable`): a
  ``False`` there gives the write lease up at once, because a database that cannot take writes has
  nothing to fence.
- **The executor** (:func:`lease_release`): before promoting a standby whose old primary it could
  not fence itself, it waits until every engine of the old site has either been certified silent by
  enough voters (:func:`engine.core.lease_echo.certify_silent`: it fenced itself when cut off) or
  reports, in a fresh verdict at the operation's starting epoch with the old site still active, that
  its primary is not writable: whichever comes first.

What is assumed: an engine that cannot write its heartbeat on its local primary is believed. When
that engine's link to its database broke but clients still reach the database, the executor could
not fence it either (that is why the lease is consulted at all); the stray-primary watch
(:mod:`engine.core.stray`) fences it as soon as any engine reaches it writable after the move.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.core.lease_echo import Certification
from engine.core.verdict import ServiceVerdict

DOWN_AFTER = 2
"""Failed heartbeats in a row after which the local primary is reported not writable (one may be a blip)."""


@dataclass(slots=True)
class PrimaryWritability:
    """What this engine's heartbeats say of its local primary. ``stale_after``: how long one beat result
    stays news (a beat is bounded by ``connect_timeout + interval``, so two of those plus an interval)."""

    stale_after: float
    failures: int = 0
    last_at: float | None = None
    last_error: str | None = None

    def beat(self, ok: bool, at: float, error: str | None = None) -> None:
        self.failures = 0 if ok else self.failures + 1
        self.last_at = at
        self.last_error = None if ok else error

    def writable(self, now: float) -> bool | None:
        """True: the last beat wrote. False: the last :data:`DOWN_AFTER` beats failed. None: not known."""
        if self.last_at is None or now - self.last_at > self.stale_after:
            return None
        if self.failures == 0:
            return True
        return False if self.failures >= DOWN_AFTER else None

    def describe(self, now: float) -> str:
        state = self.writable(now)
        if state is None:
            return ("no heartbeat result yet" if self.last_at is None else
                    f"unknown (last heartbeat result {now - self.last_at:.1f}s ago"
                    + (f", {self.failures} failed in a row: {self.last_error})" if self.failures else ")"))
        if state:
            return "writable (the last heartbeat wrote)"
        return f"not writable ({self.failures} heartbeats failed in a row: {self.last_error})"


@dataclass(frozen=True, slots=True)
class OldSiteEngine:
    """One engine of the old site as the executor knows it: how long it has been silent here (counted from
    this engine's start when never heard), its latest verdict about the service while fresh, and whether
    enough voters certify it silent for the lease."""

    id: str
    silent_s: float
    heard: bool
    view: ServiceVerdict | None
    certification: Certification


@dataclass(frozen=True, slots=True)
class LeaseRelease:
    """Whether the standby may be promoted without the old primary fenced from here, and why."""

    free: bool
    remaining_s: float  # at least how long an engine must still stay silent (0 once free)
    released_by: tuple[str, ...]  # engines whose fresh verdict reports their primary not writable
    notes: tuple[str, ...]  # one per engine of the old site

    @property
    def sentence(self) -> str:
        return "; ".join(self.notes) or "no engine there"


def gives_up(view: ServiceVerdict | None, source: str, epoch: int) -> bool:
    """A fresh verdict at ``epoch`` with ``source`` still active reports its primary not writable."""
    return view is not None and view.active == source and view.epoch == epoch and view.primary_writable is False


def lease_release(engines: Sequence[OldSiteEngine], source: str, epoch: int) -> LeaseRelease:
    """May the executor promote now? Yes once every engine of ``source`` has given the lease up
    (:func:`gives_up`) or been certified silent; else how long the others must at least stay so."""
    remaining = 0.0
    released: list[str] = []
    notes: list[str] = []
    for engine in engines:
        if gives_up(engine.view, source, epoch):
            released.append(engine.id)
            notes.append(f"{engine.id} reports its primary not writable (lease given up)")
            continue
        cert = engine.certification
        if not cert.certified:
            remaining = max(remaining, cert.remaining_s)
        heard = f"last heard here {engine.silent_s:.1f}s ago" if engine.heard else \
            f"never heard since this engine started {engine.silent_s:.1f}s ago"
        notes.append(f"{engine.id} {heard}" + (f" (certified silent by {', '.join(cert.by)})" if cert.certified
                                               else " (not yet certified silent)"))
    free = all(gives_up(e.view, source, epoch) or e.certification.certified for e in engines)
    return LeaseRelease(free, 0.0 if free else max(remaining, 1e-3), tuple(released), tuple(notes))

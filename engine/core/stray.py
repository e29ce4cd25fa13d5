"""A stray primary: a database that takes writes while its site is not the active site (pure rule).

After a failover the old primary may come back writable (a restarted server that was never fenced,
a fence undone by hand); clients that still reach it would write to a database nobody replicates.
Every engine that can reach a site's database looks at it every ``stray_watch.interval``
(:mod:`engine.runtime.stray_primary`), and :func:`stray_decision` says whether to fence it.

Who is the rightful primary: the active site of the highest epoch known, from this engine's own
state, its peers' fresh verdicts and (when the service has ``dns:``) the epoch record read just
before fencing. The rule fences only when every source agrees; the first that applies, in order:

1. the database is not seen writable (read-only, in recovery, unreachable): nothing to do;
2. its site is the active site of the current epoch and nobody knows a higher one: the rightful
   primary, never fenced;
3. an operation runs for the service (here, or announced by a fresh peer) or a full drill is
   announced: the runbook owns the databases (a promoted standby is expected then: not a stray);
4. the database subscribes (an enabled subscription): a logical standby, not a primary (a writable
   standby is a weaker fence, not a split brain);
5. a peer or DNS knows a higher epoch than this engine: wait until this engine has adopted it;
6. DNS is configured but could not be read: who is active cannot be confirmed, do not fence;
7. a peer or DNS names another active site at the same epoch: do not fence, say so;
8. otherwise fence it. A failed fence is tried again after :func:`retry_after`.

Pause wraps it: the same evaluation, prefixed ``PAUSED:``, never fencing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DbSeen:
    """One look at a site's database from this engine (None: could not tell)."""

    site: str
    writable: bool | None  # a new session may write (not read-only, not in recovery)
    subscribed: bool | None  # it has an enabled subscription (a logical standby)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EpochClaim:
    """Somebody's belief about the service: epoch and active site (own state, a peer, DNS)."""

    source: str
    epoch: int
    active: str


@dataclass(frozen=True, slots=True)
class StrayDecision:
    fence: bool
    stray: bool  # a writable database outside the active site (fenced or not, e.g. while a runbook runs)
    rightful: str | None  # the active site of the current epoch, when agreed
    reason: str


def stray_decision(seen: DbSeen, own: EpochClaim, peers: Sequence[EpochClaim], busy: Sequence[str],
                   dns: EpochClaim | None, dns_configured: bool, *, paused: bool = False) -> StrayDecision:
    """Fence ``seen.site``'s database now? ``busy``: operations or drills under way (own or announced);
    ``dns``: the epoch record as read now (None when not read or unreadable). Paused: the same evaluation,
    prefixed ``PAUSED:``, never fencing (the alert still goes out)."""
    decision = _decide(seen, own, peers, busy, dns, dns_configured)
    if paused and decision.fence:
        return StrayDecision(False, True, decision.rightful, f"PAUSED: {decision.reason}; not fencing while paused")
    return decision


def _decide(seen: DbSeen, own: EpochClaim, peers: Sequence[EpochClaim], busy: Sequence[str],
            dns: EpochClaim | None, dns_configured: bool) -> StrayDecision:
    site = seen.site
    if seen.writable is not True:
        why = "read-only" if seen.writable is False else f"not known ({seen.detail or 'unreachable'})"
        return StrayDecision(False, False, None, f"the database in {site} is {why}")
    if site == own.active and all(p.epoch <= own.epoch for p in peers):
        return StrayDecision(False, False, site, f"{site} is the active site at epoch {own.epoch}")
    if busy:
        return StrayDecision(False, False, None,
                             f"the database in {site} takes writes but {'; '.join(busy)}: the runbook owns the "
                             "databases")
    if seen.subscribed:
        return StrayDecision(False, False, None, f"the database in {site} is a standby (its subscription is enabled)")
    claims = [own, *peers] + ([dns] if dns is not None else [])
    top = max(claims, key=lambda c: c.epoch)
    if top.epoch > own.epoch:
        return StrayDecision(False, top.active != site, None,
                             f"{top.source} reports epoch {top.epoch} (active {top.active}) and this engine knows "
                             f"{own.epoch}: not fencing {site} before adopting it")
    if dns_configured and dns is None:
        return StrayDecision(False, site != own.active, None,
                             f"the database in {site} takes writes but DNS could not be read to confirm who is "
                             "active: not fencing")
    disagree = [c for c in claims if c.epoch == own.epoch and c.active != own.active]
    if disagree:
        return StrayDecision(False, True, None, f"{disagree[0].source} says {disagree[0].active} is active at epoch "
                             f"{own.epoch}, this engine says {own.active}: not fencing")
    if site == own.active:
        return StrayDecision(False, False, site, f"{site} is the active site at epoch {own.epoch}")
    return StrayDecision(True, True, own.active,
                         f"the database in {site} takes writes but {own.active} is the active site at epoch "
                         f"{own.epoch}" + (f" (DNS agrees: {dns.active} at epoch {dns.epoch})" if dns else ""))


def retry_after(failures: int, interval: float, max_backoff: float) -> float:
    """Seconds before the next attempt to fence after ``failures`` failed ones in a row: the watch interval,
    doubling per failure, capped at ``max_backoff`` (0 failures: the next look)."""
    if failures <= 0:
        return interval
    return float(min(max_backoff, interval * 2.0 ** min(failures, 30)))

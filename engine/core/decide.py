"""Pure decisions: ``decide(state, snapshot, now, policy) -> Decision``.

No I/O and no clock: everything comes in as arguments, so hours of simulated probing can be
decided in milliseconds and every outcome is asserted verbatim in tests. Each decision carries one
human sentence; checks that can refuse return their reason (a string), never a bare bool.

This is the single-instance decision; quorum over peer verdicts builds on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from engine.config.base import format_duration
from engine.config.model import PolicyConfig
from engine.core.health import Health


class DecisionKind(StrEnum):
    HOLD = "hold"          # nothing to do, or something to wait for
    FAILOVER = "failover"  # the active site is down and a standby is ready: move
    PAGE = "page"          # a human is needed: no safe automatic move exists


@dataclass(frozen=True, slots=True)
class SignalView:
    """One signal's health as the snapshot saw it."""

    name: str
    health: Health
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SiteView:
    """A site's signals; its health is derived from them.

    ``signals`` may list only the signals that are not UP, with ``up`` counting the others: at
    10,000 signals a snapshot per second must not rebuild a view of every healthy one.
    """

    site: str
    signals: tuple[SignalView, ...] = ()
    up: int = 0

    @property
    def health(self) -> Health:
        return site_health(self.signals, self.up)

    def why(self) -> str:
        """The signals that explain the site's health, for sentences."""
        state = self.health
        if state is Health.UP:
            return "all signals up"
        picked = [s for s in self.signals if s.health is state] or list(self.signals)
        return "; ".join(f"{s.name}: {s.detail}" if s.detail else s.name for s in picked) or "no signals"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one cycle observed for one service, frozen."""

    service: str
    at: float
    sites: Mapping[str, SiteView]


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What the engine remembers about a service between cycles (kept in the journal)."""

    active: str
    epoch: int = 0
    paused: bool = False
    last_move_at: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: DecisionKind
    message: str
    target: str | None = None
    reasons: tuple[str, ...] = field(default=())


def site_health(signals: Sequence[SignalView], up: int = 0) -> Health:
    """DOWN if any signal is DOWN; UP if every signal is UP; otherwise UNKNOWN.

    ``up`` counts further UP signals not listed. A site with no signals is UNKNOWN: the engine
    cannot vouch for what it does not probe.
    """
    if not signals:
        return Health.UP if up else Health.UNKNOWN
    if any(s.health is Health.DOWN for s in signals):
        return Health.DOWN
    if all(s.health is Health.UP for s in signals):
        return Health.UP
    return Health.UNKNOWN


def cooldown_reason(state: ServiceState, now: float, policy: PolicyConfig) -> str | None:
    """Why the cool-down forbids a move now, or None."""
    if state.last_move_at is None:
        return None
    remaining = state.last_move_at + policy.cooldown - now
    if remaining > 0:
        return f"in cool-down for {format_duration(round(remaining))} after the last move"
    return None


def target_reason(snapshot: Snapshot, active: str) -> tuple[str | None, str | None]:
    """Pick the standby to move to: (site, None) or (None, why none is ready)."""
    standbys = [v for name, v in snapshot.sites.items() if name != active]
    ready = [v for v in standbys if v.health is Health.UP]
    if ready:
        return ready[0].site, None
    why = ", ".join(f"{v.site} is {v.health} ({v.why()})" for v in standbys) or "no standby site"
    return None, f"no healthy standby: {why}"


def decide(state: ServiceState, snapshot: Snapshot, now: float, policy: PolicyConfig) -> Decision:
    """Decide what this instance thinks should happen to one service."""
    decision = _decide(state, snapshot, now, policy)
    if state.paused:
        return Decision(DecisionKind.HOLD, f"PAUSED: {decision.message}", None, decision.reasons)
    return decision


def _decide(state: ServiceState, snapshot: Snapshot, now: float, policy: PolicyConfig) -> Decision:
    service, active = snapshot.service, state.active
    view = snapshot.sites.get(active)
    if view is None:
        return Decision(DecisionKind.PAGE, f"{service}: active site {active} is not configured")
    health = view.health
    if health is Health.UP:
        standbys = ", ".join(f"{v.site} {v.health}" for n, v in snapshot.sites.items() if n != active)
        return Decision(DecisionKind.HOLD, f"holding: {active} is up; standby {standbys}")
    if health is Health.UNKNOWN:
        return Decision(DecisionKind.HOLD, f"holding: {active} health not yet known ({view.why()})")
    down = f"{active} is down ({view.why()})"
    target, no_target = target_reason(snapshot, active)
    if target is None:
        return Decision(DecisionKind.PAGE, f"paging: {down}, but {no_target}", None, (no_target or "",))
    refusals = [r for r in (cooldown_reason(state, now, policy),) if r]
    if not policy.auto_failover:
        refusals.append("automatic failover is disabled for this service")
    if refusals:
        return Decision(DecisionKind.PAGE, f"paging: {down}; not moving to {target}: {'; '.join(refusals)}",
                        None, tuple(refusals))
    return Decision(DecisionKind.FAILOVER, f"failover {service} {active} -> {target}: {down}; {target} is up",
                    target)

"""Synchronous replication's degrade/restore state machine: pure, on an injected clock, as a table.

Rules. ``off``: the primary names no synchronous standby. ``on``: it names the standby's subscription
(its walsender's ``application_name``), so a COMMIT returns only once the standby flushed it; when
the standby is missing, not synchronous, or a commit has waited past ``commit_wait_limit``, for
``degrade_after`` in a row, the engine clears the name (asynchronous: writes flow again, the loss
verdict stops being zero) and names it again once the standby streams and is within ``restore_lag``
bytes. ``strict``: the name is never cleared; writes wait for the standby as long as it takes.

Theory of operation. Each tick the runtime reads one :class:`SyncObservation` from the primary;
:func:`classify` turns it (with the state, the mode and ``now``) into one :data:`Condition`;
the transition table of the mode maps ``(state kind, condition)`` to the next kind and the
:data:`Action` to take (``name``, ``clear`` or nothing). A pair missing from a table is an illegal
transition and raises :class:`IllegalTransition`, never a silent no-op. :func:`step` returns the
:class:`Transition` with one human sentence; ``confirmed_at`` and ``since`` are kept on the state
for the loss verdict (:class:`engine.core.loss.SyncEvidence`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from engine.core.loss import SyncEvidence, SyncMode, clock_text

StateKind = Literal["off", "engaging", "sync", "at_risk", "waiting", "degraded"]
Condition = Literal["unobserved", "confirmed", "trouble", "trouble_expired", "caught_up", "behind"]
Action = Literal["name", "clear", "none"]

# (state kind, condition) -> (next state kind, action); "since" restarts when the kind changes
TABLES: dict[SyncMode, dict[tuple[StateKind, Condition], tuple[StateKind, Action]]] = {
    "off": {
        ("off", "unobserved"): ("off", "none"),
        ("off", "confirmed"): ("off", "clear"),
        ("off", "trouble"): ("off", "clear"),
        ("off", "caught_up"): ("off", "none"),
        ("off", "behind"): ("off", "none"),
    },
    "on": {
        ("engaging", "unobserved"): ("engaging", "none"),
        ("engaging", "confirmed"): ("sync", "none"),
        ("engaging", "trouble"): ("at_risk", "none"),
        ("engaging", "caught_up"): ("engaging", "name"),
        ("engaging", "behind"): ("degraded", "none"),
        ("sync", "unobserved"): ("sync", "none"),
        ("sync", "confirmed"): ("sync", "none"),
        ("sync", "trouble"): ("at_risk", "none"),
        ("sync", "caught_up"): ("engaging", "name"),
        ("sync", "behind"): ("degraded", "none"),
        ("at_risk", "unobserved"): ("at_risk", "none"),
        ("at_risk", "confirmed"): ("sync", "none"),
        ("at_risk", "trouble"): ("at_risk", "none"),
        ("at_risk", "trouble_expired"): ("degraded", "clear"),
        ("at_risk", "caught_up"): ("engaging", "name"),
        ("at_risk", "behind"): ("degraded", "none"),
        ("degraded", "unobserved"): ("degraded", "none"),
        ("degraded", "confirmed"): ("sync", "none"),
        ("degraded", "trouble"): ("degraded", "clear"),
        ("degraded", "caught_up"): ("engaging", "name"),
        ("degraded", "behind"): ("degraded", "none"),
    },
    "strict": {
        ("engaging", "unobserved"): ("engaging", "none"),
        ("engaging", "confirmed"): ("sync", "none"),
        ("engaging", "trouble"): ("waiting", "none"),
        ("engaging", "caught_up"): ("engaging", "name"),
        ("engaging", "behind"): ("engaging", "name"),
        ("sync", "unobserved"): ("sync", "none"),
        ("sync", "confirmed"): ("sync", "none"),
        ("sync", "trouble"): ("waiting", "none"),
        ("sync", "caught_up"): ("engaging", "name"),
        ("sync", "behind"): ("engaging", "name"),
        ("waiting", "unobserved"): ("waiting", "none"),
        ("waiting", "confirmed"): ("sync", "none"),
        ("waiting", "trouble"): ("waiting", "none"),
        ("waiting", "caught_up"): ("engaging", "name"),
        ("waiting", "behind"): ("engaging", "name"),
    },
}


class IllegalTransition(LookupError):
    """A (state, condition) pair the mode's table does not define."""


@dataclass(frozen=True, slots=True)
class SyncObservation:
    """One reading of the primary (None fields: not known)."""

    reachable: bool
    named: bool = False             # synchronous_standby_names (in effect) names the standby
    streaming: bool = False         # the standby's walsender is connected and streaming
    sync_state: str | None = None   # pg_stat_replication.sync_state of that walsender
    oldest_wait_s: float | None = None  # the oldest commit waiting for the standby, seconds
    lag_bytes: int | None = None    # primary's current WAL position minus the standby's flushed one
    reason: str = ""                # why unreachable, or a note


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """The knobs of the machine (from ``database.synchronous`` and ``database.synchronous_degrade``)."""

    mode: SyncMode
    degrade_after: float = 10.0
    commit_wait_limit: float = 1.0
    restore_lag: int = 1_048_576
    check_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class SyncState:
    """Where the machine is: its kind, since when, and the last time synchronous commit was confirmed."""

    kind: StateKind
    since: float
    confirmed_at: float | None = None

    def evidence(self, settings: SyncSettings) -> SyncEvidence:
        """What the loss verdict may rely on from this engine's own watch."""
        return SyncEvidence(settings.mode, self.confirmed_at,
                            self.since if self.kind == "degraded" else None,
                            settings.degrade_after, settings.check_interval)


@dataclass(frozen=True, slots=True)
class Transition:
    state: SyncState
    action: Action
    condition: Condition
    sentence: str
    changed: bool


def initial(mode: SyncMode, now: float) -> SyncState:
    return SyncState("off" if mode == "off" else "engaging", now)


def classify(state: SyncState, obs: SyncObservation, settings: SyncSettings, now: float) -> Condition:
    """One condition from one observation."""
    if not obs.reachable:
        return "unobserved"
    if obs.named:
        waited = obs.oldest_wait_s or 0.0
        if obs.streaming and obs.sync_state == "sync" and waited <= settings.commit_wait_limit:
            return "confirmed"
        if settings.mode == "on" and state.kind == "at_risk" and now - state.since >= settings.degrade_after:
            return "trouble_expired"
        return "trouble"
    if obs.streaming and obs.lag_bytes is not None and obs.lag_bytes <= settings.restore_lag:
        return "caught_up"
    return "behind"


def _trouble(obs: SyncObservation, settings: SyncSettings) -> str:
    if not obs.streaming:
        return "the standby is not streaming"
    if obs.sync_state != "sync":
        return f"the standby is {obs.sync_state or 'not listed'}, not sync"
    return f"a commit has waited {obs.oldest_wait_s or 0.0:.1f}s for the standby"


def _sentence(mode: SyncMode, before: SyncState, kind: StateKind, cond: Condition, action: Action,
              obs: SyncObservation, settings: SyncSettings, now: float) -> str:
    if cond == "unobserved":
        return f"synchronous {mode}: primary not observed ({obs.reason or 'unreachable'}); state {kind} kept"
    if mode == "off":
        return ("synchronous off: clearing synchronous_standby_names" if action == "clear"
                else "synchronous off: asynchronous replication")
    lag = "" if obs.lag_bytes is None else f" ({obs.lag_bytes} B behind)"
    if action == "clear":
        return (f"synchronous on: degraded to asynchronous ({_trouble(obs, settings)} for "
                f"{now - before.since:.1f}s >= {settings.degrade_after:g}s); data loss no longer zero by proof"
                if before.kind == "at_risk" else "synchronous on: degraded; clearing the standby's name again")
    if action == "name":
        what = "restoring" if before.kind in ("degraded", "at_risk", "sync") else "naming the standby for"
        return f"synchronous {mode}: {what} synchronous commit (the standby streams{lag})"
    if kind == "sync":
        return f"synchronous {mode}: confirmed (the standby acknowledges every commit)"
    if kind == "at_risk":
        return (f"synchronous on: at risk since {clock_text(before.since if before.kind == 'at_risk' else now)}"
                f" ({_trouble(obs, settings)}); degrading after {settings.degrade_after:g}s")
    if kind == "waiting":
        return f"synchronous strict: commits wait for the standby ({_trouble(obs, settings)}); never degraded"
    if kind == "degraded":
        return f"synchronous on: degraded to asynchronous, waiting for the standby to catch up{lag}"
    return f"synchronous {mode}: waiting for the standby to be confirmed synchronous"


def step(state: SyncState, obs: SyncObservation, settings: SyncSettings, now: float) -> Transition:
    """One tick: the next state, the action for the runtime, and the sentence to journal when it changed."""
    cond = classify(state, obs, settings, now)
    try:
        kind, action = TABLES[settings.mode][(state.kind, cond)]
    except KeyError:
        raise IllegalTransition(f"synchronous {settings.mode}: no transition from {state.kind} on {cond}") from None
    since = state.since if kind == state.kind else now
    confirmed = now if cond == "confirmed" else state.confirmed_at
    new = replace(state, kind=kind, since=since, confirmed_at=confirmed)
    sentence = _sentence(settings.mode, state, kind, cond, action, obs, settings, now)
    return Transition(new, action, cond, sentence, kind != state.kind or action != "none")
